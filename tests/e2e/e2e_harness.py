"""The e2e harness: deployments to test, a small HTTP client, images, polling.

``deployment`` is a running scalecore, started as real processes and stopped (SIGTERM,
then checked for a clean exit) after the session. Which deployment is chosen by name:
``SCALECORE_E2E_TARGETS`` lists them (comma-separated; default ``embedded,distributed``:
``scalecore run`` on the embedded defaults, and gunicorn web + worker + scheduler from
``deploy/distributed.toml``), and every e2e test runs once against each. A target is a
function in :data:`TARGETS` taking a temp directory and returning a :class:`Deployment`
that answers /healthz. A deployment must set ``[photofeed] max_upload_bytes`` to
:data:`MAX_UPLOAD_BYTES` and be stoppable by SIGTERM with exit status 0.

A server that does not come up fails the tests (never skips), with its output.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: ``[photofeed] max_upload_bytes`` of every deployment under test: small, so the 413
#: paths are quick to reach. A starter must configure it.
MAX_UPLOAD_BYTES = 300_000
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


# --------------------------------------------------------------------------- deployments


class Deployment:
    """Processes serving one scalecore site at ``base_url``, and how to stop them."""

    def __init__(
        self,
        name: str,
        base_url: str,
        processes: list[subprocess.Popen[bytes]],
        logs: list[Path],
        data_dir: Path,
    ) -> None:
        self.name = name
        self.base_url = base_url
        self.processes = processes
        self.logs = logs
        self.data_dir = data_dir

    def output(self) -> str:
        """Everything the processes printed so far (for failure messages)."""
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')}" for log in self.logs)

    def stop(self) -> list[int | None]:
        """SIGTERM every process, wait for each, kill what hangs; return the exit codes."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for process in self.processes:
            try:
                codes.append(process.wait(STOP_TIMEOUT))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
                codes.append(None)
        return codes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_healthy(deployment: Deployment, timeout: float = START_TIMEOUT) -> None:
    """Poll /healthz until it answers 200; fail with the processes' output otherwise."""
    deadline = time.monotonic() + timeout
    split = urlsplit(deployment.base_url)
    while time.monotonic() < deadline:
        for process in deployment.processes:
            if process.poll() is not None:
                pytest.fail(
                    f"the {deployment.name} deployment exited with {process.returncode} while "
                    f"starting:\n{deployment.output()}",
                    pytrace=False,
                )
        try:
            connection = http.client.HTTPConnection(split.hostname, split.port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.1)
    deployment.stop()
    pytest.fail(
        f"the {deployment.name} deployment did not answer /healthz within {timeout:.0f}s:\n"
        f"{deployment.output()}",
        pytrace=False,
    )


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def start_embedded(
    workdir: Path, *, extra_config: str = "", env: dict[str, str] | None = None
) -> Deployment:
    """``scalecore run`` on the embedded defaults in a temp data_dir: one process.

    ``extra_config`` is appended to its config file (tables other than ``[deployment]``
    and ``[photofeed]``); ``env`` adds ``SCALECORE_*`` overrides. Started again on the same
    ``workdir``, it serves the same data.
    """
    data_dir = workdir / "data"
    config = workdir / "scalecore.toml"
    config.write_text(
        f'[deployment]\ndata_dir = "{data_dir}"\n\n'
        f"[photofeed]\nmax_upload_bytes = {MAX_UPLOAD_BYTES}\n{extra_config}"
    )
    port = free_port()
    log = workdir / "run.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALECORE_")} | (env or {})
    process = _spawn(
        [
            sys.executable,
            "-m",
            "entrypoints.cli",
            "run",
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        log,
        env,
    )
    deployment = Deployment("embedded", f"http://127.0.0.1:{port}", [process], [log], data_dir)
    wait_until_healthy(deployment)
    return deployment


#: The distributed deployment's config: every port on a shared server on loopback.
DISTRIBUTED_CONFIG = ROOT / "deploy" / "distributed.toml"


def distributed_env(workdir: Path) -> dict[str, str]:
    """The environment of a distributed process: the config file, plus the e2e upload limit
    and a scratch data_dir (the config keeps no shared state there)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALECORE_")}
    env["SCALECORE_CONFIG"] = str(DISTRIBUTED_CONFIG)
    env["SCALECORE_PHOTOFEED__MAX_UPLOAD_BYTES"] = str(MAX_UPLOAD_BYTES)
    env["SCALECORE_DEPLOYMENT__DATA_DIR"] = str(workdir / "data")
    return env


def scalecore_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "entrypoints.cli", *args]


def init_distributed(workdir: Path) -> dict[str, str]:
    """Create the distributed deployment's databases and tables; return its environment."""
    env = distributed_env(workdir)
    done = subprocess.run(
        scalecore_command("db", "init"), env=env, cwd=ROOT, capture_output=True, timeout=120
    )
    if done.returncode != 0:
        pytest.fail(f"scalecore db init failed:\n{done.stdout.decode()}{done.stderr.decode()}")
    return env


def start_web(workdir: Path, env: dict[str, str], name: str, workers: int) -> Deployment:
    """One ``scalecore web`` (gunicorn with ``workers`` processes) on a free port."""
    port = free_port()
    log = workdir / f"{name}.log"
    args = scalecore_command("web", "--bind", f"127.0.0.1:{port}", "--workers", str(workers))
    process = _spawn(args, log, env)
    deployment = Deployment(name, f"http://127.0.0.1:{port}", [process], [log], workdir / "data")
    wait_until_healthy(deployment, timeout=60)
    return deployment


def spawn_part(
    workdir: Path, env: dict[str, str], name: str, *args: str
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``scalecore ARGS...`` with its output in ``workdir/NAME.log``; not waited for."""
    log = workdir / f"{name}.log"
    return _spawn(scalecore_command(*args), log, env), log


def start_distributed(workdir: Path) -> Deployment:
    """deploy/distributed.toml as separate processes: gunicorn web with three workers, a
    feed worker and a scheduler, over S3, memcached, RabbitMQ and PostgreSQL shards."""
    env = init_distributed(workdir)
    web = start_web(workdir, env, "web", workers=3)
    for part in ("worker", "scheduler"):
        log = workdir / f"{part}.log"
        web.processes.append(_spawn(scalecore_command(part), log, env))
        web.logs.append(log)
    web.name = "distributed"
    wait_until_healthy(web, timeout=60)
    # Ready once each part says so (its signal handlers are installed by then, so a stop
    # right away is still a clean one).
    for part, log in zip(("worker", "scheduler"), web.logs[1:], strict=True):
        deadline = time.monotonic() + START_TIMEOUT
        while f"scalecore {part}: " not in log.read_text(errors="replace"):
            if time.monotonic() > deadline or any(p.poll() is not None for p in web.processes):
                web.stop()
                pytest.fail(f"scalecore {part} did not start:\n{web.output()}", pytrace=False)
            time.sleep(0.1)
    return web


#: Deployment name -> starter. The e2e suite runs against each name in SCALECORE_E2E_TARGETS.
TARGETS: dict[str, Callable[[Path], Deployment]] = {
    "embedded": start_embedded,
    "distributed": start_distributed,
}


def target_names() -> list[str]:
    default = "embedded,distributed"
    names = [n.strip() for n in os.environ.get("SCALECORE_E2E_TARGETS", default).split(",")]
    return [n for n in names if n]


# --------------------------------------------------------------------------- HTTP


class Reply:
    """One HTTP response, read whole."""

    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_code(self) -> str:
        body = self.json()
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"code", "message"}, body
        return str(body["error"]["code"])

    def __repr__(self) -> str:
        return f"<Reply {self.status} {self.body[:200]!r}>"


class Client:
    """A cookie-keeping HTTP client over http.client: never follows redirects, never
    raises for a 4xx or 5xx, and sends the CSRF token once it has one."""

    def __init__(self, base_url: str) -> None:
        split = urlsplit(base_url)
        self.host = split.hostname or "127.0.0.1"
        self.port = split.port or 80
        self.cookies: dict[str, str] = {}
        self.csrf: str | None = None

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
        csrf: bool = True,
    ) -> Reply:
        sent = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            sent.setdefault("Content-Type", "application/json")
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if csrf and self.csrf and method not in ("GET", "HEAD"):
            sent.setdefault("X-CSRF-Token", self.csrf)
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        for header in response.headers.get_all("Set-Cookie") or []:
            pair = header.split(";", 1)[0]
            name, _, value = pair.partition("=")
            if "max-age=0" in header.lower() or "expires=thu, 01 jan 1970" in header.lower():
                self.cookies.pop(name.strip(), None)
            else:
                self.cookies[name.strip()] = value.strip()
        return Reply(response.status, response.headers, data)

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post_json(self, path: str, payload: Any, **kwargs: Any) -> Reply:
        return self.request("POST", path, json_body=payload, **kwargs)

    def sign_up(self, username: str, password: str = "correct horse") -> Reply:
        return self.post_json("/api/users", {"username": username, "password": password})

    def log_in(self, username: str, password: str = "correct horse") -> Reply:
        reply = self.post_json("/api/session", {"username": username, "password": password})
        if reply.status == 200:
            self.csrf = reply.json()["csrf_token"]
        return reply

    def upload(
        self,
        data: bytes,
        *,
        caption: str = "",
        filename: str = "p.png",
        content_type: str = "image/png",
        field: str = "photo",
    ) -> Reply:
        body, ctype = multipart({"caption": caption}, {field: (filename, content_type, data)})
        return self.request("POST", "/api/photos", body=body, headers={"Content-Type": ctype})


def multipart(
    fields: dict[str, str], files: dict[str, tuple[str, str, bytes]]
) -> tuple[bytes, str]:
    """Encode a multipart/form-data body; return it and its Content-Type."""
    boundary = "scalecore" + secrets.token_hex(12)
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode() + b"\r\n")
    for name, (filename, ctype, data) in files.items():
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'.encode()
        )
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


# --------------------------------------------------------------------------- images


def png_bytes(
    width: int = 640, height: int = 480, color: tuple[int, int, int] = (200, 40, 90)
) -> bytes:
    """A real PNG image of the given size and colour."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def poll(check: Callable[[], Any], *, timeout: float = 15.0, interval: float = 0.2) -> Any:
    """Call ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s (last: {result!r})", pytrace=False)
        time.sleep(interval)
