"""How ``scalecore run``'s waitress stops: idle keep-alive connections do not hold it up,
requests in flight finish, and one that does not is cut at the stop timeout."""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from entrypoints.serving import CLOSE_GRACE, WaitressServer


def make_app(release: threading.Event) -> Callable[..., list[bytes]]:
    """An app answering "ok"; on /slow only once ``release`` is set."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/slow":
            release.wait(30)
        body = b"ok"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [body]

    return app


class Running:
    """A WaitressServer serving in a thread, and the event that lets /slow end."""

    def __init__(
        self, server: WaitressServer, thread: threading.Thread, release: threading.Event
    ) -> None:
        self.server = server
        self.thread = thread
        self.port = int(server.server_address[1])
        self.release = release

    def shutdown(self, timeout: float) -> tuple[bool, float]:
        started = time.monotonic()
        drained = self.server.shutdown(timeout)
        return drained, time.monotonic() - started


@pytest.fixture
def running() -> Iterator[Running]:
    release = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    server = WaitressServer(
        make_app(release), listener, threads=2, stop_timeout=10.0, max_body=1000
    )
    thread = threading.Thread(target=server.serve_forever, name="web", daemon=True)
    thread.start()
    yield Running(server, thread, release)
    release.set()
    if thread.is_alive():
        server.shutdown(1.0)
    thread.join(5)


def get(sock: socket.socket, path: str) -> bytes:
    """GET ``path`` over a kept-alive connection; return the raw answer."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    answer = b""
    while not answer.endswith(b"ok"):
        data = sock.recv(65536)
        if not data:
            break
        answer += data
    return answer


def test_idle_keep_alive_connections_are_closed_at_once(running: Running) -> None:
    sockets = [socket.create_connection(("127.0.0.1", running.port), timeout=5) for _ in range(30)]
    try:
        for sock in sockets:
            assert get(sock, "/").startswith(b"HTTP/1.1 200")
        drained, took = running.shutdown(10.0)
        assert drained
        assert took < 2, took
        for sock in sockets:
            assert sock.recv(10) == b""  # closed by the server
    finally:
        for sock in sockets:
            sock.close()
    running.thread.join(2)
    assert not running.thread.is_alive()


def test_a_request_in_flight_finishes_before_the_stop(running: Running) -> None:
    answers: list[int] = []

    def slow() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
        connection.request("GET", "/slow")
        answers.append(connection.getresponse().status)
        connection.close()

    client = threading.Thread(target=slow)
    client.start()
    time.sleep(0.3)  # the request is in the app now
    threading.Timer(0.5, running.release.set).start()
    drained, took = running.shutdown(10.0)
    client.join(5)
    assert drained
    assert answers == [200]
    assert 0.3 < took < 5, took


def test_a_request_that_does_not_finish_is_cut_at_the_stop_timeout(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.3)  # the request is in the app now, and stays there
        drained, took = running.shutdown(1.0)
        assert not drained
        # One deadline for the whole stop (and the grace to close), not one per phase.
        assert 0.9 < took < 1.0 + CLOSE_GRACE + 0.5, took
        assert sock.recv(10) == b""  # its connection is closed
    assert "requests still in flight after the 1.0 s stop timeout" in caplog.text
    running.thread.join(2)
    assert not running.thread.is_alive()
