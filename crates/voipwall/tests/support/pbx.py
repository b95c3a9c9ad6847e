#!/usr/bin/env python3
"""A stand-in PBX for the demo: answers SIP over UDP the way a registrar with
digest auth does, without checking anything. OPTIONS get 200; a REGISTER
without credentials gets a 401 challenge with a fresh random nonce (as
FreeSWITCH issues them); one with credentials gets 403 (every password is
wrong here). Listens until killed.

Usage: pbx.py ADDR [ADDR ...]   (port 5060 on each)
"""
import os
import re
import selectors
import socket
import sys

sel = selectors.DefaultSelector()
for a in sys.argv[1:]:
    fam = socket.AF_INET6 if ":" in a else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((a, 5060))
    sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)


def header(msg, name):
    m = re.search(rb"^" + name + rb":[ \t]*(.*?)\r?$", msg, re.I | re.M)
    return m.group(1) if m else b""


while True:
    for key, _ in sel.select():
        s = key.fileobj
        msg, peer = s.recvfrom(4096)
        if not msg or msg.startswith(b"SIP/2.0"):
            continue
        method = msg.split(b" ", 1)[0]
        if method == b"OPTIONS":
            status = b"200 OK"
        elif method == b"REGISTER" and not header(msg, b"Authorization"):
            status = b"401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"demo\", nonce=\"%s\"" % os.urandom(8).hex().encode()
        else:
            status = b"403 Forbidden"
        reply = b"SIP/2.0 " + status + b"\r\n"
        for h in (b"Via", b"From", b"To", b"Call-ID", b"CSeq"):
            reply += h + b": " + header(msg, h) + b"\r\n"
        reply += b"Content-Length: 0\r\n\r\n"
        s.sendto(reply, peer)
