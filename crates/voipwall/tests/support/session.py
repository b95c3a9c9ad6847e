#!/usr/bin/env python3
"""A stand-in for an SSH session in the safety tests.

  session.py server ADDR PORT        threaded TCP echo server; prints "ready"
  session.py client SRC ADDR PORT    one long-lived connection; for each line
                                     "<token> <seconds>" on stdin, sends the
                                     token and prints "ok <token>" when it is
                                     echoed within the time, else "timeout <token>"
"""
import select
import socket
import socketserver
import sys
import time

if sys.argv[1] == "server":
    class Echo(socketserver.BaseRequestHandler):
        def handle(self):
            while True:
                d = self.request.recv(4096)
                if not d:
                    return
                self.request.sendall(d)

    class Srv(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    s = Srv((sys.argv[2], int(sys.argv[3])), Echo)
    print("ready", flush=True)
    s.serve_forever()
else:
    src, addr, port = sys.argv[2], sys.argv[3], int(sys.argv[4])
    c = socket.create_connection((addr, port), timeout=5, source_address=(src, 0))
    print("connected", c.getsockname()[1], flush=True)
    buf = b""
    for line in sys.stdin:
        token, secs = line.split()
        c.sendall(token.encode() + b"\n")
        end = time.time() + float(secs)
        got = False
        while time.time() < end:
            if (token.encode() + b"\n") in buf:
                got = True
                break
            r, _, _ = select.select([c], [], [], max(0, end - time.time()))
            if r:
                d = c.recv(4096)
                if not d:
                    break
                buf += d
        if (token.encode() + b"\n") in buf:
            got = True
        print(("ok " if got else "timeout ") + token, flush=True)
