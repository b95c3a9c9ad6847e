#!/usr/bin/env python3
"""Clients of voipwall's control socket, for the socket's bounds (issue 19).

  control_flood.py flood SOCKET CLIENTS BYTES SECONDS
      As an unprivileged user (uid/gid 65534): CLIENTS threads, each
      connecting, sending BYTES without a newline until the daemon closes,
      then reconnecting, for SECONDS. Prints a JSON summary: how each
      connection ended (the daemon's refusal, or held until the end).
  control_flood.py hold SOCKET CLIENTS BYTES SECONDS
      The same, but each client connects once, sends BYTES without a newline
      and holds the connection for SECONDS (what the daemon keeps held).
  control_flood.py big SOCKET BYTES
      As the caller (root): one `status` request padded with spaces to BYTES,
      then its newline; prints the reply's `ok` and the seconds it took.
  control_flood.py status SOCKET COUNT GAP_MS
      As the caller: COUNT `status` requests, GAP_MS apart, each on a new
      connection; prints the latencies (ms) and how many failed.

Bounded: every loop ends by count or by time; only the given Unix socket
is used.
"""
import json
import os
import socket
import sys
import threading
import time

CHUNK = 1 << 20


def drop_privileges():
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def first_line(s):
    s.settimeout(2)
    data = b""
    try:
        while not data.endswith(b"\n") and len(data) < 65536:
            d = s.recv(4096)
            if not d:
                break
            data += d
    except OSError:
        pass
    return data.decode(errors="replace").strip()


def one_flood(path, size, until, hold, counts, lock):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as e:
        with lock:
            counts["connect failed"] = counts.get("connect failed", 0) + 1
        time.sleep(0.01)
        return
    s.settimeout(1)
    sent = 0
    outcome = "held to the end"
    chunk = b"x" * CHUNK
    try:
        while sent < size and time.time() < until:
            n = min(CHUNK, size - sent)
            s.sendall(chunk[:n])
            sent += n
        while hold and time.time() < until:
            time.sleep(0.05)
    except socket.timeout:
        outcome = "blocked (daemon not reading)"
        while hold and time.time() < until:
            time.sleep(0.05)
    except OSError:
        outcome = "closed by the daemon"
    reply = first_line(s)
    if "request memory" in reply:
        outcome = "refused: request memory"
    elif "already open" in reply:
        outcome = "refused: connections"
    elif "longer than" in reply:
        outcome = "refused: too long"
    s.close()
    with lock:
        counts[outcome] = counts.get(outcome, 0) + 1


def flood(path, clients, size, seconds, hold):
    drop_privileges()
    until = time.time() + seconds
    counts = {}
    lock = threading.Lock()

    def worker():
        while time.time() < until:
            one_flood(path, size, until, hold, counts, lock)
            if hold:
                return

    ts = [threading.Thread(target=worker) for _ in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(json.dumps(counts, sort_keys=True))


def big(path, size):
    req = b'{"cmd":"status"}'
    started = time.time()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(req)
    pad = b" " * CHUNK
    left = size - len(req) - 1
    while left > 0:
        n = min(CHUNK, left)
        s.sendall(pad[:n])
        left -= n
    s.sendall(b"\n")
    s.settimeout(30)
    reply = first_line(s)
    s.close()
    try:
        ok = json.loads(reply).get("ok")
    except ValueError:
        ok = reply
    print(json.dumps({"ok": ok, "seconds": round(time.time() - started, 3)}))


def status(path, count, gap_ms):
    lat = []
    failed = 0
    for _ in range(count):
        t0 = time.time()
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(path)
            s.sendall(b'{"cmd":"status"}\n')
            reply = first_line(s)
            s.close()
            if json.loads(reply).get("ok") is True:
                lat.append((time.time() - t0) * 1000)
            else:
                failed += 1
        except (OSError, ValueError):
            failed += 1
        time.sleep(gap_ms / 1000)
    lat.sort()
    pick = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else None
    print(json.dumps({"answered": len(lat), "failed": failed, "p50_ms": pick(0.5),
                      "p99_ms": pick(0.99), "max_ms": round(lat[-1], 1) if lat else None}))


def main():
    mode, path = sys.argv[1], sys.argv[2]
    if mode in ("flood", "hold"):
        flood(path, int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), mode == "hold")
    elif mode == "big":
        big(path, int(sys.argv[3]))
    elif mode == "status":
        status(path, int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
