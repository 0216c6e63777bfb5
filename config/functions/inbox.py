"""The inbox function: keeps what it is sent, and shows it. Each POST (an
event from any source) is kept with its path and headers, the last 1000 of
them; GET answers them as JSON, newest last, so a deployment can check what
reached its functions. The process provider passes the port in $PORT."""
import json
import os
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEPT = deque(maxlen=int(os.environ.get("INBOX_SIZE", "1000")))
LOCK = threading.Lock()


class Inbox(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body):
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        event = {
            "path": self.path,
            "headers": {k: v for k, v in self.headers.items() if k.lower().startswith(("x-", "ce-", "content-type"))},
            "body": body.decode("utf-8", "replace"),
        }
        with LOCK:
            KEPT.append(event)
        print(f"inbox: {event['headers'].get('X-Topic', '')} {event['body'][:200]}", flush=True)
        self.answer(200, {"kept": len(KEPT)})

    def do_GET(self):
        with LOCK:
            self.answer(200, list(KEPT))

    def log_message(self, fmt, *args):
        pass


class Server(ThreadingHTTPServer):
    request_queue_size = 128
    daemon_threads = True


Server(("127.0.0.1", int(os.environ.get("PORT", "5000"))), Inbox).serve_forever()
