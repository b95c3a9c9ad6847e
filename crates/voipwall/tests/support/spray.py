#!/usr/bin/env python3
"""Distributed password guessing (issue 24): many sources, each sending a
few wrong passwords for one account, every one under the per-source
threshold.

  spray.py DST PROTO ORDER ATTEMPTS GAP_MS USER SRC...

PROTO: udp or tcp (a new connection per attempt). ORDER: rr (the sources
take turns: each round, every source once) or seq (one source after
another, ATTEMPTS each). Attempt k of the schedule starts GAP_MS * k after
the start, each source on its own thread, so a source whose packets are
dropped does not delay the others. An attempt is a REGISTER, the 401
challenge, then the REGISTER with a wrong digest answer; it counts as
answered when the PBX answers that with 403 (or 401/407).

Prints JSON: {"answered": {src: n}, "challenged": {src: n}, "attempts": n}.
Bounded: at most 64 sources, 10 attempts each, 0.5 s per answer, 60 s in
all; only to DST.
"""
import hashlib
import json
import re
import socket
import sys
import threading
import time

dst, proto, order = sys.argv[1], sys.argv[2], sys.argv[3]
attempts, gap, user = min(int(sys.argv[4]), 10), int(sys.argv[5]) / 1000.0, sys.argv[6]
srcs = sys.argv[7:][:64]
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
deadline = time.monotonic() + 60
answered = {s: 0 for s in srcs}
challenged = {s: 0 for s in srcs}
lock = threading.Lock()
ANSWER = 0.5


def md5(s):
    return hashlib.md5(s.encode()).hexdigest()


def register(src, port, call, cseq, auth=""):
    host = f"[{src}]" if ":" in src else src
    via = "TCP" if proto == "tcp" else "UDP"
    return (
        f"REGISTER sip:pbx.test SIP/2.0\r\n"
        f"Via: SIP/2.0/{via} {host}:{port};branch=z9hG4bK{call}{cseq}\r\n"
        f"From: <sip:{user}@pbx.test>;tag={call}\r\n"
        f"To: <sip:{user}@pbx.test>\r\n"
        f"Call-ID: {call}\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:{user}@{host}:{port}>\r\n"
        f"{auth}"
        f"Max-Forwards: 70\r\nExpires: 60\r\nUser-Agent: Spray/1.0\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def authorization(challenge, call):
    realm = re.search(r'realm="([^"]*)"', challenge)
    nonce = re.search(r'nonce="([^"]*)"', challenge)
    if not nonce:
        return None
    realm = realm.group(1) if realm else "pbx.test"
    nonce = nonce.group(1)
    ha1 = md5(f"{user}:{realm}:wrong-{call}")
    ha2 = md5("REGISTER:sip:pbx.test")
    qop = re.search(r'qop="([^"]*)"', challenge)
    if qop and "auth" in qop.group(1).split(","):
        cnonce = md5(call)[:16]
        resp = md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
        extra = f', qop=auth, nc=00000001, cnonce="{cnonce}"'
    else:
        resp = md5(f"{ha1}:{nonce}:{ha2}")
        extra = ""
    return (
        f'Authorization: Digest username="{user}", realm="{realm}", nonce="{nonce}", '
        f'uri="sip:pbx.test", response="{resp}", algorithm=MD5{extra}\r\n'
    )


def status(msg):
    m = re.match(rb"SIP/2\.0 (\d{3})", msg)
    return int(m.group(1)) if m else 0


def header(msg, name):
    for line in msg.decode(errors="replace").split("\r\n"):
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return ""


class Udp:
    def __init__(self, src):
        self.s = socket.socket(fam, socket.SOCK_DGRAM)
        self.s.bind((src, 0))
        self.s.settimeout(ANSWER)
        self.port = self.s.getsockname()[1]

    def ask(self, msg, cseq):
        self.s.sendto(msg, (dst, 5060))
        end = time.monotonic() + ANSWER
        while time.monotonic() < end:
            try:
                data = self.s.recv(65535)
            except OSError:
                return None
            if status(data) >= 200 and header(data, "CSeq").startswith(str(cseq)):
                return data
        return None

    def close(self):
        self.s.close()


class Tcp:
    def __init__(self, src):
        self.s = socket.socket(fam, socket.SOCK_STREAM)
        self.s.bind((src, 0))
        self.s.settimeout(ANSWER)
        self.s.connect((dst, 5060))
        self.port = self.s.getsockname()[1]
        self.buf = b""

    def ask(self, msg, cseq):
        self.s.sendall(msg)
        end = time.monotonic() + ANSWER
        while time.monotonic() < end:
            while b"\r\n\r\n" in self.buf:
                head, rest = self.buf.split(b"\r\n\r\n", 1)
                n = int(header(head + b"\r\n", "Content-Length") or 0)
                if len(rest) < n:
                    break
                self.buf = rest[n:]
                if status(head) >= 200 and header(head + b"\r\n", "CSeq").startswith(str(cseq)):
                    return head
            try:
                chunk = self.s.recv(65535)
            except OSError:
                return None
            if not chunk:
                return None
            self.buf += chunk
        return None

    def close(self):
        self.s.close()


def attempt(src, k):
    call = f"spray{src.replace('.', '').replace(':', '')}x{k}"
    try:
        conn = Tcp(src) if proto == "tcp" else Udp(src)
    except OSError:
        return
    try:
        first = conn.ask(register(src, conn.port, call, 1), 1)
        if first is None or status(first) not in (401, 407):
            return
        auth = authorization(header(first, "WWW-Authenticate") or header(first, "Proxy-Authenticate"), call)
        if auth is None:
            return
        with lock:
            challenged[src] += 1
        second = conn.ask(register(src, conn.port, call, 2, auth), 2)
        if second is not None and status(second) in (401, 403, 407):
            with lock:
                answered[src] += 1
    finally:
        conn.close()


def source(j, src, start):
    for r in range(attempts):
        slot = r * len(srcs) + j if order == "rr" else j * attempts + r
        at = start + slot * gap
        now = time.monotonic()
        if at > now:
            time.sleep(at - now)
        if time.monotonic() > deadline:
            return
        attempt(src, r)


start = time.monotonic() + 0.2
threads = [threading.Thread(target=source, args=(j, s, start)) for j, s in enumerate(srcs)]
for t in threads:
    t.start()
for t in threads:
    t.join(max(0.0, deadline - time.monotonic()) + 1)
print(json.dumps({"answered": answered, "challenged": challenged, "attempts": attempts * len(srcs)}))
