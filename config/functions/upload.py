"""The upload function: stores a file and announces it, as S3 does with an
event notification. POST /function/upload/KEY stores the body as KEY in
the uploads bucket (a folder of STORE_DIR), then sends the hub's
CloudEvents receiver (EVENTS_URL) an event of type EVENT_TYPE whose data is
an S3 event notification for it, so a subscriber reads the same JSON it
would from S3 → SQS. GET /function/upload/KEY?bucket=B reads an object back
(the thumbnails, say). The process provider passes the port in $PORT."""
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STORE_DIR = os.environ.get("STORE_DIR", "objects")
BUCKET = os.environ.get("UPLOAD_BUCKET", "uploads")
EVENTS_URL = os.environ.get("EVENTS_URL", "http://127.0.0.1:8082/")
EVENT_TYPE = os.environ.get("EVENT_TYPE", "com.switchboard.object.created")
# How long an upload keeps offering its event to a busy hub (429/503).
EMIT_FOR = float(os.environ.get("EMIT_FOR_SECONDS", "60"))


def object_path(bucket, key):
    """The file of an object, or None for a name that would leave its bucket."""
    parts = key.split("/")
    names = [bucket] + parts
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in names) or "\0" in key:
        return None
    return os.path.join(STORE_DIR, *names)


def notification(bucket, key, size):
    """An S3 event notification for one object, as S3 writes it (the key URL-encoded)."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "switchboard:upload",
                "eventTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": bucket},
                    "object": {"key": urllib.parse.quote_plus(key, safe="/"), "size": size},
                },
            }
        ]
    }


def emit(bucket, key, size):
    """Offers the event until the hub settles it: 200/202 with its counts.
    A busy hub (429, 503) is asked again after its Retry-After."""
    body = json.dumps(notification(bucket, key, size)).encode()
    headers = {
        "Content-Type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": str(uuid.uuid4()),
        "ce-source": "/switchboard/upload",
        "ce-type": EVENT_TYPE,
        "ce-subject": f"{bucket}/{key}",
    }
    deadline = time.monotonic() + EMIT_FOR
    while True:
        request = urllib.request.Request(EVENTS_URL, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=EMIT_FOR) as res:
                return json.loads(res.read() or b"{}")
        except urllib.error.HTTPError as e:
            if e.code not in (429, 503) or time.monotonic() > deadline:
                raise RuntimeError(f"the hub refused the event: {e.code} {e.read().decode(errors='replace')}")
            time.sleep(min(float(e.headers.get("Retry-After") or 1), 5))
        except urllib.error.URLError as e:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the hub's receiver at {EVENTS_URL} is unreachable: {e.reason}")
            time.sleep(1)


class Upload(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def target(self):
        url = urllib.parse.urlsplit(self.path)
        key = urllib.parse.unquote(url.path.lstrip("/"))
        bucket = urllib.parse.parse_qs(url.query).get("bucket", [BUCKET])[0]
        return bucket, key, object_path(bucket, key)

    def do_POST(self):
        bucket, key, path = self.target()
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length)
        if path is None or bucket != BUCKET:
            return self.answer(400, {"error": f"{key!r}: expected a key such as photos/cat.png, stored in {BUCKET}"})
        if not data:
            return self.answer(400, {"error": f"{key}: the request body (the file) is empty"})
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = f"{path}.{uuid.uuid4().hex}.part"
        with open(partial, "wb") as f:
            f.write(data)
        os.replace(partial, path)
        try:
            settled = emit(bucket, key, len(data))
        except RuntimeError as e:
            return self.answer(502, {"bucket": bucket, "key": key, "stored": True, "error": str(e)})
        self.answer(201, {"bucket": bucket, "key": key, "size": len(data), "event": settled})

    def do_GET(self):
        bucket, key, path = self.target()
        if path is None or not os.path.isfile(path):
            return self.answer(404, {"error": f"no object {key!r} in {bucket}"})
        with open(path, "rb") as f:
            self.answer(200, f.read(), "application/octet-stream")

    def log_message(self, fmt, *args):
        print("upload:", fmt % args, flush=True)


class Server(ThreadingHTTPServer):
    # socketserver's backlog of 5 refuses a burst of uploads at once.
    request_queue_size = 128
    daemon_threads = True


Server(("127.0.0.1", int(os.environ.get("PORT", "5000"))), Upload).serve_forever()
