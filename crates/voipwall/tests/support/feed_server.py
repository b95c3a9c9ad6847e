"""Blocklist feeds for the feed tests: `feed_server.py ADDR PORT DIR`.

Serves, from DIR (re-read on every request, so a test can change a list
between refreshes):
  GET  /voipbl        DIR/voipbl.txt (VoIPBL's shape: a header line, CIDRs)
  POST /apiban        APIBAN v2 pages: DIR/apiban-<id>.json for the asked
                      id (`{"set": "sip", "id": ...}`), the end of the list
                      (HTTP 400, `ID` "none") when there is no such file;
                      a wrong `Authorization: Bearer <DIR/apiban.key>` gets
                      the unauthorized answer
  GET  /hostile       DIR/hostile.txt
  GET  /own           DIR/own.txt
  GET  /html          an HTML error page with status 200
  GET  /huge          declares a 2 GB body (Content-Length) and starts it
  GET  /endless       no length, lines until the client stops reading
                      (at most 96 MB)
  GET  /hang          answers nothing for 60 s
Every request is appended to DIR/requests.log as "<method> <path>".
Writes DIR/ready when listening. Ends after 300 s (bounded)."""
import http.server, json, os, sys, threading, time

addr, port, d = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lock = threading.Lock()


def path(name):
    return os.path.join(d, name)


class Feed(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_request(self, *a):
        with lock, open(path("requests.log"), "a") as f:
            f.write(f"{self.command} {self.path}\n")

    def log_message(self, *a):
        pass

    def send(self, status, body, ctype="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        p = self.path
        if p in ("/voipbl", "/hostile", "/own"):
            try:
                body = open(path(p[1:] + ".txt"), "rb").read()
            except FileNotFoundError:
                return self.send(404, b"not found\n")
            return self.send(200, body)
        if p == "/html":
            return self.send(200, b"<html><body><h1>Service temporarily unavailable</h1></body></html>\n", "text/html")
        if p == "/huge":
            self.send_response(200)
            self.send_header("Content-Length", str(2 << 30))
            self.end_headers()
            try:
                self.wfile.write(b"203.0.113.9\n" * 1000)
            except OSError:
                pass
            return
        if p == "/endless":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            line = b"203.0.113.9\n" * 8192
            try:
                for _ in range((96 << 20) // len(line)):
                    self.wfile.write(line)
            except OSError:
                pass
            self.close_connection = True
            return
        if p == "/hang":
            time.sleep(60)
            return
        self.send(404, b"not found\n")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        if self.path != "/apiban":
            return self.send(404, b"not found\n")
        key = open(path("apiban.key")).read().strip()
        if self.headers.get("Authorization", "") != "Bearer " + key:
            return self.send(403, json.dumps({"ipaddress": [], "ID": "unauthorized"}).encode(), "application/json")
        try:
            asked = str(json.loads(body)["id"])
        except (ValueError, KeyError, TypeError):
            return self.send(400, b"bad request\n")
        if not asked.isalnum():
            return self.send(400, b"bad id\n")
        try:
            page = open(path(f"apiban-{asked}.json"), "rb").read()
        except FileNotFoundError:
            return self.send(400, json.dumps({"ipaddress": ["no new bans"], "ID": "none"}).encode(), "application/json")
        self.send(200, page, "application/json")


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


srv = Server((addr, port), Feed)
threading.Timer(300, lambda: os._exit(0)).start()
open(path("ready"), "w").close()
srv.serve_forever()
