"""An S3-protocol server on loopback (moto's) that counts the requests it serves, by kind.

    python benchmarks/rehearsal/counting_s3.py PORT

Counting at the server sees every client (the driver, Ray's workers, the atlas's pool processes).
GET /_counts answers the counts so far as JSON: list (GET on a bucket), head, get (GET of an
object), put, delete (DELETE, or a POST ?delete batch) and other.
"""

from __future__ import annotations

import collections
import json
import sys
import threading

from moto.server import DomainDispatcherApplication, create_backend_app
from moto.moto_server.threaded_moto_server import MotoRequestHandler
from werkzeug.serving import make_server


def kind(method: str, path: str, query: str) -> str:
    key = path.lstrip("/").partition("/")[2]
    if method == "GET":
        return "get" if key else "list"
    if method == "HEAD":
        return "head"
    if method == "PUT":
        return "put" if key else "other"
    if method == "DELETE" or (method == "POST" and "delete" in query.split("&")):
        return "delete"
    return "other"


def counting(app):
    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def wrapped(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/_counts":
            with lock:
                body = json.dumps(dict(counts)).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        what = kind(environ["REQUEST_METHOD"], path, environ.get("QUERY_STRING", ""))
        with lock:
            counts[what] += 1
        return app(environ, start_response)

    return wrapped


def main(port: int) -> None:
    app = counting(DomainDispatcherApplication(create_backend_app))
    make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler).serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]))
