"""A distributed photo-feed site on scratch databases, for the online-resharding tests.

The config is deploy/distributed.toml's shape (S3, memcached, RabbitMQ, PostgreSQL
shards) with every name unique to the test: databases from ``scratch_database``, the
bucket, the exchange and the memcached namespaces. Argon2 runs cheap so sign-ups are
quick. The processes (gunicorn web, worker, scheduler) run from the repository root.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import e2e_harness as harness  # noqa: E402
from e2e_harness import Reply, free_port, png_bytes  # noqa: E402


def write_config(path: Path, shards: list[str], *, ledger: str, token: str) -> Path:
    """Write a distributed config on ``shards`` (database URLs) to ``path``."""
    listed = ", ".join(json.dumps(url) for url in shards)
    path.write_text(
        f"""
[deployment]
name = "reshard-{token}"
multi_node = true
data_dir = {json.dumps(str(path.parent / "data"))}

[blobs]
backend = "s3"
bucket = "scalecore-reshard-{token}"
endpoint_url = "http://127.0.0.1:25000"
region = "us-east-1"
access_key_id = "testing"
secret_access_key = "testing"
create_bucket = true

[sessions]
backend = "memcached"
servers = ["127.0.0.1:21211", "127.0.0.1:21212"]
namespace = "sess-{token}:"

[cache]
backend = "twotier"
servers = ["127.0.0.1:21211", "127.0.0.1:21212"]
namespace = "cache-{token}:"
local_ttl = 2.0

[bus]
backend = "rabbitmq"
url = "amqp://guest:guest@127.0.0.1:5672/%2F"
exchange = "scalecore-reshard-{token}"

[ledger]
backend = "sql"
url = {json.dumps(ledger)}
create_database = true

[database]
strategy = "jump"
create_databases = true
shards = [{listed}]

[photofeed]
repositories = "sql"
max_upload_bytes = 300000

[photofeed.password_hasher]
time_cost = 1
memory_cost = 8192

[web]
threads = 4
"""
    )
    return path


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "entrypoints.cli", *args]


def environment(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALECORE_")}
    env["SCALECORE_CONFIG"] = str(config)
    return env


def run(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


class Site:
    """gunicorn web (two workers), a worker and a scheduler, all on one config file."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.env = environment(config)
        self.port = free_port()
        self.logs: list[Path] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        parts = {
            "web": ("web", "--bind", f"127.0.0.1:{self.port}", "--workers", "2"),
            "worker": ("worker",),
            "scheduler": ("scheduler",),
        }
        for name, args in parts.items():
            log = workdir / f"{name}.log"
            self.logs.append(log)
            with log.open("wb") as handle:
                self.processes.append(
                    subprocess.Popen(
                        command(*args),
                        stdout=handle,
                        stderr=subprocess.STDOUT,
                        env=self.env,
                        cwd=ROOT,
                    )
                )
        deadline = time.monotonic() + 60
        while True:
            try:
                if Client(self.port).request("GET", "/readyz").status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the site did not start:\n{self.output()}")
            time.sleep(0.3)

    def output(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}" for log in self.logs
        )

    def alive(self) -> bool:
        return all(process.poll() is None for process in self.processes)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


class Client(harness.Client):
    """The e2e harness's client on a loopback port, asking for JSON."""

    def __init__(self, port: int) -> None:
        super().__init__(f"http://127.0.0.1:{port}")

    def request(self, method: str, path: str, **kwargs: Any) -> Reply:
        headers = {"Accept": "application/json", **(kwargs.pop("headers", None) or {})}
        return super().request(method, path, headers=headers, **kwargs)


def png(seed: int) -> bytes:
    """A small PNG whose colour depends on ``seed``."""
    return png_bytes(24, 16, (seed % 256, (seed // 256) % 256, 90))
