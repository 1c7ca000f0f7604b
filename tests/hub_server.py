"""A real HTTP server on 127.0.0.1 for the hub tests: serves byte payloads, misbehaves on request, records requests."""
from __future__ import annotations

import base64
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Served:
    method: str
    path: str
    range: str | None
    status: int
    body_bytes: int  # bytes of body the server sends (half the body when it drops the connection)


@dataclass
class PayloadServer:
    """Serves ``files`` (URL path -> bytes) with HTTP Range support, in a daemon thread.

    Misbehaviour switches: ``corrupt`` (paths whose body has one byte flipped), ``drop_once`` (paths whose next GET
    sends half the body and closes the connection), ``ignore_range`` (always answer 200 with the whole body),
    ``throttle_s`` (seconds to spread each body over). ``extra_headers`` adds headers per path.
    It also answers the two Hub API calls of a small upload (preupload, then commit with the file inline).
    """

    files: dict[str, bytes] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    drop_once: set[str] = field(default_factory=set)
    ignore_range: bool = False
    throttle_s: float = 0.0
    extra_headers: dict[str, dict[str, str]] = field(default_factory=dict)
    served: list[Served] = field(default_factory=list)
    commits: list[dict] = field(default_factory=list)  # Hub commits received: repo, revision, summary, files

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.origin + path

    def get_requests(self, path: str) -> list[Served]:
        with self._lock:
            return [s for s in self.served if s.path == path and s.method == "GET"]

    def start(self) -> PayloadServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> PayloadServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _record(self, served: Served) -> None:
        with self._lock:
            self.served.append(served)


def _handler_for(server: PayloadServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args) -> None:  # keep pytest output clean
            pass

        def do_HEAD(self) -> None:
            self._respond(send_body=False)

        def do_GET(self) -> None:
            self._respond(send_body=True)

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            server._record(Served("POST", path, None, 200, 0))
            if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/(.+)", path):
                files = json.loads(body)["files"]
                answer = {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            elif match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/(.+)", path):
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                header = next(line["value"] for line in lines if line["key"] == "header")
                files = {line["value"]["path"]: base64.b64decode(line["value"]["content"])
                         for line in lines if line["key"] == "file"}
                oid = f"{len(server.commits) + 1:040x}"
                with server._lock:
                    server.commits.append({"repo": match.group(1), "revision": match.group(2),
                                           "summary": header["summary"], "files": files, "oid": oid})
                answer = {"commitOid": oid, "commitUrl": f"{server.origin}/{match.group(1)}/commit/{oid}"}
            else:
                self._empty(404)
                return
            payload = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _respond(self, send_body: bool) -> None:
            path = self.path.split("?", 1)[0]
            range_header = self.headers.get("Range")
            data = server.files.get(path)
            if data is None:
                server._record(Served(self.command, path, range_header, 404, 0))
                self._empty(404)
                return
            if path in server.corrupt:
                middle = len(data) // 2
                data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
            if match and not server.ignore_range:
                start = int(match.group(1))
                if start >= len(data):
                    server._record(Served(self.command, path, range_header, 416, 0))
                    self._empty(416, {"Content-Range": f"bytes */{len(data)}"})
                    return
            body = data[start:]
            status = 206 if start else 200
            with server._lock:
                drop = send_body and path in server.drop_once
                server.drop_once.discard(path)
            stop_at = len(body) // 2 if drop else len(body)
            # recorded before answering, so the client never sees a response the record does not hold yet
            server._record(Served(self.command, path, range_header, status, stop_at if send_body else 0))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            for name, value in server.extra_headers.get(path, {}).items():
                self.send_header(name, value)
            self.end_headers()
            if send_body:
                self._write(body[:stop_at])
                if drop:
                    self.close_connection = True

        def _write(self, body: bytes) -> None:
            pieces = 8 if server.throttle_s else 1
            step = -(-len(body) // pieces) or 1
            for i in range(0, len(body), step):
                try:
                    self.wfile.write(body[i:i + step])
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a deadline, a full disk)
                    self.close_connection = True
                    return
                if server.throttle_s:
                    time.sleep(server.throttle_s / pieces)

        def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler
