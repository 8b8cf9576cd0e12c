"""``scalecore run`` stops promptly on SIGTERM while it is busy: idle keep-alive
connections open (what a load generator leaves behind), requests in flight, uploads being
fanned out on the bus. It exits with status 0 within a few seconds, not at the harness's
kill timeout."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from e2e_harness import Client, png_bytes, start_embedded

pytestmark = [pytest.mark.e2e]

#: Seconds a busy ``scalecore run`` may take from SIGTERM to its exit.
PROMPT = 5.0


def test_run_exits_promptly_on_sigterm_with_keep_alive_connections_and_load(
    tmp_path: Path,
) -> None:
    deployment = start_embedded(tmp_path)
    process = deployment.processes[0]
    split = urlsplit(deployment.base_url)
    address = (split.hostname or "127.0.0.1", split.port or 80)
    idle: list[socket.socket] = []
    stop_load = threading.Event()
    loaders: list[threading.Thread] = []
    try:
        author = Client(deployment.base_url)
        assert author.sign_up("stopping_author").status == 201
        assert author.log_in("stopping_author").status == 200
        for index in range(3):
            follower = Client(deployment.base_url)
            assert follower.sign_up(f"stopping_fan{index}").status == 201
            assert follower.log_in(f"stopping_fan{index}").status == 200
            assert follower.request("PUT", "/api/following/stopping_author").status == 204
        for _ in range(40):
            sock = socket.create_connection(address, timeout=5)
            idle.append(sock)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")

        image = png_bytes(64, 48)

        def upload() -> None:
            while not stop_load.is_set():
                try:
                    author.upload(image, caption="fanned out while stopping")
                except OSError:
                    return  # the server stopped

        def browse() -> None:
            reader = Client(deployment.base_url)
            while not stop_load.is_set():
                try:
                    reader.get("/api/users/stopping_author")
                except OSError:
                    return

        loaders = [threading.Thread(target=upload), threading.Thread(target=browse)]
        for loader in loaders:
            loader.start()
        time.sleep(1.5)  # uploads published, fan-out running, requests in flight

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(PROMPT + 10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no exit within {PROMPT + 10:.0f} s of SIGTERM:\n{deployment.output()}")
        took = time.monotonic() - started
    finally:
        stop_load.set()
        for loader in loaders:
            loader.join(10)
        for sock in idle:
            sock.close()
        deployment.stop()
    output = deployment.output()
    assert code == 0, output
    assert took < PROMPT, f"{took:.1f} s from SIGTERM to exit:\n{output}"
    assert "received SIGTERM: stopping" in output
    assert "scalecore: stopped" in output
    assert "did not stop within" not in output, output
    assert "Traceback" not in output, output
