#!/usr/bin/env python3
"""Writes a small MaxMind DB (mmdb, format 2.0) for tests: nothing is
downloaded, the lab's geography is what the test says it is.

  mmdb_write.py OUT KIND NET=VALUE...

KIND: country (records {"country": {"iso_code": VALUE}}) or asn (records
{"autonomous_system_number": VALUE, "autonomous_system_organization":
"AS VALUE"}). NET: an IPv4 or IPv6 network. The tree is IPv6 (ip_version 6,
record size 24) with IPv4 at ::/96, as the published databases are. The
file is written to OUT.tmp and renamed, so a reader never sees half of it.
"""
import ipaddress
import os
import struct
import sys
import time


def ctrl(type_, size):
    """Control byte(s) for a field of `type_` and `size`."""
    head = b""
    if type_ > 7:
        head, type_ = bytes([type_ - 7]), 0
    if size < 29:
        return bytes([(type_ << 5) | size]) + head
    if size < 29 + 256:
        return bytes([(type_ << 5) | 29]) + head + bytes([size - 29])
    return bytes([(type_ << 5) | 30]) + head + struct.pack(">H", size - 285)


def enc(v):
    if isinstance(v, str):
        b = v.encode()
        return ctrl(2, len(b)) + b
    if isinstance(v, dict):
        out = ctrl(7, len(v))
        for k, x in v.items():
            out += enc(k) + enc(x)
        return out
    if isinstance(v, list):
        out = ctrl(11, len(v))
        for x in v:
            out += enc(x)
        return out
    if isinstance(v, tuple):  # (type, int)
        t, n = v
        width = {5: 2, 6: 4, 9: 8}[t]
        b = n.to_bytes(width, "big").lstrip(b"\0")
        return ctrl(t, len(b)) + b
    raise TypeError(v)


def main():
    out, kind, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
    nets = []
    for p in pairs:
        net, value = p.split("=", 1)
        n = ipaddress.ip_network(net, strict=False)
        if n.version == 4:
            bits, plen = int(n.network_address), 96 + n.prefixlen
        else:
            bits, plen = int(n.network_address), n.prefixlen
        if kind == "country":
            rec = {"country": {"iso_code": value}}
        else:
            rec = {"autonomous_system_number": (6, int(value)), "autonomous_system_organization": f"AS {value}"}
        nets.append((bits, plen, rec))
    # Data section: one record per network.
    data, offsets = b"", []
    for _, _, rec in nets:
        offsets.append(len(data))
        data += enc(rec)
    # Binary trie over 128-bit keys; a node is [left, right], each an int
    # (node index), None (empty) or ("data", i).
    nodes = [[None, None]]
    for i, (bits, plen, _) in enumerate(nets):
        node = 0
        for depth in range(plen):
            bit = (bits >> (127 - depth)) & 1
            if depth == plen - 1:
                nodes[node][bit] = ("data", i)
                break
            nxt = nodes[node][bit]
            if not isinstance(nxt, int):
                nodes.append([nxt, nxt])  # an enclosing record covers both halves
                nxt = len(nodes) - 1
                nodes[node][bit] = nxt
            node = nxt
    count = len(nodes)

    def value(r):
        if r is None:
            return count
        if isinstance(r, int):
            return r
        return count + 16 + offsets[r[1]]

    tree = b""
    for left, right in nodes:
        tree += value(left).to_bytes(3, "big") + value(right).to_bytes(3, "big")
    meta = {
        "binary_format_major_version": (5, 2),
        "binary_format_minor_version": (5, 0),
        "build_epoch": (9, int(time.time())),
        "database_type": "voipwall-test-" + kind,
        "description": {"en": "voipwall test database"},
        "ip_version": (5, 6),
        "languages": ["en"],
        "node_count": (6, count),
        "record_size": (5, 24),
    }
    body = tree + b"\0" * 16 + data + b"\xab\xcd\xefMaxMind.com" + enc(meta)
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(body)
    os.replace(tmp, out)


main()
