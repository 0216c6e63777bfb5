"""The thumbnail function of the sample functions' container image. Its
input is an S3 event notification: from S3 → SQS → the hub, or from the
upload function. `switchboard up` runs the same function built into the
binary (`switchboard sample thumbnail`, switchboard/src/thumbnail.rs),
which needs no Pillow but keeps to folders; this one also speaks S3.
For each object created it reads the image, shrinks it to fit a
THUMBNAIL_SIZE box (aspect and format kept) and writes it under the same
key in THUMBNAIL_BUCKET. Objects are in S3 with STORE=s3 (boto3,
credentials from the environment; S3_ENDPOINT for an emulator), else in the
folders of STORE_DIR, one per bucket.

Answers 200 with what it wrote, and 422 for an object that is not an image
(or too large to decode safely): a 4xx the hub does not retry, so the event
is dead-lettered with this reason. The process provider passes the port in
$PORT."""
import io
import json
import os
import urllib.parse
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image, ImageOps, UnidentifiedImageError

SIZE = int(os.environ.get("THUMBNAIL_SIZE", "128"))
THUMBNAILS = os.environ.get("THUMBNAIL_BUCKET", "thumbnails")
STORE_DIR = os.environ.get("STORE_DIR", "objects")
# A small file can claim billions of pixels; decoding it would take the
# memory of the machine. Past this, the object is refused.
Image.MAX_IMAGE_PIXELS = int(os.environ.get("MAX_PIXELS", "40000000"))
warnings.simplefilter("error", Image.DecompressionBombWarning)


class Refused(Exception):
    """An object this function will not thumbnail: 4xx, not worth a retry."""


class Folders:
    def path(self, bucket, key):
        names = [bucket] + key.split("/")
        if key.startswith("/") or any(n in ("", ".", "..") for n in names):
            raise Refused(f"{bucket}/{key}: not a key this store can hold")
        return os.path.join(STORE_DIR, *names)

    def get(self, bucket, key):
        try:
            with open(self.path(bucket, key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise Refused(f"{bucket}/{key}: no such object")

    def put(self, bucket, key, data, content_type):
        path = self.path(bucket, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(f"{path}.part", "wb") as f:
            f.write(data)
        os.replace(f"{path}.part", path)


class S3:
    def __init__(self, endpoint):
        import boto3
        from botocore.config import Config

        # An emulator has no bucket host names: path-style addressing.
        config = Config(s3={"addressing_style": "path"}) if endpoint else None
        self.client = boto3.client("s3", endpoint_url=endpoint, config=config)

    def get(self, bucket, key):
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise Refused(f"{bucket}/{key}: no such object")

    def put(self, bucket, key, data, content_type):
        self.client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)


STORE = S3(os.environ.get("S3_ENDPOINT")) if os.environ.get("STORE") == "s3" else Folders()


def created(event):
    """(bucket, key) of each object the notification says was created."""
    for record in event.get("Records", []):
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = record.get("s3", {})
        bucket = s3.get("bucket", {}).get("name")
        key = s3.get("object", {}).get("key")
        if bucket and key:
            # S3 writes keys URL-encoded in notifications (a space as '+').
            yield bucket, urllib.parse.unquote_plus(key)


def thumbnail(data, name):
    """The thumbnail's bytes, width, height and format."""
    try:
        image = Image.open(io.BytesIO(data))
        fmt = image.format
        image = ImageOps.exif_transpose(image)
        image.thumbnail((SIZE, SIZE))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise Refused(f"{name}: too large to decode safely ({e})")
    except UnidentifiedImageError as e:
        raise Refused(f"{name}: not an image this function can read ({e})")
    except (OSError, SyntaxError, ValueError) as e:
        raise Refused(f"{name}: a damaged or unsupported image ({e})")
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return out.getvalue(), image.width, image.height, fmt


class Thumbnail(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body):
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            event = json.loads(self.rfile.read(length) or b"{}")
        except ValueError as e:
            return self.answer(400, {"error": f"expected an S3 event notification (JSON): {e}"})
        written = []
        try:
            for bucket, key in created(event):
                if bucket == THUMBNAILS:
                    continue  # a thumbnail's own notification: nothing to do
                data, width, height, fmt = thumbnail(STORE.get(bucket, key), f"{bucket}/{key}")
                STORE.put(THUMBNAILS, key, data, Image.MIME.get(fmt, "application/octet-stream"))
                written.append({"bucket": THUMBNAILS, "key": key, "width": width, "height": height, "format": fmt})
                print(f"thumbnail: {bucket}/{key} -> {THUMBNAILS}/{key} {width}x{height} {fmt}", flush=True)
        except Refused as e:
            print(f"thumbnail: refused {e}", flush=True)
            return self.answer(422, {"error": str(e)})
        except Exception as e:  # the store unreachable, a disk full: worth a retry
            print(f"thumbnail: failed {e!r}", flush=True)
            return self.answer(503, {"error": f"cannot read or write the store: {e}"})
        self.answer(200, {"thumbnails": written})

    def log_message(self, fmt, *args):
        pass


class Server(ThreadingHTTPServer):
    # socketserver's backlog of 5 refuses a burst of uploads at once.
    request_queue_size = 128
    daemon_threads = True


Server(("127.0.0.1", int(os.environ.get("PORT", "5000"))), Thumbnail).serve_forever()
