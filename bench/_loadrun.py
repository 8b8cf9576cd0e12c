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

from bench._common import load_average

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTED = ROOT / "deploy" / "distributed.toml"


def _local_cache(toml: str) -> str:
    """``toml`` with its ``[cache]`` table replaced by the per-process memory cache."""
    head, _, rest = toml.partition("\n[cache]\n")
    _, _, tail = rest.partition("\n[")
    # multi_node refuses a per-process cache; this variant measures exactly that setup.
    head = head.replace("multi_node = true", "multi_node = false")
    return f'{head}\n[cache]\nbackend = "memory"\nnamespace = "cache:"\n\n[{tail}'


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


def pinned(cpus: set[int] | None) -> Any:
    """A ``preexec_fn`` that confines a child process (and its children) to ``cpus``;
    None leaves it free to run on any core."""
    if not cpus:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin


def split_cpus() -> tuple[set[int], set[int]] | None:
    """(site CPUs, load-generator CPUs) on a box of 2 or more cores: the load generator on
    CPU 0, the site on the others, so the two do not take turns on the same core."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    return set(cores[1:]), {cores[0]}


@contextmanager
def deployment(
    kind: str,
    workdir: Path,
    *,
    workers: int = 1,
    server: str = "waitress",
    env_extra: dict[str, str] | None = None,
    local_cache: bool = False,
    cpus: set[int] | None = None,
) -> Iterator[str]:
    """A running deployment; yields its base URL.

    ``embedded-run``: ``scalecore run --server SERVER`` on the embedded defaults in
    ``workdir``. ``embedded-web``: ``scalecore web --workers N`` on the same SQLite files
    plus a ``scalecore worker`` (in-process bus: fan-out happens in the web process). And
    ``distributed``: ``scalecore web --workers N`` + worker + scheduler on
    deploy/distributed.toml (with ``local_cache``, a copy whose ``[cache]`` is the
    per-process ``memory`` backend: no shared cache). ``cpus``: the cores every process of
    the site may run on (None: any).
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
                subprocess.Popen(
                    [*args, "--server", server],
                    stdout=handle,
                    stderr=handle,
                    env=env,
                    preexec_fn=pinned(cpus),
                )
            )
        elif kind in ("embedded-web", "distributed"):
            if kind == "embedded-web":
                config = workdir / "scalecore.toml"
                config.write_text(f'[deployment]\ndata_dir = "{workdir / "data"}"\n')
                env = clean_env(SCALECORE_CONFIG=str(config), **extra)
            else:
                config = DISTRIBUTED
                if local_cache:
                    config = workdir / "distributed-local-cache.toml"
                    config.write_text(_local_cache(DISTRIBUTED.read_text()))
                env = clean_env(
                    SCALECORE_CONFIG=str(config),
                    SCALECORE_DEPLOYMENT__DATA_DIR=str(workdir / "data"),
                    **extra,
                )
            subprocess.run(
                scalecore("db", "init"), env=env, stdout=handle, stderr=handle, check=True
            )
            web = scalecore("web", "--bind", f"127.0.0.1:{port}", "--workers", str(workers))
            processes.append(
                subprocess.Popen(
                    web, stdout=handle, stderr=handle, env=env, preexec_fn=pinned(cpus)
                )
            )
            if kind == "distributed":
                for part in ("worker", "scheduler"):
                    processes.append(
                        subprocess.Popen(
                            scalecore(part),
                            stdout=handle,
                            stderr=handle,
                            env=env,
                            preexec_fn=pinned(cpus),
                        )
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
    site: str,
    report: Path,
    *,
    users: int,
    duration: str,
    cpus: set[int] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run ``scalecore loadtest`` against ``site``; return its report.json.

    When ``site`` is a :class:`Site`, the CPU seconds its processes spent during the load
    phase (from the line announcing the users until the summary line, so seeding is left
    out) are added to the report as ``deployment.cpu_seconds``, which ``scalecore
    capacity`` prefers to a core count, with the wall seconds of that phase
    (``deployment.load_seconds``). ``cpus``: the cores the load generator may use.
    """
    args = ["--target", str(site), "--users", str(users), "--duration", duration]
    args += ["--report", str(report), "--max-error-rate", "1"]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    pids = getattr(site, "pids", None)
    process = subprocess.Popen(
        scalecore("loadtest", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # lines as they happen
        preexec_fn=pinned(cpus),
    )
    assert process.stdout is not None
    output: list[str] = []
    cpu_start = cpu_end = None
    wall_start = wall_end = 0.0
    for line in process.stdout:
        output.append(line)
        if pids and cpu_start is None and " users at " in line:
            cpu_start, wall_start = cpu_seconds(pids), time.monotonic()
        elif pids and cpu_start is not None and cpu_end is None and " requests, " in line:
            cpu_end, wall_end = cpu_seconds(pids), time.monotonic()
    if process.wait() != 0:
        raise RuntimeError("loadtest failed:\n" + "".join(output))
    data = dict(json.loads((report / "report.json").read_text()))
    if cpu_start is not None and cpu_end is not None:
        data["deployment"] = {
            "cpu_seconds": round(cpu_end - cpu_start, 2),
            "load_seconds": round(wall_end - wall_start, 2),
        }
        (report / "report.json").write_text(json.dumps(data, indent=2) + "\n")
    return data


def pin_cpus(pin: bool) -> tuple[set[int] | None, set[int] | None, str]:
    """The CPUs of the site and of the load generator (None: any) and a line saying so,
    printed with the load average; unpinned when ``pin`` is false or the box cannot split."""
    split = split_cpus() if pin else None
    site_cpus, load_cpus = split if split else (None, None)
    where = (
        f"site on CPU {sorted(site_cpus)}, load generator on CPU {sorted(load_cpus)}"
        if site_cpus and load_cpus
        else "site and load generator on any core"
    )
    print(f"{where}; {load_average()}", flush=True)
    return site_cpus, load_cpus, where


def scratch(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
