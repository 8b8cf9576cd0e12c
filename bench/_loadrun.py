"""Start scalecore deployments on loopback and load them with ``scalecore loadtest``.

Shared by the benchmarks that measure whole deployments (``bench.run_server``,
``bench.scaling``). Every process is started here and stopped here (SIGTERM, then a kill
after a timeout); every load run is bounded by ``--duration``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTED = ROOT / "deploy" / "distributed.toml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scalecore(*args: str) -> list[str]:
    return [sys.executable, "-m", "entrypoints.cli", *args]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALECORE_")}
    env.update(extra)
    return env


def _wait_healthy(url: str, processes: Sequence[subprocess.Popen[bytes]], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            raise RuntimeError(f"a process exited while starting:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become healthy:\n{log.read_text()[-3000:]}")


def _stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _descendants(roots: Sequence[int]) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found = set(roots)
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def cpu_seconds(roots: Sequence[int]) -> float:
    """User + system CPU seconds used so far by ``roots`` and their live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in _descendants(roots):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


class Site(str):
    """A deployment's base URL, and the process ids serving it."""

    pids: list[int]


@contextmanager
def deployment(
    kind: str,
    workdir: Path,
    *,
    workers: int = 1,
    server: str = "waitress",
    env_extra: dict[str, str] | None = None,
) -> Iterator[str]:
    """A running deployment; yields its base URL.

    ``embedded-run``: ``scalecore run --server SERVER`` on the embedded defaults in
    ``workdir``. ``embedded-web``: ``scalecore web --workers N`` on the same SQLite files
    plus a ``scalecore worker`` (in-process bus: fan-out happens in the web process). And
    ``distributed``: ``scalecore web --workers N`` + worker + scheduler on
    deploy/distributed.toml.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / f"{kind}-{workers}-{server}.log"
    handle = log.open("ab")
    processes: list[subprocess.Popen[bytes]] = []
    extra = dict(env_extra or {})
    try:
        if kind == "embedded-run":
            config = workdir / "scalecore.toml"
            config.write_text(f'[deployment]\ndata_dir = "{workdir / "data"}"\n')
            env = clean_env(**extra)
            args = scalecore("run", "--config", str(config), "--port", str(port))
            processes.append(
                subprocess.Popen([*args, "--server", server], stdout=handle, stderr=handle, env=env)
            )
        elif kind in ("embedded-web", "distributed"):
            if kind == "embedded-web":
                config = workdir / "scalecore.toml"
                config.write_text(f'[deployment]\ndata_dir = "{workdir / "data"}"\n')
                env = clean_env(SCALECORE_CONFIG=str(config), **extra)
            else:
                env = clean_env(
                    SCALECORE_CONFIG=str(DISTRIBUTED),
                    SCALECORE_DEPLOYMENT__DATA_DIR=str(workdir / "data"),
                    **extra,
                )
            subprocess.run(
                scalecore("db", "init"), env=env, stdout=handle, stderr=handle, check=True
            )
            web = scalecore("web", "--bind", f"127.0.0.1:{port}", "--workers", str(workers))
            processes.append(subprocess.Popen(web, stdout=handle, stderr=handle, env=env))
            if kind == "distributed":
                for part in ("worker", "scheduler"):
                    processes.append(
                        subprocess.Popen(scalecore(part), stdout=handle, stderr=handle, env=env)
                    )
        else:
            raise ValueError(kind)
        site = Site(f"http://127.0.0.1:{port}")
        site.pids = [p.pid for p in processes]
        _wait_healthy(site, processes, log)
        yield site
    finally:
        _stop(processes)
        handle.close()


def loadtest(
    url: str, report: Path, *, users: int, duration: str, **options: Any
) -> dict[str, Any]:
    """Run ``scalecore loadtest`` against ``url``; return its report.json."""
    args = ["--target", url, "--users", str(users), "--duration", duration]
    args += ["--report", str(report), "--max-error-rate", "1"]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(scalecore("loadtest", *args), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"loadtest failed:\n{done.stdout}\n{done.stderr}")
    return dict(json.loads((report / "report.json").read_text()))


def scratch(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
