#!/usr/bin/env python3
"""Reads kamailio's stderr (the lab's kamailio.cfg) line by line and writes,
for each failed authentication, the line Asterisk's chan_sip writes for it to
an Asterisk-style `messages` file (flushed per line), so that fail2ban's
stock asterisk filter and jail can watch the same attack voipwall does.
Also appends `<µs since epoch> <source>` per failure to a timing file.

Usage: logshim.py MESSAGES TIMING RAW < kamailio-stderr
"""
import re
import sys
import time

msgs = open(sys.argv[1], "a", buffering=1)
timing = open(sys.argv[2], "a", buffering=1)
raw = open(sys.argv[3], "a", buffering=1)
pat = re.compile(r"voipwall: event=auth-failed src=(\S+) port=(\d+) \S+ \S+ user=(\S*)")
for line in sys.stdin:
    raw.write(line)
    m = pat.search(line)
    if not m:
        continue
    now = time.time()
    ip, port, user = m.groups()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    msgs.write(f"[{stamp}] NOTICE[1234] chan_sip.c: Registration from '\"{user}\" <sip:{user}@pbx.test>' failed for '{ip}:{port}' - Wrong password\n")
    timing.write(f"{int(now * 1e6)} {ip}\n")
