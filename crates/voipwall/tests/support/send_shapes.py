#!/usr/bin/env python3
"""Sends each file given (one SIP request each) to DST:5060 over UDP from
SRC and prints `answered` or `silent` per file, in order (1 s per answer,
one datagram each)."""
import socket
import sys

src, dst, files = sys.argv[1], sys.argv[2], sys.argv[3:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 5070))  # the Via port the requests name
s.settimeout(1.0)
for f in files:
    s.sendto(open(f, "rb").read(), (dst, 5060))
    try:
        s.recv(65535)
        print("answered", flush=True)
    except socket.timeout:
        print("silent", flush=True)
