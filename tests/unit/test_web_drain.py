"""DrainRequestBody over a real threaded WSGI server and raw sockets: a client still sending
a body the app refused unread gets the answer, not a reset; limits hold."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.serving import make_server

from entrypoints.web.drain import DrainRequestBody


def refuse_unread(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """An app that answers 413 without reading a byte of the body."""
    body = b'{"error": {"code": "too_large", "message": "at most 1 KiB"}}'
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    start_response("413 Content Too Large", headers)
    return [body]


@pytest.fixture
def server() -> Iterator[int]:
    app = DrainRequestBody(refuse_unread, max_bytes=4_000_000, max_seconds=10, idle_seconds=0.5)
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_port
    httpd.shutdown()
    httpd.server_close()


def post(port: int, length: int, sent: int, *, timeout: float = 10) -> bytes:
    """POST a body of ``length`` bytes, sending ``sent`` of them; return the raw answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(
            b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\n"
            + f"Content-Length: {length}\r\n\r\n".encode()
        )
        chunk = b"\0" * 65536
        left = sent
        while left > 0:
            sock.sendall(chunk[: min(left, len(chunk))])  # a reset would raise here
            left -= min(left, len(chunk))
        answer = b""
        while True:
            data = sock.recv(65536)
            if not data:
                return answer
            answer += data
            if answer.endswith(b"}"):
                return answer


def test_a_client_still_sending_gets_the_answer(server: int) -> None:
    answer = post(server, 3_000_000, 3_000_000)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert b'"too_large"' in answer


def test_a_body_over_the_bound_is_answered_with_connection_close(server: int) -> None:
    answer = post(server, 50_000_000, 0)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert b"Connection: close" in answer


def test_a_silent_client_is_answered_after_the_idle_bound(server: int) -> None:
    started = time.monotonic()
    answer = post(server, 1_000_000, 1000)  # the headers and a little, then nothing
    took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert b"Connection: close" in answer
    assert 0.4 < took < 5, took
