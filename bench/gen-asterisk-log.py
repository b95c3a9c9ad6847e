#!/usr/bin/env python3
"""Writes a synthetic Asterisk full log for replay benchmarks.

Usage: gen-asterisk-log.py LINES OUT [SEED]

About 45% of the lines are the noise a busy PBX writes (dialplan execution,
qualify, registrations), the rest are what attacks leave: chan_sip wrong
passwords and unknown peers, PJSIP failed authentications and unknown
endpoints (with and without "after N tries"), calls to foreign numbers
rejected. 2,000 attackers (198.18.0.0/15, the benchmarking range) attack in
bursts of 6-40 attempts a few seconds apart; 300 phones (198.51.100.0/24
and 203.0.113.0/24) register and make calls and mistype a password now and
then (never 5 times in 10 minutes). Addresses here are only text in a file.
"""
import random
import sys

def main():
    lines, out = int(sys.argv[1]), sys.argv[2]
    rnd = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 42)
    attackers = [f"198.{18 + i // 65536 % 2}.{i // 256 % 256}.{i % 256 + 1 if i % 256 < 254 else 7}" for i in range(0, 2000 * 97, 97)]
    phones = [f"198.51.100.{i}" for i in range(10, 160)] + [f"203.0.113.{i}" for i in range(10, 160)]
    t = 1_795_400_000.0  # 2026-11-23 (UTC), any day works
    tid = 2284
    bursts = []  # [ip, remaining, kind]
    with open(out, "w") as f:
        n = 0
        while n < lines:
            t += rnd.expovariate(1 / 0.08)
            ts = __import__("time").strftime("%Y-%m-%d %H:%M:%S", __import__("time").gmtime(t))
            r = rnd.random()
            if r < 0.45:
                p = rnd.choice(phones)
                k = rnd.random()
                if k < 0.5:
                    ext = rnd.randint(100, 299)
                    line = f'[{ts}] VERBOSE[{tid}][C-{n % 65536:08x}] pbx.c: Executing [{ext}@from-internal:1] Dial("PJSIP/{ext + 900}-{n % 65536:08x}", "PJSIP/{ext},30,tTr") in new stack'
                elif k < 0.8:
                    line = f"[{ts}] VERBOSE[{tid}] res_pjsip_registrar.c: Added contact 'sip:{rnd.randint(1000, 1300)}@{p}:5060;transport=UDP' to AOR '{rnd.randint(1000, 1300)}' with expiration of 300 seconds"
                elif k < 0.998:
                    line = f"[{ts}] NOTICE[{tid}] res_pjsip/pjsip_options.c: Endpoint {rnd.randint(1000, 1300)} is now Reachable"
                else:
                    line = f"[{ts}] NOTICE[{tid}] chan_sip.c: Registration from '\"{rnd.randint(1000, 1300)}\" <sip:{rnd.randint(1000, 1300)}@198.51.100.1:5060>' failed for '{p}:5060' - Wrong password"
            else:
                if not bursts or rnd.random() < 0.02:
                    bursts.append([rnd.choice(attackers), rnd.randint(6, 40), rnd.randint(0, 4)])
                b = rnd.choice(bursts)
                ip, kind = b[0], b[2]
                u = rnd.randint(100, 9999)
                port = rnd.randint(5060, 65000)
                if kind == 0:
                    line = f"[{ts}] NOTICE[{tid}] chan_sip.c: Registration from '\"{u}\" <sip:{u}@198.51.100.1:5060>' failed for '{ip}:{port}' - Wrong password"
                elif kind == 1:
                    line = f"[{ts}] NOTICE[{tid}] chan_sip.c: Registration from '<sip:{u}@198.51.100.1>' failed for '{ip}:{port}' - No matching peer found"
                elif kind == 2:
                    line = f"[{ts}] NOTICE[{tid}] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '\"{u}\" <sip:{u}@198.51.100.1>' failed for '{ip}:{port}' (callid: {rnd.getrandbits(64):x}) - Failed to authenticate"
                elif kind == 3:
                    line = f"[{ts}] NOTICE[{tid}] res_pjsip/pjsip_distributor.c: Request 'INVITE' from '<sip:{u}@198.51.100.1>' failed for '{ip}:{port}' (callid: {rnd.getrandbits(64):x}) - No matching endpoint found after {rnd.randint(1, 5)} tries in {rnd.random() * 3:.3f} ms"
                else:
                    line = f"[{ts}] NOTICE[{tid}][C-{n % 65536:08x}] chan_sip.c: Call from '' ({ip}:{port}) to extension '00972{rnd.randint(10**8, 10**9 - 1)}' rejected because extension not found in context 'default'."
                b[1] -= 1
                if b[1] <= 0:
                    bursts.remove(b)
            f.write(line + "\n")
            n += 1

main()
