"""A small HTTP app on Python's standard library alone, for Hatoba.

It listens on $PORT (Hatoba sets it to the service's `port`), on every
interface of its container so that the port Hatoba publishes on the
host's loopback reaches it, and answers:

  /        its version ($VERSION, from the spec's `env`) as plain text
  /health  "ok", for Hatoba's readiness and liveness probes

On SIGTERM (Hatoba's stop, passed on by Docker's init) it stops accepting,
finishes the requests in flight and exits 0; Hatoba's proxy has already
drained it by then.
"""

import http.server
import os
import signal
import sys
import threading

VERSION = os.environ.get("VERSION", "unknown")


class Handler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.0 (the default): one request per connection, so that no idle
    # kept-alive connection holds up the shutdown; a client that sends
    # nothing for 10 s is dropped.
    timeout = 10
    server_version = "hatoba-python-example"

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/":
            self.reply(200, f"{VERSION}\n")
        elif path == "/health":
            self.reply(200, "ok\n")
        else:
            self.reply(404, "not found\n")

    def do_HEAD(self):
        self.do_GET()

    def reply(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, fmt, *args):
        # One line per request on stderr is noise under probes every 500 ms;
        # errors still go through log_error.
        pass


class Server(http.server.ThreadingHTTPServer):
    # Wait for the request threads on shutdown, so none is cut off mid-answer.
    daemon_threads = False
    block_on_close = True


def main():
    try:
        port = int(os.environ.get("PORT", "8080"))
    except ValueError:
        print(f"app: PORT must be a number, not {os.environ['PORT']!r}", file=sys.stderr)
        return 2
    host = os.environ.get("HOST", "0.0.0.0")
    server = Server((host, port), Handler)

    def on_term(signum, _frame):
        print(f"app: signal {signum}, finishing requests in flight", file=sys.stderr)
        # shutdown() waits for serve_forever to return: call it from another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print(f"app: version {VERSION} listening on {host}:{port}", file=sys.stderr)
    server.serve_forever()
    server.server_close()  # joins the request threads (block_on_close)
    print("app: stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
