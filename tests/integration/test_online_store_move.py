"""Vertical partitioning online: the photo feed's ``feed`` store moves from the shared
databases onto a database of its own while a running distributed site keeps writing (the
reshard killed mid-way and resumed); and a write to a logical shard that a killed reshard
left frozen answers 503 with Retry-After through the web app.

The web, worker and scheduler processes run on the config without the store's own
database and are never restarted: they follow the store's live layout.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from _reshard_site import (
    Client,
    Load,
    Site,
    environment,
    journal,
    kill_midway,
    moved_count,
    run,
    write_config,
)

from adapters.photofeed.schema import feed_table, photos_table, users_table
from adapters.sql.layout import STATE, identity
from scalecore.ids import LOGICAL_SHARDS, logical_shard_for, shard_of
from scalecore.routing import JumpHashRouter

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USERS = 60


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))


def _feed_rows(engine: sa.Engine) -> dict[tuple[str, str], tuple[float | None, float | None]]:
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(feed_table.name):
            return {}
        query = sa.select(
            feed_table.c.follower_id,
            feed_table.c.photo_id,
            feed_table.c.added_at,
            feed_table.c.removed_at,
        )
        return {
            (r.follower_id, r.photo_id): (r.added_at, r.removed_at) for r in conn.execute(query)
        }


def test_feed_moves_onto_its_own_database_killed_and_resumed_under_load(
    tmp_path: Path, scratch_database: Callable[[str], str], unique: str
) -> None:
    urls = [scratch_database(f"vsplit{i}") for i in range(3)]
    ledger = scratch_database("vsplitledger")
    shared = write_config(tmp_path / "shared.toml", urls[:2], ledger=ledger, token=unique)
    split = write_config(
        tmp_path / "split.toml", urls[:2], ledger=ledger, token=unique, stores={"feed": urls[2:]}
    )
    env = environment(shared)
    done = run("db", "init", env=env)
    assert done.returncode == 0, done.stderr
    began = time.monotonic()

    def mark(what: str) -> None:
        print(f"{time.monotonic() - began:6.1f} s  {what}")

    site = Site(shared, tmp_path)
    engines = [_engine(url) for url in urls]
    try:
        client = Client(site.port)
        users: dict[str, str] = {}
        for index in range(USERS):
            reply = client.post_json(
                "/api/users", {"username": f"user{index}", "password": "correct horse"}
            )
            assert reply.status == 201, reply.body
            users[f"user{index}"] = reply.json()["id"]
        mark("users signed up")
        load = Load(site.port, users)
        load.start()
        time.sleep(3)

        plan = run("db", "reshard", "--config", str(split), "--from", str(shared), env=env)
        assert plan.returncode == 0, plan.stderr
        assert "feed (feed): 4096 of 4096 logical shards move" in plan.stdout, plan.stdout
        assert moved_count(plan.stdout.split("default (")[1]) == 0  # the rest stays
        interrupted = kill_midway(
            ["--config", str(split), "--from", str(shared)],
            env=env,
            control=engines[0],
            until=LOGICAL_SHARDS // 4,
            log=tmp_path / "reshard.log",
        )
        mark("killed the reshard")
        assert 0 < interrupted["planned"] < LOGICAL_SHARDS, interrupted

        resumed = run("db", "reshard", "--config", str(split), "--yes", env=env)
        mark("resumed, feed moved")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "resuming" in resumed.stdout, resumed.stdout
        assert "feed: moved" in resumed.stdout, resumed.stdout
        assert "verified" in resumed.stdout, resumed.stdout
        assert journal(engines[0]) == Counter({"cleaned": LOGICAL_SHARDS})
        status = run("db", "reshard", "--config", str(split), "--status", env=env)
        assert "feed: done" in status.stdout, status.stdout + status.stderr
        time.sleep(2)
        load.finish()
        assert site.alive(), site.output()

        # Every photo uploaded after its owner was followed reaches the follower's feed,
        # on the feed's own database (the worker fans out in the background).
        expected = {
            (users[follower], photo)
            for photo, owner in load.photos.items()
            for (follower, followee), at in load.followed_at.items()
            if followee == owner
            and at < load.uploaded_at[photo]
            and all(verb == "follow" and ok for verb, ok in load.ops[(follower, followee)])
        }
        assert len(expected) > 20
        deadline = time.monotonic() + 60
        while True:
            feeds = _feed_rows(engines[2])
            missing = expected - {key for key, (added, removed) in feeds.items() if added}
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert not missing, f"{len(missing)} feed entries lost, e.g. {sorted(missing)[:3]}"
        mark("feeds checked")
    finally:
        site.stop()

    print(
        f"\n{load.requests} requests during the move; {len(load.failures)} failed: "
        f"{Counter((kind, status) for kind, status, _, _ in load.failures)}"
    )
    assert not load.wrong, load.wrong[:10]
    for kind, status, retry_after, body in load.failures:
        assert status == 503, (kind, status, body)
        assert retry_after, (kind, body)
        assert b'"error"' in body, (kind, body)
    assert load.requests > 100

    for engine in engines[:2]:  # nothing of the feed is left on the shared databases
        assert _feed_rows(engine) == {}
    with engines[2].connect() as conn:  # and only the feed's tables on its own database
        assert set(sa.inspect(conn).get_table_names()) - {"scalecore_shard_state"} == {
            feed_table.name
        }
    router = JumpHashRouter(2)
    for column in (users_table.c.id, photos_table.c.id):
        found: dict[str, list[int]] = defaultdict(list)
        for index, engine in enumerate(engines[:2]):
            with engine.connect() as conn:
                for value in conn.execute(sa.select(column)).scalars():
                    found[value].append(index)
        for value, where in found.items():
            assert where == [router.shard_for(shard_of(value))], value
    for photo in load.photos:
        assert photo in found
    for engine in engines:
        engine.dispose()


def test_a_write_to_a_frozen_logical_shard_answers_503_with_retry_after(
    tmp_path: Path, scratch_database: Callable[[str], str], unique: str
) -> None:
    urls = [scratch_database(f"frozen{i}") for i in range(2)]
    ledger = scratch_database("frozenledger")
    config = write_config(tmp_path / "site.toml", urls, ledger=ledger, token=unique)
    env = environment(config)
    assert run("db", "init", env=env).returncode == 0
    # The first live layout (nothing moves): from now on every write is fenced.
    first = run("db", "reshard", "--config", str(config), "--from", str(config), "--yes", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    router = JumpHashRouter(2)
    name = next(
        f"frozen{i}"
        for i in range(10_000)
        if router.shard_for(logical_shard_for(f"frozen{i}")) == 0
    )
    logical = logical_shard_for(name)
    owner = _engine(urls[0])
    # As a reshard killed between its fence and the switch leaves it: the old owner says
    # "moved" to a database that does not own the logical shard yet.
    frozen = (
        STATE.update()
        .where(STATE.c.name == "default", STATE.c.logical_shard == logical)
        .values(state="moved", moved_to=identity(urls[1]))
    )
    site = Site(config, tmp_path)
    try:
        client = Client(site.port)
        with owner.begin() as conn:
            assert conn.execute(frozen).rowcount == 1
        began = time.monotonic()
        reply = client.post_json("/api/users", {"username": name, "password": "correct horse"})
        waited = time.monotonic() - began
        assert reply.status == 503, reply.body
        assert reply.headers.get("Retry-After"), reply.headers
        assert "error" in json.loads(reply.body)
        assert waited >= 4.5  # retried for the fence's five seconds first
        # The reshard finishes (here: the state is put back); the retry succeeds.
        with owner.begin() as conn:
            conn.execute(
                STATE.update()
                .where(STATE.c.name == "default", STATE.c.logical_shard == logical)
                .values(state="owned", moved_to=None)
            )
        reply = client.post_json("/api/users", {"username": name, "password": "correct horse"})
        assert reply.status == 201, reply.body
        assert site.alive(), site.output()
    finally:
        site.stop()
        owner.dispose()
