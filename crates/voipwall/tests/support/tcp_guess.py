#!/usr/bin/env python3
"""A password guesser over SIP/TCP (issue 13): on one connection, each
attempt is a REGISTER, the 401 challenge, then a REGISTER with a wrong
digest answer (403).

  tcp_guess.py SRC DST ATTEMPTS MODE

MODE: whole (each message in one write), bytewise (each message written
one byte at a time with Nagle off, so every byte is its own TCP segment and
messages split inside the request line, inside headers, anywhere) or tls
(SIP over TLS to port 5061, the certificate not checked: a lab PBX with a
self-signed one) or ws (SIP over WebSocket to port 5066: the HTTP upgrade,
then each message in one masked frame, written 20 bytes per TCP segment).
Prints
how many attempts the PBX answered with 403. Bounded: ATTEMPTS at most 30,
1 s per answer, 60 s in all; only to DST.
"""
import base64
import os
import re
import socket
import ssl
import struct
import sys
import time

src, dst, attempts, mode = sys.argv[1], sys.argv[2], min(int(sys.argv[3]), 30), sys.argv[4]
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.bind((src, 0))
s.settimeout(3.0)
s.connect((dst, {"tls": 5061, "ws": 5066}.get(mode, 5060)))
if mode == "tls":
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(s)
s.settimeout(1.0)
port = s.getsockname()[1]
via = {"tls": "TLS", "ws": "WS"}.get(mode, "TCP")
inbuf = b""
if mode == "ws":
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET / HTTP/1.1\r\nHost: pbx.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n".encode()
    )
    hs = b""
    while b"\r\n\r\n" not in hs:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("websocket handshake refused")
        hs += chunk
    if not hs.startswith(b"HTTP/1.1 101"):
        sys.exit(f"websocket handshake refused: {hs[:60]!r}")
    inbuf = hs[hs.index(b"\r\n\r\n") + 4 :]


def ws_frame(payload):
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_split(b):
    """The first whole server frame's payload (unmasked), and the rest."""
    if len(b) < 2:
        return None
    n, at = b[1] & 0x7F, 2
    if n == 126:
        if len(b) < 4:
            return None
        n, at = struct.unpack("!H", b[2:4])[0], 4
    return (b[at : at + n], b[at + n :]) if len(b) >= at + n else None


def sip_split(b):
    """The first whole SIP message (framed by Content-Length), and the rest."""
    head_end = b.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    m = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", b[:head_end])
    total = head_end + 4 + (int(m.group(1)) if m else 0)
    return (b[:total], b[total:]) if len(b) >= total else None


def read_message(split):
    """One message from the stream; "" when the PBX stops answering."""
    global inbuf
    while True:
        cut = split(inbuf)
        if cut:
            msg, inbuf = cut
            return msg.decode(errors="replace")
        try:
            chunk = s.recv(65535)
        except (socket.timeout, OSError):
            return ""
        if not chunk:
            return ""
        inbuf += chunk


def register(n, cseq, auth=""):
    msg = (
        f"REGISTER sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/{via} {src}:{port};branch=z9hG4bKtcp{n}x{cseq}\r\n"
        f"From: <sip:1002@pbx.test>;tag={n}\r\nTo: <sip:1002@pbx.test>\r\n"
        f"Call-ID: tcp-{mode}-{n}@{src}\r\nCSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:1002@{src}:{port};transport={via.lower()}>\r\nMax-Forwards: 70\r\nExpires: 60\r\n{auth}"
        f"User-Agent: Z 5.2.28 rv2.10.5.4\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    if mode == "ws":
        frame = ws_frame(msg)
        try:
            for i in range(0, len(frame), 20):
                s.send(frame[i : i + 20])
                time.sleep(0.0002)
        except OSError:
            return ""
        return read_message(ws_split)
    try:
        if mode == "bytewise":
            for i in range(len(msg)):
                s.send(msg[i : i + 1])
                time.sleep(0.0002)
        else:
            s.sendall(msg)
    except OSError:
        return ""
    return read_message(sip_split)


failed = 0
deadline = time.time() + 60
for n in range(attempts):
    if time.time() > deadline:
        break
    ans = register(n, 1)
    m = re.search(r'nonce="([^"]+)"', ans)
    if not ans.startswith("SIP/2.0 401") or not m:
        break  # unanswered: banned (the stream is dropped from here on)
    auth = (
        f'Authorization: Digest username="1002", realm="pbx.test", nonce="{m.group(1)}", '
        f'uri="sip:pbx.test", response="00000000000000000000000000000000", algorithm=MD5\r\n'
    )
    if not register(n, 2, auth).startswith("SIP/2.0 403"):
        break
    failed += 1
    # 50 attempts a second, like the sipp guessers (unpaced, the next
    # attempt can beat the ban into the kernel by a fraction of a ms).
    time.sleep(0.02)
print(failed)
