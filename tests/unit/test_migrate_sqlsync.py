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
    Buckets,
    ShardSet,
    bucket_of,
    by_logical_shard,
    digest_table,
    logical_shard,
    mismatched,
    sync_table,
)
from scalecore.checksum import Digest
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


def test_a_walk_limited_to_primary_keys_reads_and_writes_exactly_them(
    pair: tuple[ShardedDatabase, ShardedDatabase],
) -> None:
    # The follow and feed tables have two key columns: the keys wanted are looked up as
    # pairs, never as every row of each first column listed.
    source, target = pair
    rows = entries(200)  # 40 followers, each with several entries
    insert(source, rows)
    keys = sorted((r["follower_id"], r["photo_id"]) for r in rows[::9])
    result = sync_table(feed_table, side(source, "s"), side(target, "t"), write=True, wanted=keys)
    assert result.read == result.written == len(keys)
    copied = sorted(row[:2] for found in all_rows(target).values() for row in found)
    assert copied == keys
    back = digest_table(feed_table, side(target, "t"), sharded=True, placed=True, wanted=keys)
    assert back == result.source
    assert back.rows() == len(keys)


def test_buckets_hold_digests_compactly_with_the_semantics_of_a_dict() -> None:
    expected: dict[int, Digest] = {}
    compact = Buckets()
    hashes = [(b * 7919 + 13) << 100 for b in range(5000)]  # sums wrap past 2**128
    for n in range(3 * 5000):
        bucket = (n * 37) % 5000 - 1  # -1 too (a table not sharded by id)
        expected.setdefault(bucket, Digest()).add_hash(hashes[n % 5000])
        compact.add_hash(bucket, hashes[n % 5000])
    assert compact == expected  # past the switch from a dict to arrays
    assert list(compact) == sorted(expected)
    assert compact.rows() == 15_000
    assert compact.rows([-1, 0]) == 6
    assert compact[41] == expected[41]
    assert 5000 not in compact
    assert compact.get(10**6) is None
    compact[41] = Digest()  # an empty digest is an absent bucket
    assert 41 not in compact
    assert len(compact) == 4999
    trimmed = compact.without([0, 1], shards=[2])
    assert set(compact) - set(trimmed) == {0, 1, *range(64, 96)}
    assert mismatched(trimmed, compact) == {0, 1, *range(64, 96)}
    trimmed.copy_from(compact, [0, 41])
    assert mismatched(trimmed, compact) == {1, *range(64, 96)}
    trimmed.merge(7, Digest(-(trimmed.rows([7]) + 1), 0))
    assert trimmed.negative() == [7]
    small = Buckets({3: Digest(2, 5)})
    assert mismatched(small, Buckets({3: Digest(2, 5), 4: Digest()})) == set()
    small.merge(3, Digest(-3, 0))
    assert small.negative() == [3]
