#!/usr/bin/env python3
"""Traffic helper for voipwall's namespace tests. Bounded in count and time.

  probe.py listen tcp/22 udp/5060 ...   serve until stdin closes (max 600 s);
                                        TCP: accept, send "ok"; UDP: echo "ok"
  probe.py probe SRC PROTO/PORT DST ... one probe per triple, in parallel;
                                        prints "SRC PROTO/PORT DST pass|drop|reject"
  probe.py flood SRC DST PORT COUNT     COUNT UDP SIP OPTIONS datagrams from SRC
                                        as fast as possible (at most 10,000,
                                        at most 10 s); prints how many were sent

A probe passes when the listener's "ok" comes back within 0.8 s. It is
"reject" when an ICMP error comes back, and "drop" when nothing does.
"""
import select
import socket
import sys
import threading
import time

TIMEOUT = 0.8
MAX_LIFETIME = 600


def listen(specs):
    socks = []
    for spec in specs:
        proto, port = spec.split("/")
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        s = socket.socket(socket.AF_INET6, kind)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", int(port)))
        if proto == "tcp":
            s.listen(128)
        socks.append((proto, s))
    print("ready", flush=True)
    deadline = time.time() + MAX_LIFETIME
    inputs = [s for _, s in socks] + [sys.stdin]
    while time.time() < deadline:
        ready, _, _ = select.select(inputs, [], [], 1.0)
        for r in ready:
            if r is sys.stdin:
                if not sys.stdin.readline():
                    return
                continue
            proto = next(p for p, s in socks if s is r)
            try:
                if proto == "tcp":
                    conn, _ = r.accept()
                    conn.sendall(b"ok")
                    conn.close()
                else:
                    _, peer = r.recvfrom(2048)
                    r.sendto(b"ok", peer)
            except OSError:
                pass


def probe_one(src, spec, dst):
    proto, port = spec.split("/")
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(fam, kind)
    s.settimeout(TIMEOUT)
    try:
        s.bind((src, 0))
        s.connect((dst, int(port)))
        if proto == "udp":
            s.send(b"probe")
        data = s.recv(16)
        return "pass" if data == b"ok" else "drop"
    except (ConnectionRefusedError, OSError) as e:
        if isinstance(e, socket.timeout) or "timed out" in str(e):
            return "drop"
        if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", 0) in (111, 113, 101):
            return "reject"
        return "drop"
    finally:
        s.close()


def probe(args):
    triples = [args[i:i + 3] for i in range(0, len(args), 3)]
    results = [None] * len(triples)

    def run(i, t):
        results[i] = probe_one(*t)

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(triples)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for t, r in zip(triples, results):
        print(" ".join(t), r)


def flood(src, dst, port, count):
    count = min(int(count), 10000)
    fam = socket.AF_INET6 if ":" in src else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((src, 0))
    msg = (
        "OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s:5060;branch=z9hG4bKflood\r\n"
        "From: <sip:probe@%s>;tag=1\r\nTo: <sip:%s>\r\nCall-ID: flood\r\n"
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n" % (dst, src, src, dst)
    ).encode()
    sent = 0
    deadline = time.time() + 10
    while sent < count and time.time() < deadline:
        try:
            s.sendto(msg, (dst, int(port)))
            sent += 1
        except OSError:
            time.sleep(0.001)
    print(sent)


if __name__ == "__main__":
    if sys.argv[1] == "listen":
        listen(sys.argv[2:])
    elif sys.argv[1] == "flood":
        flood(*sys.argv[2:6])
    else:
        probe(sys.argv[2:])
