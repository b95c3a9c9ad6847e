"""A webhook receiver and an SMTP sink for the notification test, in one
process: `notify_sink.py ADDR HTTP_PORT SMTP_PORT KEY_FILE OUT_DIR`.

Each webhook POST is checked against its HMAC-SHA256 signature (over
"<timestamp>.<body>" with the key) and written to OUT_DIR/webhook.jsonl as
{"verified": bool, "body": ...}; each e-mail's DATA goes to
OUT_DIR/mail-N.txt. Ends after 120 s (bounded)."""
import hashlib, hmac, http.server, json, os, socket, sys, threading, time

addr, hport, sport, keyf, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
key = open(keyf, "rb").read().strip()
lock = threading.Lock()


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        ts = self.headers.get("X-Voipwall-Timestamp", "")
        sig = self.headers.get("X-Voipwall-Signature", "")
        want = "sha256=" + hmac.new(key, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(want, sig)
        with lock, open(os.path.join(out, "webhook.jsonl"), "a") as f:
            f.write(json.dumps({"verified": ok, "body": json.loads(body)}) + "\n")
        self.send_response(204 if ok else 401)
        self.end_headers()

    def log_message(self, *a):
        pass


def smtp():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, sport))
    s.listen(4)
    n = 0
    while True:
        c, _ = s.accept()
        c.settimeout(10)
        f = c.makefile("rwb")
        def say(line):
            f.write(line.encode() + b"\r\n"); f.flush()
        say("220 sink ESMTP")
        data = []
        try:
            while True:
                line = f.readline()
                if not line:
                    break
                cmd = line.decode(errors="replace").strip()
                up = cmd.upper()
                if up.startswith("EHLO") or up.startswith("HELO"):
                    say("250 sink")
                elif up.startswith("MAIL") or up.startswith("RCPT") or up.startswith("RSET") or up.startswith("NOOP"):
                    say("250 ok")
                elif up == "DATA":
                    say("354 go on")
                    while True:
                        l = f.readline()
                        if not l or l in (b".\r\n", b".\n"):
                            break
                        data.append(l.decode(errors="replace"))
                    n += 1
                    with open(os.path.join(out, "mail-%d.txt" % n), "w") as m:
                        m.write("".join(data))
                    data = []
                    say("250 queued")
                elif up == "QUIT":
                    say("221 bye")
                    break
                else:
                    say("502 no")
        except OSError:
            pass
        c.close()


threading.Thread(target=smtp, daemon=True).start()
srv = http.server.ThreadingHTTPServer((addr, hport), Hook)
threading.Thread(target=srv.serve_forever, daemon=True).start()
open(os.path.join(out, "ready"), "w").close()
time.sleep(120)
