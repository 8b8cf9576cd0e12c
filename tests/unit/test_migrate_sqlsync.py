"""The SQL part of ``scalecore migrate`` on SQLite shard files: placement, catch-up,
deletes, misplaced rows, digests and the differences a verification lists."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from adapters.photofeed.schema import FEED, feed_table
from adapters.sql.shards import ShardedDatabase
from entrypoints.migrate.progress import Progress
from entrypoints.migrate.sqlsync import (
    ShardSet,
    bucket_of,
    by_logical_shard,
    digest_table,
    logical_shard,
    mismatched,
    sync_table,
)
from scalecore.ids import IdGenerator, make_id, shard_of
from scalecore.routing import make_router


def database(tmp_path: Path, name: str, shards: int, strategy: str) -> ShardedDatabase:
    db = ShardedDatabase(
        shards=[f"sqlite:///{tmp_path / f'{name}-{i}.db'}" for i in range(shards)],
        router=make_router(strategy, shards, {}),
        metadata=FEED,
    )
    db.create_schema()
    return db


def side(db: ShardedDatabase, label: str) -> ShardSet:
    return ShardSet(
        label=label,
        count=len(db),
        read=lambda i: db.read(shard=i),
        write=lambda i: db.unit_of_work(shard=i),
        place=db.shard_for,
    )


def entries(count: int) -> list[dict[str, object]]:
    ids = IdGenerator()
    rows = []
    for n in range(count):
        follower = ids.new_for(f"user{n % 40}")
        photo = ids.new_for(f"owner{n % 7}")
        removed = 5.0 + n if n % 5 == 0 else None  # tombstones too
        rows.append(
            {
                "follower_id": follower,
                "photo_id": photo,
                "owner_id": photo,
                "created_at": float(n),
                "added_at": 1.0 + n,
                "removed_at": removed,
            }
        )
    return rows


def insert(db: ShardedDatabase, rows: list[dict[str, object]]) -> None:
    for row in rows:
        with db.unit_of_work(shard_of(row["follower_id"])) as connection:
            connection.execute(feed_table.insert(), [row])


def all_rows(db: ShardedDatabase) -> dict[int, list[tuple[object, ...]]]:
    found = {}
    for index in range(len(db)):
        with db.read(shard=index) as connection:
            found[index] = [tuple(r) for r in connection.execute(sa.select(feed_table))]
    return found


@pytest.fixture
def pair(tmp_path: Path) -> tuple[ShardedDatabase, ShardedDatabase]:
    source = database(tmp_path, "src", 2, "modulo")
    target = database(tmp_path, "dst", 3, "jump")
    yield source, target
    source.dispose()
    target.dispose()


def test_rows_land_on_the_shard_the_target_router_picks(
    pair: tuple[ShardedDatabase, ShardedDatabase],
) -> None:
    source, target = pair
    rows = entries(300)
    insert(source, rows)
    result = sync_table(feed_table, side(source, "s"), side(target, "t"), write=True)
    assert result.read == result.written == 300
    placed = all_rows(target)
    assert sum(len(v) for v in placed.values()) == 300
    for index, found in placed.items():
        for row in found:
            assert target.shard_for(shard_of(row[0])) == index
    assert all(placed.values())  # three shards, all used
    # The digests of both sides agree per logical shard, and a second walk writes nothing.
    src = digest_table(feed_table, side(source, "s"), sharded=True)
    dst = digest_table(feed_table, side(target, "t"), sharded=True)
    assert src == dst
    assert sum(d.count for d in dst.values()) == 300
    again = sync_table(feed_table, side(source, "s"), side(target, "t"), write=True)
    assert (again.written, again.deleted, again.dirty) == (0, 0, set())
    assert again.source == again.target == src


def test_a_later_walk_catches_up_changes_deletes_and_misplaced_rows(
    pair: tuple[ShardedDatabase, ShardedDatabase],
) -> None:
    source, target = pair
    rows = entries(120)
    insert(source, rows)
    sync_table(feed_table, side(source, "s"), side(target, "t"), write=True)
    changed, gone = rows[3], rows[4]
    with source.unit_of_work(shard_of(changed["follower_id"])) as connection:
        connection.execute(
            feed_table.update()
            .where(feed_table.c.photo_id == changed["photo_id"])
            .values(removed_at=999.0)
        )
    with source.unit_of_work(shard_of(gone["follower_id"])) as connection:
        connection.execute(feed_table.delete().where(feed_table.c.photo_id == gone["photo_id"]))
    # A row on the wrong target shard (a layout changed behind our back).
    moved = rows[5]
    home = target.shard_for(shard_of(moved["follower_id"]))
    with target.unit_of_work(shard=home) as connection:
        connection.execute(feed_table.delete().where(feed_table.c.photo_id == moved["photo_id"]))
    with target.unit_of_work(shard=(home + 1) % 3) as connection:
        connection.execute(feed_table.insert(), [moved])

    check = sync_table(
        feed_table, side(source, "s"), side(target, "t"), write=False, max_differences=10
    )
    kinds = sorted(d.kind for d in check.differences)
    assert kinds == ["differs", "extra", "misplaced"]
    assert all(str(d).startswith("photofeed_feed [") for d in check.differences)
    # Read back independently, the misplaced row counts as a difference too.
    src = digest_table(feed_table, side(source, "s"), sharded=True)
    dst = digest_table(feed_table, side(target, "t"), sharded=True, placed=True)
    assert mismatched(by_logical_shard(src), by_logical_shard(dst)) == {
        logical_shard(r["follower_id"]) for r in (changed, gone, moved)
    }
    assert mismatched(src, dst) == {
        bucket_of((r["follower_id"], r["photo_id"]), True) for r in (changed, gone, moved)
    }

    fix = sync_table(feed_table, side(source, "s"), side(target, "t"), write=True)
    assert fix.written == 2  # the changed row, the misplaced row on its home shard
    assert fix.deleted == 2  # the deleted row, the misplaced copy
    src = digest_table(feed_table, side(source, "s"), sharded=True)
    assert digest_table(feed_table, side(target, "t"), sharded=True, placed=True) == src
    assert sum(len(v) for v in all_rows(target).values()) == 119


def test_a_walk_limited_to_buckets_touches_only_them(
    pair: tuple[ShardedDatabase, ShardedDatabase],
) -> None:
    source, target = pair
    rows = entries(200)
    insert(source, rows)

    def bucket(row: dict[str, object]) -> int:
        return bucket_of((row["follower_id"], row["photo_id"]), True)

    wanted = {bucket(rows[0]), bucket(rows[1])}
    result = sync_table(feed_table, side(source, "s"), side(target, "t"), write=True, only=wanted)
    expected = [r for r in rows if bucket(r) in wanted]
    assert result.written == len(expected) > 0
    assert set(result.source) == wanted
    limited = digest_table(feed_table, side(target, "t"), sharded=True, only=wanted)
    assert set(limited) == wanted


def test_logical_shard_matches_the_id_module() -> None:
    for shard in (0, 1, 2, 31, 32, 1023, 2048, 4095):
        some_id = make_id(1_700_000_000_000, shard, 12345)
        assert logical_shard(some_id) == shard == shard_of(some_id)


def test_plain_progress_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    import entrypoints.migrate.progress as progress_module

    lines: list[str] = []
    monkeypatch.setattr(progress_module, "LINE_INTERVAL", 0.0)
    with Progress("lines", lines.append).task("follows", 1000) as task:
        task.advance(500)
    assert lines[0].startswith("follows: 500 rows of 1,000, ")
    assert "rows/s" in lines[0]
    assert lines[-1].endswith("(done)")
    quiet: list[str] = []
    with Progress("quiet", quiet.append).task("follows", 10) as task:
        task.advance(10)
    assert quiet == []
