"""Online resharding of a running distributed site: 3 -> 4 databases (killed mid-way and
resumed) -> 3, with writers and readers going through gunicorn the whole time.

The web, worker and scheduler processes are started on the 3-database config and never
restarted: they follow the live layout. Afterwards every write whose request succeeded is
present exactly once, on the database its id maps to; no read was wrong; the requests that
failed did so with 503, Retry-After and a JSON body; about 1/(N+1) of the logical shards
moved each way.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

from adapters.photofeed.schema import following_table, photos_table, users_table
from scalecore.ids import LOGICAL_SHARDS, shard_of
from scalecore.routing import JumpHashRouter

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Users signed up before the reshard; each actor thread writes for its own half.
USERS = 120


def test_reshard_3_to_4_killed_and_resumed_then_back_to_3_under_load(
    tmp_path: Path, scratch_database: Callable[[str], str], unique: str
) -> None:
    urls = [scratch_database(f"reshard{i}") for i in range(4)]
    ledger = scratch_database("reshardledger")
    three = write_config(tmp_path / "three.toml", urls[:3], ledger=ledger, token=unique)
    four = write_config(tmp_path / "four.toml", urls, ledger=ledger, token=unique)
    env = environment(three)
    done = run("db", "init", env=env)
    assert done.returncode == 0, done.stderr

    began = time.monotonic()

    def mark(what: str) -> None:
        print(f"{time.monotonic() - began:6.1f} s  {what}")

    site = Site(three, tmp_path)
    mark("site up")
    engines = [
        sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://")) for url in urls
    ]
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
        time.sleep(2)

        # 3 -> 4: the plan, then the move, killed once a good part is done.
        plan = run("db", "reshard", "--config", str(four), "--from", str(three), env=env)
        assert plan.returncode == 0, plan.stderr
        moved = moved_count(plan.stdout)
        assert abs(moved / LOGICAL_SHARDS - 1 / 4) <= 0.1 * (1 / 4), plan.stdout
        interrupted = kill_midway(
            ["--config", str(four), "--from", str(three)],
            env=env,
            control=engines[0],
            until=moved // 4,
            log=tmp_path / "reshard.log",
        )
        mark("killed the reshard")
        assert 0 < interrupted["planned"] < moved, interrupted
        status = run("db", "reshard", "--config", str(four), "--status", env=env)
        assert "running" in status.stdout, status.stdout + status.stderr

        resumed = run("db", "reshard", "--config", str(four), "--yes", env=env)
        mark("resumed 3 -> 4 done")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "resuming" in resumed.stdout, resumed.stdout
        assert "verified" in resumed.stdout, resumed.stdout
        assert journal(engines[0]) == Counter({"cleaned": moved})
        time.sleep(1)

        # 4 -> 3: the processes still run on the 3-database file.
        back = run("db", "reshard", "--config", str(three), env=env)
        moved_back = moved_count(back.stdout)
        assert abs(moved_back / LOGICAL_SHARDS - 1 / 4) <= 0.1 * (1 / 4), back.stdout
        back = run("db", "reshard", "--config", str(three), "--yes", env=env)
        mark("4 -> 3 done")
        assert back.returncode == 0, back.stdout + back.stderr
        assert "verified" in back.stdout, back.stdout
        time.sleep(1)
        load.finish()
        assert site.alive(), site.output()
    finally:
        site.stop()

    print(
        f"\n{load.requests} requests during the reshards; {len(load.failures)} failed: "
        f"{Counter((kind, status) for kind, status, _, _ in load.failures)}"
    )
    assert not load.wrong, load.wrong[:10]
    for kind, status, retry_after, body in load.failures:
        assert status == 503, (kind, status, body)
        assert retry_after, (kind, body)
        assert b'"error"' in body, (kind, body)
    assert load.requests > 200
    mark("checking the databases")

    final = JumpHashRouter(3)

    def rows(table: sa.Table, column: sa.Column[Any]) -> dict[str, list[int]]:
        found: dict[str, list[int]] = defaultdict(list)
        for index, engine in enumerate(engines):
            with engine.connect() as conn:
                for value in conn.execute(sa.select(column)).scalars():
                    found[value].append(index)
        return found

    placed = rows(users_table, users_table.c.username)
    for name, user_id in load.users.items():
        assert placed.get(name) == [final.shard_for(shard_of(user_id))], (name, placed.get(name))
    assert set(placed) <= set(load.users) | load.attempted_users
    photos = rows(photos_table, photos_table.c.id)
    for photo_id in load.photos:
        assert photos.get(photo_id) == [final.shard_for(shard_of(photo_id))], photo_id
    for photo_id in load.seen_photos:
        assert len(photos.get(photo_id, [])) == 1, f"a reader saw {photo_id}, now gone"
    with engines[3].connect() as conn:
        for table in (users_table, photos_table, following_table):
            assert conn.scalar(sa.select(sa.func.count()).select_from(table)) == 0

    edges: dict[tuple[str, str], list[int]] = defaultdict(list)
    live: dict[tuple[str, str], bool] = {}
    for index, engine in enumerate(engines):
        with engine.connect() as conn:
            for row in conn.execute(sa.select(following_table)):
                key = (row.user_id, row.followee_id)
                edges[key].append(index)
                live[key] = row.followed_at is not None and (
                    row.unfollowed_at is None or row.followed_at >= row.unfollowed_at
                )
    checked = 0
    for (follower, followee), ops in load.ops.items():
        key = (load.users[follower], load.users[followee])
        if any(ok for _, ok in ops):
            assert edges[key] == [final.shard_for(shard_of(key[0]))], (follower, followee)
        if all(ok for _, ok in ops):
            assert live[key] == (ops[-1][0] == "follow"), (follower, followee, ops)
            checked += 1
    assert checked > 50
    for engine in engines:
        engine.dispose()
