"""A distributed photo-feed site on scratch databases, for the online-resharding tests.

The config is deploy/distributed.toml's shape (S3, memcached, RabbitMQ, PostgreSQL
shards) with every name unique to the test: databases from ``scratch_database``, the
bucket, the exchange and the memcached namespaces. Argon2 runs cheap so sign-ups are
quick. The processes (gunicorn web, worker, scheduler) run from the repository root.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


class Reply:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """One user's cookie-keeping HTTP client (with the CSRF token once logged in)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.csrf: str | None = None

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        sent.setdefault("Accept", "application/json")
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if self.csrf and method not in ("GET", "HEAD"):
            sent["X-CSRF-Token"] = self.csrf
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, value = header.split(";", 1)[0].partition("=")
            self.cookies[name.strip()] = value.strip()
        return Reply(response.status, response.headers, data)

    def post_json(self, path: str, payload: Any) -> Reply:
        return self.request(
            "POST",
            path,
            body=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )

    def log_in(self, username: str) -> Reply:
        reply = self.post_json("/api/session", {"username": username, "password": "correct horse"})
        if reply.status == 200:
            self.csrf = reply.json()["csrf_token"]
        return reply

    def upload(self, data: bytes, caption: str) -> Reply:
        boundary = "scalecore" + secrets.token_hex(8)
        body = (
            (
                f"--{boundary}\r\nContent-Disposition: form-data; "
                f'name="caption"\r\n\r\n{caption}\r\n'
                f"--{boundary}\r\nContent-Disposition: form-data; "
                f'name="photo"; filename="p.png"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        return self.request(
            "POST",
            "/api/photos",
            body=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )


def png(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (24, 16), (seed % 256, (seed // 256) % 256, 90)).save(out, format="PNG")
    return out.getvalue()
