"""A distributed photo-feed site on scratch databases, for the online-resharding tests.

The config is deploy/distributed.toml's shape (S3, memcached, RabbitMQ, PostgreSQL
shards) with every name unique to the test: databases from ``scratch_database``, the
bucket, the exchange and the memcached namespaces. Argon2 runs cheap so sign-ups are
quick. The processes (gunicorn web, worker, scheduler) run from the repository root.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from adapters.sql.layout import moves_table
from scalecore.ids import logical_shard_for, shard_of

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import e2e_harness as harness  # noqa: E402
from e2e_harness import Reply, free_port, png_bytes  # noqa: E402


def write_config(
    path: Path,
    shards: list[str],
    *,
    ledger: str,
    token: str,
    stores: dict[str, list[str]] | None = None,
) -> Path:
    """Write a distributed config on ``shards`` (database URLs) to ``path``; ``stores``
    gives logical stores databases of their own (``[database.stores.<name>]``)."""
    listed = ", ".join(json.dumps(url) for url in shards)
    own = "".join(
        f"\n[database.stores.{name}]\nshards = [{', '.join(json.dumps(u) for u in urls)}]\n"
        for name, urls in (stores or {}).items()
    )
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
{own}
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


#: Bound of the load: no thread runs longer than this (seconds).
LOAD_LIMIT = 200.0


class Load:
    """Writer and reader threads against the site; every request's outcome is kept."""

    def __init__(self, port: int, users: dict[str, str]) -> None:
        self.port = port
        self.users = dict(users)  # username -> id, successful sign-ups
        self.photos: dict[str, str] = {}  # photo id -> owner username
        self.uploaded_at: dict[str, float] = {}  # photo id -> when its upload began
        # (follower, followee) -> when the first successful follow request ended
        self.followed_at: dict[tuple[str, str], float] = {}
        self.seen_photos: dict[str, str] = {}  # photo id -> owner, as readers saw them
        self.ops: dict[tuple[str, str], list[tuple[str, bool]]] = defaultdict(list)
        self.attempted_users: set[str] = set()
        self.failures: list[tuple[str, int, str]] = []
        self.wrong: list[str] = []
        self.requests = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def record(self, kind: str, reply: Any) -> bool:
        with self.lock:
            self.requests += 1
            if 200 <= reply.status < 300:
                return True
            self.failures.append(
                (kind, reply.status, reply.headers.get("Retry-After") or "", reply.body[:200])
            )
            return False

    def start(self) -> None:
        names = sorted(self.users)
        halves = [names[0::2], names[1::2]]
        targets: list[Callable[[], None]] = [
            self._signer,
            lambda: self._actor(halves[0], 1),
            lambda: self._actor(halves[1], 2),
            self._reader,
        ]
        for target in targets:
            thread = threading.Thread(target=self._bounded, args=(target,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _bounded(self, target: Callable[[], None]) -> None:
        try:
            target()
        except Exception as exc:  # a crash of the load is a test failure, reported below
            with self.lock:
                self.wrong.append(f"load thread crashed: {exc!r}")

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def _running(self, began: float) -> bool:
        return not self.stop.is_set() and time.monotonic() - began < LOAD_LIMIT

    def _signer(self) -> None:
        began, index = time.monotonic(), 0
        client = Client(self.port)
        while self._running(began):
            name = f"late{index}"
            index += 1
            with self.lock:
                self.attempted_users.add(name)
            reply = client.post_json("/api/users", {"username": name, "password": "correct horse"})
            if self.record("sign-up", reply):
                with self.lock:
                    self.users[name] = reply.json()["id"]
            time.sleep(0.05)

    def _actor(self, mine: list[str], seed: int) -> None:
        rng = random.Random(seed)
        clients: dict[str, Client] = {}
        everyone = sorted(self.users)
        began = time.monotonic()
        while self._running(began):
            name = rng.choice(mine)
            client = clients.get(name)
            if client is None:
                client = Client(self.port)
                if not self.record("log-in", client.log_in(name)):
                    continue
                clients[name] = client
            roll = rng.random()
            if roll < 0.25:
                began_upload = time.monotonic()
                reply = client.upload(png(rng.randrange(1 << 16)), caption=f"by {name}")
                if self.record("upload", reply):
                    with self.lock:
                        self.photos[reply.json()["id"]] = name
                        self.uploaded_at[reply.json()["id"]] = began_upload
            else:
                other = rng.choice(everyone)
                if other == name:
                    continue
                verb = "follow" if roll < 0.7 else "unfollow"
                method = "PUT" if verb == "follow" else "DELETE"
                ok = self.record(verb, client.request(method, f"/api/following/{other}"))
                with self.lock:
                    self.ops[(name, other)].append((verb, ok))
                    if ok and verb == "follow":
                        self.followed_at.setdefault((name, other), time.monotonic())
            time.sleep(0.02)

    def _reader(self) -> None:
        rng = random.Random(3)
        began = time.monotonic()
        viewer = Client(self.port)
        viewer_name = sorted(self.users)[0]
        viewer.log_in(viewer_name)
        while self._running(began):
            with self.lock:
                name, user_id = rng.choice(sorted(self.users.items()))
            reply = viewer.request("GET", f"/api/users/{name}")
            if self.record("profile", reply):
                body = reply.json()
                if body["username"] != name or body["id"] != user_id:
                    self.wrong.append(f"profile of {name} answered {body['username']}")
                for photo in body["photos"]:
                    if photo["owner"] != name or shard_of(photo["id"]) != shard_of(user_id):
                        self.wrong.append(
                            f"profile of {name} lists {photo['id']} of {photo['owner']}"
                        )
                    with self.lock:
                        self.seen_photos[photo["id"]] = photo["owner"]
            reply = viewer.request("GET", "/api/feed?limit=20")
            if self.record("feed", reply):
                for photo in reply.json()["items"]:
                    if shard_of(photo["id"]) != logical_shard_for(photo["owner"]):
                        self.wrong.append(f"feed lists {photo['id']} as {photo['owner']}'s")
                    with self.lock:
                        self.seen_photos[photo["id"]] = photo["owner"]
            time.sleep(0.02)


def moved_count(output: str) -> int:
    match = re.search(r"(\d+) of 4096 logical shards move", output)
    assert match, output
    return int(match.group(1))


def journal(control: sa.Engine) -> Counter[str]:
    with control.connect() as conn:
        if not sa.inspect(conn).has_table(moves_table.name):
            return Counter()
        return Counter(conn.execute(sa.select(moves_table.c.phase)).scalars())


def progressed(control: sa.Engine) -> int:
    phases = journal(control)
    return sum(phases.values()) - phases["planned"]


def kill_midway(
    args: list[str], *, env: dict[str, str], control: sa.Engine, until: int, log: Path
) -> Counter[str]:
    """Run ``scalecore db reshard ARGS --yes``, SIGKILL it once ``until`` logical shards
    progressed past ``planned`` (within two minutes), and return the journal it left."""
    with log.open("wb") as handle:
        mover = subprocess.Popen(
            command("db", "reshard", *args, "--yes"),
            env=env,
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while progressed(control) < until:
            assert mover.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the reshard made no progress"
            time.sleep(0.05)
        mover.send_signal(signal.SIGKILL)
    finally:
        if mover.poll() is None:
            mover.kill()
        mover.wait(10)
    return journal(control)
