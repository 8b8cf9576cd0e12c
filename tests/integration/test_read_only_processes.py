"""Read-only mode in the processes: nothing but the web app's reads runs.

``scalecore run`` in read-only mode leaves an unsent outbox event unsent and claims no cron
slot (the same data served writable relays it and claims slots: the control), and
``scalecore worker`` and ``scalecore scheduler`` stand by, serving only their ops endpoints,
until SIGTERM.
"""

from __future__ import annotations

import http.client
import io
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest
from PIL import Image

from entrypoints.container import close_adapters, create_container, create_tables
from entrypoints.photofeed.config import load_settings
from scalecore.ids import IdGenerator, shard_of
from scalecore.photofeed.events import TOPIC_PHOTO_UPLOADED

READ_ONLY = {"SCALECORE_DEPLOYMENT__READ_ONLY": "true"}
CONFIG = """
[photofeed.password_hasher]
time_cost = 1
memory_cost = 8
parallelism = 1
"""


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "scalecore.toml"
    path.write_text(f'[deployment]\ndata_dir = "{tmp_path / "data"}"\n{CONFIG}')
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SCALECORE_")}
    return subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**clean, **(env or {})},
    )


def get(port: int, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def wait_healthy(port: int, process: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"exited with {process.returncode}:\n{process.communicate()[0]}")
        try:
            if get(port, "/healthz") == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"no /healthz within {timeout}s:\n{process.communicate()[0]}")


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out
    assert "Traceback" not in out
    return out


def unsent_event(path: Path) -> None:
    """A photo whose "uploaded" event is committed but not yet relayed (as after a crash
    between the commit and the relay)."""
    container = create_container(load_settings(path, environ={}))
    try:
        create_tables(container)
        service = container.photofeed()
        owner = service.sign_up("ada", "password123")
        buffer = io.BytesIO()
        Image.new("RGB", (32, 24), "red").save(buffer, format="PNG")
        uploaded = service.upload_photo(owner.id, io.BytesIO(buffer.getvalue()))
        ids = IdGenerator(container.clock())
        photo = attrs.evolve(uploaded, id=ids.new(shard_of(owner.id)), caption="unsent")
        event = service._event(TOPIC_PHOTO_UPLOADED, photo, occurred_at=photo.created_at)
        service.photos.add(photo, event)
        assert service.outbox.pending_count() == 1
    finally:
        close_adapters(container)


def pending(path: Path) -> int:
    container = create_container(load_settings(path, environ={}))
    try:
        return int(container.photofeed().outbox.pending_count())
    finally:
        close_adapters(container)


def claimed_slots(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "ledger.db") as db:
        return int(db.execute("SELECT count(*) FROM scalecore_job_ledger").fetchone()[0])


def serve_a_while(path: Path, env: dict[str, str] | None, seconds: float) -> str:
    port = free_port()
    process = spawn("run", "--config", str(path), "--port", str(port), env=env)
    try:
        wait_healthy(port, process)
        assert get(port, "/readyz") == 200
        assert get(port, "/users/ada") == 200
        time.sleep(seconds)  # the relay polls every second, the scheduler passes every second
    finally:
        out = stop(process)
    return out


def test_run_read_only_relays_nothing_and_claims_no_slot(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    unsent_event(path)
    before = claimed_slots(tmp_path / "data")

    out = serve_a_while(path, READ_ONLY, 2.5)
    assert "read-only" in out
    assert "the feed worker, the outbox relay and the cron jobs stand by" in out
    assert pending(path) == 1
    assert claimed_slots(tmp_path / "data") == before

    # Control: the same data served writable relays the event and claims slots.
    serve_a_while(path, None, 2.5)
    assert pending(path) == 0
    assert claimed_slots(tmp_path / "data") > before


@pytest.mark.parametrize(
    ("command", "parts"),
    [
        ("worker", "the feed worker (no consuming) and the outbox relay stand by"),
        ("scheduler", "the cron jobs (no slot claimed) stand by"),
    ],
)
def test_worker_and_scheduler_stand_by(tmp_path: Path, command: str, parts: str) -> None:
    port = free_port()
    process = spawn(
        command,
        "--config",
        str(config_file(tmp_path)),
        "--metrics-bind",
        f"127.0.0.1:{port}",
        env=READ_ONLY,
    )
    try:
        wait_healthy(port, process)
        assert get(port, "/readyz") == 200
        assert get(port, "/metrics") == 200
        time.sleep(1.5)
        assert process.poll() is None  # standing by, not exited (a supervisor would loop)
    finally:
        out = stop(process)
    assert f"scalecore {command}: read-only deployment, standing by until stopped" in out
    assert f"read-only deployment ([deployment] read_only = true): {parts}" in out
    assert f"scalecore {command}: stopped" in out
