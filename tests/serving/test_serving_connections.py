"""The HTTP server's own limits, on a real uvicorn (``serving.cli.uvicorn_config``) on 127.0.0.1: slow clients are
cut at the header and body deadlines and cannot starve a normal one, and the upload bound holds while a body
streams in, raw or multipart."""
from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from serving_helpers import encode
from test_serving_batching import TimedBackend, grey

from serving import ServingConfig, create_app
from serving.cli import uvicorn_config

LIMITS = ServingConfig(max_connections=16, header_timeout_s=1.0, body_timeout_s=1.0, keep_alive_s=5,
                       max_upload_bytes=200_000)


def test_uvicorn_protocol_still_has_the_members_the_deadlines_hook():
    """serving.limits.deadline_protocol subclasses uvicorn's internal httptools protocol (no public hook exists)."""
    import inspect

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from serving.limits import PROTOCOL_HOOKS

    for name in PROTOCOL_HOOKS:
        assert callable(getattr(HttpToolsProtocol, name, None)), f"uvicorn's HttpToolsProtocol lost {name}"
    source = inspect.getsource(HttpToolsProtocol.__init__)
    assert "self.loop" in source and "self.transport" in source  # the members the timers use


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    """The service on a backend that answers at once, served as the CLI serves it (serving_helpers.uvicorn_server
    serves with uvicorn's defaults); yields (host, port) once the model is ready."""
    import uvicorn

    app = create_app(LIMITS, [TimedBackend(0.0)])
    server = uvicorn.Server(uvicorn_config(app, LIMITS))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not (server.started and app.state.serving.ready):
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        yield sock.getsockname()
        server.should_exit = True
        thread.join(timeout=30)


def detect(address: tuple[str, int], retry_s: float) -> tuple[httpx.Response, float]:
    """POST /v1/detect until it is not refused for the connection limit (503), at most ``retry_s``; the answer and
    the seconds it took."""
    started = time.monotonic()
    while True:
        response = httpx.post(f"http://{address[0]}:{address[1]}/v1/detect", content=encode(grey(90), "PNG"),
                              timeout=10)
        if response.status_code != 503 or time.monotonic() - started > retry_s:
            return response, time.monotonic() - started
        time.sleep(0.05)


def closed_by_server(sock: socket.socket) -> bool:
    """The server has closed the connection (what it sent before, if anything, read and dropped)."""
    try:
        while select.select([sock], [], [], 0)[0]:
            if not sock.recv(65536):
                return True
    except ConnectionError:
        return True
    return False


def slow_loris(address: tuple[str, int], count: int, seconds: float) -> list[float]:
    """``count`` connections sending a request's headers a byte every 0.1 s (one of them sending nothing) for up to
    ``seconds``; the seconds after which the server closed each (inf: still open)."""
    socks = [socket.create_connection(address) for _ in range(count)]
    head = b"POST /v1/detect HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: 1\r\n" * 1000
    closed = [float("inf")] * count
    started = time.monotonic()
    try:
        for step in range(int(seconds / 0.1)):
            for i, sock in enumerate(socks):
                if closed[i] == float("inf") and closed_by_server(sock):
                    closed[i] = time.monotonic() - started
                elif closed[i] == float("inf") and i:
                    try:
                        sock.send(head[step:step + 1])
                    except ConnectionError:
                        closed[i] = time.monotonic() - started
            if all(c < float("inf") for c in closed):
                break
            time.sleep(0.1)
    finally:
        for sock in socks:
            sock.close()
    return closed


def test_slow_clients_are_cut_at_the_header_deadline_and_cannot_starve_a_normal_one(server):
    """Before: no deadline, so slow-loris connections stayed open for as long as they trickled (300 held the
    server's file descriptors until new connections were reset)."""
    few = threading.Thread(target=slow_loris, args=(server, 8, 5.0))  # under the connection limit
    few.start()
    time.sleep(0.3)
    response, seconds = detect(server, retry_s=0)
    few.join()
    assert response.status_code == 200 and seconds < 1.0, (response.status_code, seconds)

    closed: list[float] = []
    many = threading.Thread(target=lambda: closed.extend(slow_loris(server, 2 * LIMITS.max_connections, 8.0)))
    many.start()  # past the limit: a normal request is refused (503) only until the slow ones are cut
    time.sleep(0.3)
    response, seconds = detect(server, retry_s=6.0)
    many.join()
    assert response.status_code == 200 and seconds < LIMITS.header_timeout_s + 2.0, (response.status_code, seconds)
    assert max(closed) < LIMITS.header_timeout_s + 1.5, closed  # trickling does not extend the deadline


def read_response(sock: socket.socket, timeout_s: float) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length: status, headers (lower-case), body."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed without a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def test_a_slow_upload_gets_408_at_the_body_deadline_and_is_closed(server):
    with socket.create_connection(server) as sock:
        sock.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Content-Length: 10000\r\n\r\n" + encode(grey(90), "PNG")[:100])
        started = time.monotonic()
        status, headers, body = read_response(sock, timeout_s=10)
        assert status == 408 and LIMITS.body_timeout_s - 0.2 < time.monotonic() - started < 5
        error = json.loads(body)
        assert error["error"]["code"] == "request_timeout" and error["request_id"] == headers["x-request-id"]
        assert sock.recv(1) == b""  # closed


def chunked(data: bytes, size: int = 16384) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        piece = data[start:start + size]
        yield b"%x\r\n%s\r\n" % (len(piece), piece)


@pytest.mark.parametrize("form", ["raw", "multipart"])
def test_the_upload_bound_holds_while_the_body_streams(server, form):
    """A chunked body (no Content-Length) is refused with 413 once it passes the limit, before the client has sent
    the rest of it."""
    big = bytes(2 * LIMITS.max_upload_bytes)
    if form == "raw":
        content_type, body = b"image/png", big
    else:
        content_type = b"multipart/form-data; boundary=XyZ"
        body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
                b"Content-Type: image/png\r\n\r\n" + big)
    sent = 0
    with socket.create_connection(server) as sock:
        sock.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: " + content_type +
                     b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in chunked(body):
            sock.sendall(piece)
            sent += len(piece)
            if select.select([sock], [], [], 0.01)[0]:
                break
        status, headers, payload = read_response(sock, timeout_s=10)
    assert status == 413 and json.loads(payload)["error"]["code"] == "payload_too_large", payload
    assert LIMITS.max_upload_bytes < sent < len(body), sent
