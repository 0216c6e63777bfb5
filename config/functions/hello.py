"""A long-running HTTP function: answers every request with a greeting and
echoes what it was sent. The process provider passes the port in $PORT."""
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        reply = json.dumps({"hello": body or "world", "method": self.command, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, fmt, *args):
        print("hello:", fmt % args, flush=True)


ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "5000"))), Hello).serve_forever()
