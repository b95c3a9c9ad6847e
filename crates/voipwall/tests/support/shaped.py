#!/usr/bin/env python3
"""A password guesser that shapes its packets the way a PBX still accepts
and a strict decoder does not (issue 12): each attempt is a REGISTER, the
401 challenge, then a REGISTER with a wrong digest answer.

  shaped.py SRC DST SHAPE ATTEMPTS

SHAPE: crlf (CRLF before the request line), pad (a 3,000-byte header before
Call-ID), space (a trailing space on the request line), cseq (a CSeq above
2^32), plain. Prints how many attempts the PBX answered with a final
failure (403). Bounded: ATTEMPTS at most 50, 50 a second, 1 s per answer,
60 s in all.
"""
import re
import socket
import sys
import time

src, dst, shape, attempts = sys.argv[1], sys.argv[2], sys.argv[3], min(int(sys.argv[4]), 50)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
s.settimeout(1.0)
port = s.getsockname()[1]


def register(n, cseq, auth=""):
    first = "REGISTER sip:pbx.test SIP/2.0"
    pad = ""
    if shape == "space":
        first += " "
    if shape == "pad":
        pad = "X-Pad: " + "a" * 3000 + "\r\n"
    if shape == "cseq":
        cseq += 4294967296
    msg = (
        f"{first}\r\nVia: SIP/2.0/UDP {src}:{port};branch=z9hG4bK{shape}{n}x{cseq}\r\n"
        f"From: <sip:1002@pbx.test>;tag={n}\r\nTo: <sip:1002@pbx.test>\r\n{pad}"
        f"Call-ID: {shape}-{n}@{src}\r\nCSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:1002@{src}:{port}>\r\nMax-Forwards: 70\r\nExpires: 60\r\n{auth}"
        f"User-Agent: Z 5.2.28 rv2.10.5.4\r\nContent-Length: 0\r\n\r\n"
    )
    if shape == "crlf":
        msg = "\r\n" + msg
    s.sendto(msg.encode(), (dst, 5060))
    try:
        return s.recv(65535).decode(errors="replace")
    except socket.timeout:
        return ""


failed = 0
silent = 0
deadline = time.time() + 60
for n in range(attempts):
    if time.time() > deadline or silent >= 2:
        break  # two unanswered attempts in a row: banned
    ans = register(n, 1)
    m = re.search(r'nonce="([^"]+)"', ans)
    if not ans.startswith("SIP/2.0 401") or not m:
        silent += 1
        continue
    silent = 0
    auth = (
        f'Authorization: Digest username="1002", realm="pbx.test", nonce="{m.group(1)}", '
        f'uri="sip:pbx.test", response="00000000000000000000000000000000", algorithm=MD5\r\n'
    )
    if register(n, 2, auth).startswith("SIP/2.0 403"):
        failed += 1
    # 50 attempts a second, like the sipp guesser: unpaced, the next attempt
    # can beat the ban (live ~0.2 ms after the failure) into the kernel.
    time.sleep(0.02)
print(failed)
