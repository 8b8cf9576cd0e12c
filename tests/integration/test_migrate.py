"""``scalecore migrate`` between real deployments, run as real processes.

The round trip: an embedded site (``scalecore run``: SQLite, local folder, SQL sessions) is
populated through its HTTP API (users, real images, follows, a deleted photo leaving
tombstones in feeds, a logged-in session) and through the service with the broker down
(an upload whose event stays unsent in the outbox), plus a few thousand accounts and
follow edges written straight to its database so the copy lasts long enough to be killed.
``migrate`` to a distributed config (three PostgreSQL shards, S3, memcached sessions,
RabbitMQ) is SIGKILLed mid-copy and run again; then ``scalecore run`` on the target must
show the same site: every account logs in, every photo has the same bytes and headers,
profiles and feeds are the same, the session still works, and the unsent event is fanned
out exactly once. Then the same back, distributed -> embedded.

Refusals: a foreign non-empty target, a memory source, a server that does not answer;
each one line on stderr, a non-zero exit and nothing written.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from e2e_harness import (
    ROOT,
    Client,
    Deployment,
    free_port,
    png_bytes,
    poll,
    wait_until_healthy,
)

from adapters.photofeed.schema import (
    follow_counts_table,
    followers_table,
    following_table,
    outbox_table,
    users_table,
)
from scalecore.ids import IdGenerator

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "correct horse"
MAX_UPLOAD = 300_000
#: Accounts (and edges per account) written straight to the source database.
FILLER_USERS = 2500
FILLER_EDGES = 8


# --------------------------------------------------------------------------- configs


def embedded_config(path: Path, data_dir: Path, *, bus: str | None = None) -> Path:
    """One box: SQLite, local folder, SQL sessions, in-process bus (or ``bus`` TOML)."""
    text = (
        f'[deployment]\nname = "box"\ndata_dir = "{data_dir}"\n\n'
        '[sessions]\nbackend = "sql"\n\n'
        f"[photofeed]\nmax_upload_bytes = {MAX_UPLOAD}\n"
    )
    if bus:
        text += f"\n[bus]\n{bus}\n"
    path.write_text(text)
    return path


def distributed_config(
    path: Path,
    data_dir: Path,
    *,
    unique: str,
    database: Callable[[str], str],
    s3_endpoint: str,
    memcached: list[str],
    amqp_url: str,
) -> Path:
    servers = ", ".join(f'"{s}"' for s in memcached)
    shards = ",\n  ".join(f'"{database(f"mig{i}")}"' for i in range(3))
    path.write_text(
        f'[deployment]\nname = "fleet"\nmulti_node = true\ndata_dir = "{data_dir}"\n\n'
        f'[blobs]\nbackend = "s3"\nbucket = "mig-{unique}"\nendpoint_url = "{s3_endpoint}"\n'
        'region = "us-east-1"\naccess_key_id = "testing"\nsecret_access_key = "testing"\n'
        "create_bucket = true\n\n"
        f'[sessions]\nbackend = "memcached"\nservers = [{servers}]\nnamespace = "s{unique}:"\n\n'
        f'[cache]\nbackend = "memcached"\nservers = [{servers}]\nnamespace = "c{unique}:"\n\n'
        f'[bus]\nbackend = "rabbitmq"\nurl = "{amqp_url}"\nexchange = "mig-{unique}"\n\n'
        f'[ledger]\nbackend = "sql"\nurl = "{database("migledger")}"\ncreate_database = true\n\n'
        f"[database]\ncreate_databases = true\nshards = [\n  {shards},\n]\n\n"
        f"[photofeed]\nmax_upload_bytes = {MAX_UPLOAD}\n"
    )
    return path


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SCALECORE_")}


def scalecore(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
        cwd=ROOT,
        check=False,
    )


def start(config: Path, workdir: Path, name: str) -> Deployment:
    """``scalecore run --config`` as one process (web, worker, relay, scheduler)."""
    port = free_port()
    log = workdir / f"{name}.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "entrypoints.cli", "run", "--config", str(config)),
                *("--host", "127.0.0.1", "--port", str(port)),
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            cwd=ROOT,
        )
    deployment = Deployment(name, f"http://127.0.0.1:{port}", [process], [log], workdir)
    wait_until_healthy(deployment, timeout=60)
    return deployment


def stop(deployment: Deployment) -> None:
    assert deployment.stop() == [0], deployment.output()


# --------------------------------------------------------------------------- the site


def populate(base_url: str) -> Client:
    """Users, photos with real images, follows, a deleted photo; return ada's logged-in
    client (her session must survive the move)."""
    for name in ("ada", "bob", "cyd"):
        assert Client(base_url).sign_up(name, PASSWORD).status == 201
    clients = {name: Client(base_url) for name in ("ada", "bob", "cyd")}
    for name, client in clients.items():
        assert client.log_in(name, PASSWORD).status == 200
    for follower, followee in [("bob", "ada"), ("cyd", "ada"), ("ada", "bob"), ("cyd", "bob")]:
        assert clients[follower].request("PUT", f"/api/following/{followee}").status == 204
    photos = {}
    for index, (owner, color) in enumerate(
        [("ada", (200, 40, 90)), ("ada", (10, 120, 200)), ("bob", (90, 200, 10))]
    ):
        reply = clients[owner].upload(png_bytes(64 + index, 48, color), caption=f"p{index}")
        assert reply.status == 201, reply
        photos[index] = reply.json()["id"]
    poll(lambda: len(feed(clients["cyd"])) == 3)
    # A removed entry: ada deletes a photo her followers already have in their feeds.
    assert clients["ada"].request("DELETE", f"/api/photos/{photos[1]}").status == 204
    poll(lambda: len(feed(clients["cyd"])) == 2)
    return clients["ada"]


def feed(client: Client) -> list[str]:
    reply = client.get("/api/feed?limit=50")
    assert reply.status == 200, reply
    return [item["id"] for item in reply.json()["items"]]


def observe(base_url: str, usernames: list[str]) -> dict[str, Any]:
    """Everything a visitor sees: profiles (counts, photos), photo bytes and headers, and
    each user's feed after logging in (which proves the password works)."""
    seen: dict[str, Any] = {}
    reader = Client(base_url)
    for name in usernames:
        reply = reader.get(f"/api/users/{name}")
        assert reply.status == 200, (name, reply)
        profile = reply.json()
        media = {}
        for photo in profile["photos"]:
            for url in (photo["url"], photo["thumbnail_url"]):
                got = reader.get(url)
                assert got.status == 200, (url, got)
                media[url] = (
                    hashlib.sha256(got.body).hexdigest(),
                    got.headers["Content-Type"],
                    got.headers["Cache-Control"],
                )
        client = Client(base_url)
        assert client.log_in(name, PASSWORD).status == 200, name
        seen[name] = {
            "id": profile["id"],
            "followers": profile["followers"],
            "following": profile["following"],
            "photos": [(p["id"], p["caption"], p["created_at"]) for p in profile["photos"]],
            "media": media,
            "feed": feed(client),
        }
    return seen


def add_filler(shard_url: str, hashed_password: str) -> list[str]:
    """Accounts and follow edges written straight to the source database, so the copy
    takes a few seconds; returns their usernames. Rows as the repositories write them."""
    ids = IdGenerator()
    names = [f"filler{n}" for n in range(FILLER_USERS)]
    users = {name: ids.new_for(name) for name in names}
    now = time.time()
    user_rows = [
        {"id": uid, "username": name, "password_hash": hashed_password, "created_at": now}
        for name, uid in users.items()
    ]
    followers, following = [], []
    counts = {uid: [0, 0] for uid in users.values()}
    order = list(users.values())
    for index, follower in enumerate(order):
        for step in range(1, FILLER_EDGES + 1):
            followee = order[(index + step * 7) % len(order)]
            followers.append(
                {
                    "user_id": followee,
                    "follower_id": follower,
                    "followed_at": now,
                    "unfollowed_at": None,
                    "unsettled": False,
                    "changed_at": now,
                }
            )
            following.append(
                {
                    "user_id": follower,
                    "followee_id": followee,
                    "followed_at": now,
                    "unfollowed_at": None,
                    "changed_at": now,
                }
            )
            counts[followee][0] += 1
            counts[follower][1] += 1
    engine = sa.create_engine(shard_url)
    try:
        with engine.begin() as connection:
            connection.execute(users_table.insert(), user_rows)
            connection.execute(followers_table.insert(), followers)
            connection.execute(following_table.insert(), following)
            connection.execute(
                follow_counts_table.insert(),
                [{"user_id": u, "followers": c[0], "following": c[1]} for u, c in counts.items()],
            )
    finally:
        engine.dispose()
    return names


def unsent_upload(config: Path) -> None:
    """Upload through the service while the broker is unreachable: the photo is stored and
    its event stays unsent in the outbox (a separate process, as a web worker would be)."""
    script = (
        "import io, sys\n"
        "from entrypoints.photofeed.config import load_settings\n"
        "from entrypoints.container import create_container\n"
        "container = create_container(load_settings(sys.argv[1], environ={}))\n"
        "service = container.photofeed()\n"
        "user = service.authenticate('ada', 'correct horse')\n"
        "data = open(sys.argv[2], 'rb').read()\n"
        "service.upload_photo(user.id, io.BytesIO(data), caption='unsent',"
        " content_length=len(data))\n"
    )
    image = config.parent / "unsent.png"
    image.write_bytes(png_bytes(80, 60, (250, 200, 0)))
    result = subprocess.run(
        [sys.executable, "-c", script, str(config), str(image)],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def outbox_state(url: str) -> dict[str, bool]:
    """Outbox event id -> sent, on one database."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.select(outbox_table.c.id, outbox_table.c.sent_at))
            return {row.id: row.sent_at is not None for row in rows}
    finally:
        engine.dispose()


def count(url: str, table: sa.Table) -> int:
    """Rows of ``table`` at ``url``; 0 while the database or table does not exist yet."""
    engine = sa.create_engine(url)
    try:
        try:
            connection = engine.connect()
        except sa.exc.OperationalError:
            return 0
        with connection:
            if not sa.inspect(connection).has_table(table.name):
                return 0
            return int(
                connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            )
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- the tests


def test_embedded_to_distributed_and_back_survives_a_kill(
    tmp_path: Path,
    unique: str,
    scratch_database: Callable[[str], str],
    s3_endpoint: str,
    memcached_servers: list[str],
    amqp_url: str,
) -> None:
    box_dir = tmp_path / "box"
    box = embedded_config(tmp_path / "box.toml", box_dir)
    shard_urls: list[str] = []

    def database(label: str) -> str:
        url = scratch_database(label)
        if label.startswith("mig") and label != "migledger":
            shard_urls.append(url)
        return url

    fleet = distributed_config(
        tmp_path / "fleet.toml",
        tmp_path / "fleet-data",
        unique=unique,
        database=database,
        s3_endpoint=s3_endpoint,
        memcached=memcached_servers,
        amqp_url=amqp_url,
    )

    # 1. The embedded site, used through its API.
    site = start(box, tmp_path, "box")
    try:
        ada = populate(site.base_url)
        assert ada.get("/api/me").status == 200
    finally:
        stop(site)
    source_db = f"sqlite:///{box_dir / 'shard-0.db'}"
    hashed = (
        sa.create_engine(source_db)
        .connect()
        .execute(sa.select(users_table.c.password_hash).where(users_table.c.username == "ada"))
        .scalar_one()
    )
    fillers = add_filler(source_db, hashed)
    usernames = ["ada", "bob", "cyd", *fillers[:3]]
    site = start(box, tmp_path, "box-again")
    try:
        before = observe(site.base_url, usernames)
    finally:
        stop(site)
    # Last, with the site down: an upload while the broker is down too; its event stays
    # in the outbox, unsent (no relay runs on the source any more).
    broken_bus = (
        f'backend = "rabbitmq"\nurl = "amqp://guest:guest@127.0.0.1:{free_port()}/%2F"\n'
        "connect_timeout = 1.0\npublish_timeout = 2.0"
    )
    unsent_upload(embedded_config(tmp_path / "box-nobus.toml", box_dir, bus=broken_bus))
    events = outbox_state(source_db)
    assert list(events.values()).count(False) == 1, events  # the others were relayed
    # 2. migrate, SIGKILLed mid-copy (once rows of the follows store are arriving).
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "entrypoints.cli",
            "migrate",
            "--from",
            str(box),
            "--to",
            str(fleet),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
        cwd=ROOT,
    )
    try:
        poll(
            lambda: (
                process.poll() is not None
                or sum(count(url, following_table) for url in shard_urls) > 0
            ),
            timeout=60,
            interval=0.05,
        )
        assert process.poll() is None, "the copy finished before it could be killed"
        process.send_signal(signal.SIGKILL)
        assert process.wait(10) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    copied = sum(count(url, following_table) for url in shard_urls)
    assert 0 < copied < FILLER_USERS * FILLER_EDGES

    # 3. Run again: it resumes and verifies; a third run finds nothing to write.
    result = scalecore("migrate", "--from", str(box), "--to", str(fleet))
    assert result.returncode == 0, result.stderr + result.stdout
    assert "DIFFERS" not in result.stdout
    edges = FILLER_USERS * FILLER_EDGES + 4  # and the four made through the site
    assert sum(count(url, following_table) for url in shard_urls) == edges
    # Rows are on the shard the target's router picks: all three shards hold some.
    assert all(count(url, users_table) > 0 for url in shard_urls)
    assert sum(count(url, users_table) for url in shard_urls) == FILLER_USERS + 3
    again = scalecore("migrate", "--from", str(box), "--to", str(fleet), "--quiet")
    assert again.returncode == 0, again.stderr
    lines = {line.split()[0]: line.split() for line in again.stdout.splitlines()[1:]}
    assert all(lines[store][2] == "0" for store in ("users", "photos", "follows", "feed"))
    verify = scalecore("migrate", "--from", str(box), "--to", str(fleet), "--verify")
    assert verify.returncode == 0, verify.stderr + verify.stdout
    moved_events = {}
    for url in shard_urls:
        moved_events.update(outbox_state(url))
    assert moved_events == events  # sent stays sent, unsent stays unsent

    # 4. The distributed site shows the same thing, and ada is still logged in.
    site = start(fleet, tmp_path, "fleet")
    try:
        ada.host, ada.port = "127.0.0.1", int(site.base_url.rsplit(":", 1)[1])
        me = ada.get("/api/me")
        assert me.status == 200, me
        assert me.json()["username"] == "ada"
        # The unsent event is relayed once and fanned out to ada's followers.
        unsent = next(i for i, sent in events.items() if not sent)
        poll(
            lambda: all(sent for url in shard_urls for sent in outbox_state(url).values()),
            timeout=30,
        )
        after = observe(site.base_url, usernames)
        new_photo = after["ada"]["photos"][0][0]
        assert after["ada"]["photos"][0][1] == "unsent"
        for name in ("ada", "bob", "cyd"):  # ada's own feed shows her photos too
            assert after[name]["feed"].count(new_photo) == 1
            after[name]["feed"].remove(new_photo)
        after["ada"]["photos"].pop(0)
        after["ada"]["media"] = {
            url: value
            for url, value in after["ada"]["media"].items()
            if url in before["ada"]["media"]
        }
        assert unsent  # the id itself is the photo's event
        assert after == before
        distributed_view = observe(site.base_url, usernames)
    finally:
        stop(site)

    # 5. And back: distributed -> a new embedded box (sessions cannot leave memcached).
    back_dir = tmp_path / "back"
    back = embedded_config(tmp_path / "back.toml", back_dir)
    refused = scalecore("migrate", "--from", str(fleet), "--to", str(back))
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: the source's session store 'memcached'")
    assert "--skip sessions" in refused.stderr
    assert "log in again" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert not back_dir.exists()  # refused before anything was created
    result = scalecore("migrate", "--from", str(fleet), "--to", str(back), "--skip", "sessions")
    assert result.returncode == 0, result.stderr + result.stdout
    site = start(back, tmp_path, "back")
    try:
        assert observe(site.base_url, usernames) == distributed_view
    finally:
        stop(site)


def test_refusals_are_one_line_and_write_nothing(
    tmp_path: Path, unique: str, scratch_database: Callable[[str], str]
) -> None:
    source_dir = tmp_path / "source"
    source = embedded_config(tmp_path / "source.toml", source_dir)
    result = scalecore("db", "init", "--config", str(source))
    assert result.returncode == 0, result.stderr
    source_db = f"sqlite:///{source_dir / 'shard-0.db'}"
    add_filler_small(source_db)

    # A foreign target: a site of its own, with rows that did not come from the source.
    other_dir = tmp_path / "other"
    other = embedded_config(tmp_path / "other.toml", other_dir)
    assert scalecore("db", "init", "--config", str(other)).returncode == 0
    other_db = f"sqlite:///{other_dir / 'shard-0.db'}"
    add_filler_small(other_db, prefix="other")
    before = _dump(other_db)
    result = scalecore("migrate", "--from", str(source), "--to", str(other))
    assert result.returncode == 2
    assert result.stderr.startswith("error: the target")
    assert "photofeed_users" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert _dump(other_db) == before

    # A memory source: nothing outside its process to copy.
    memory = tmp_path / "memory.toml"
    memory.write_text(
        f'[deployment]\ndata_dir = "{tmp_path / "m"}"\n[photofeed]\nrepositories = "memory"\n'
    )
    empty_dir = tmp_path / "empty"
    empty = embedded_config(tmp_path / "empty.toml", empty_dir)
    result = scalecore("migrate", "--from", str(memory), "--to", str(empty))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "memory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not empty_dir.exists()

    # A server that does not answer: PostgreSQL on a closed port.
    down = tmp_path / "down.toml"
    dead = scratch_database("down").replace(":5432/", f":{free_port()}/")
    down.write_text(
        f'[deployment]\ndata_dir = "{tmp_path / "d"}"\n[sessions]\nbackend = "sql"\n'
        f'url = "sqlite:///{tmp_path / "d" / "s.db"}"\n'
        f'[database]\nshards = ["{dead}"]\n'
    )
    result = scalecore("migrate", "--from", str(source), "--to", str(down))
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot reach")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (
        not (tmp_path / "d" / "s.db").exists()
        or count(f"sqlite:///{tmp_path / 'd' / 's.db'}", users_table) == 0
    )

    # Bad arguments.
    result = scalecore("migrate", "--from", str(source))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    result = scalecore("migrate", "--from", str(tmp_path / "nope.toml"), "--to", str(empty))
    assert result.returncode == 2
    assert "nope.toml" in result.stderr
    result = scalecore("migrate", "--from", str(source), "--to", str(empty), "--skip", "cache")
    assert result.returncode == 2
    assert "unknown store" in result.stderr


def add_filler_small(url: str, prefix: str = "src") -> None:
    ids = IdGenerator()
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                users_table.insert(),
                [
                    {
                        "id": ids.new_for(f"{prefix}{n}"),
                        "username": f"{prefix}{n}",
                        "password_hash": "x",
                        "created_at": 1.0,
                    }
                    for n in range(5)
                ],
            )
    finally:
        engine.dispose()


def _dump(url: str) -> list[Any]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.select(users_table))]
    finally:
        engine.dispose()
