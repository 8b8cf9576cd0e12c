"""Resharding the photo feed's databases: the fence against a stale process, resuming an
interrupted reshard, and how much moves. On SQLite files and on PostgreSQL databases.

The stale process is a second ``Databases`` built from the old config before the move,
with a layout cache of an hour (``layout_ttl``), that read the layout before the move: it
routes to the old owner, which refuses, and the write lands on the new owner.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from adapters.photofeed.feed.sql import SqlFeedRepository
from adapters.photofeed.schema import METADATA, feed_table, users_table
from adapters.photofeed.users.sql import SqlUserRepository
from adapters.sql.layout import LAYOUT_TTL, identity, shard_keys
from adapters.sql.reshard import Resharder, resharders_for
from adapters.sql.shards import Databases, ShardedDatabase
from scalecore.errors import ConfigError
from scalecore.ids import LOGICAL_SHARDS, IdGenerator, logical_shard_for, make_id, shard_of
from scalecore.photofeed.models import Account, FeedEntry, User


@pytest.fixture(
    params=[
        pytest.param("sqlite"),
        pytest.param("postgres", marks=pytest.mark.integration),
    ]
)
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    """Four database URLs of the parametrised backend, private to this test."""
    if request.param == "sqlite":
        return [f"sqlite:///{tmp_path}/shard-{i}.db" for i in range(4)]
    scratch: Callable[[str], str] = request.getfixturevalue("scratch_database")
    return [scratch(f"rs{i}") for i in range(4)]


def databases(shards: list[str], **options: Any) -> Databases:
    return Databases(metadata=METADATA, shards=shards, create_databases=True, **options)


def sign_up(users: SqlUserRepository, names: list[str]) -> dict[str, str]:
    ids = IdGenerator()
    made = {}
    for name in names:
        user = User(id=ids.new_for(name), username=name, created_at=time.time())
        users.add(Account(user=user, password_hash="x"))
        made[name] = user.id
    return made


def reshard(new: Databases, old: Databases | None = None, **options: object) -> Resharder:
    previous = old.store("users") if old is not None else None
    return Resharder(database=new.store("users"), previous=previous, **options)  # type: ignore[arg-type]


def where(shards: list[str], username: str) -> list[int]:
    """The indexes of the databases holding ``username``'s row."""
    found = []
    for index, url in enumerate(shards):
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.connect() as conn:
                if not sa.inspect(conn).has_table(users_table.name):
                    continue
                query = sa.select(sa.func.count()).where(users_table.c.username == username)
                if conn.scalar(query):
                    found.append(index)
        finally:
            engine.dispose()
    return found


def test_shard_keys_select_exactly_the_ids_of_a_logical_shard() -> None:
    for logical in (0, 1, 2, 1234, LOGICAL_SHARDS - 1):
        keys = set(shard_keys(logical))
        assert len(keys) == 16
        for random in (0, 1, 2**63, 2**64 - 1, 12345678901234):
            assert make_id(1_700_000_000_000, logical, random)[10:14] in keys
        neighbours = [n for n in (logical - 1, logical + 1) if 0 <= n < LOGICAL_SHARDS]
        others = {make_id(0, other, 2**64 - 1)[10:14] for other in neighbours}
        assert not keys & others


def test_identities_never_hold_passwords() -> None:
    name = identity("postgresql+psycopg://app:hunter2@db2:6432/photos?sslmode=require")
    assert name == "postgresql://app@db2:6432/photos"
    assert identity("sqlite:///var/../var/x.db") == f"sqlite:///{Path('var/x.db').resolve()}"


def test_a_stale_process_write_is_refused_by_the_old_owner_and_retried_on_the_new_one(
    urls: list[str],
) -> None:
    two, three = databases(urls[:2]), databases(urls[:3])
    two.create_schema()
    users = SqlUserRepository(database=two.store("users"))
    sign_up(users, [f"early{i}" for i in range(40)])
    first = reshard(three, two, batch=64)
    first.execute(first.plan())  # 2 -> 3: the live layout now exists
    first.dispose()

    # A process on the old file that trusts its cached layout for an hour.
    stale_databases = databases(urls[:2], layout_ttl=3600)
    stale = stale_databases.store("users")
    layout = stale.live_layout()
    assert layout is not None
    assert len(layout.databases) == 3
    back = reshard(two, batch=64)  # 3 -> 2 while the stale process keeps its view
    plan = back.plan()
    moving = {move.logical for move in plan.moves}
    back.execute(plan)
    back.dispose()
    assert stale.live_layout() is layout  # still the view from before the move

    name = next(f"late{i}" for i in range(10_000) if logical_shard_for(f"late{i}") in moving)
    logical = logical_shard_for(name)
    old_owner = layout.databases.index(layout.owner(logical))
    assert old_owner == 2
    stale_users = SqlUserRepository(database=stale)
    made = sign_up(stale_users, [name])
    assert where(urls[:3], name) == [two.store("users").shard_for(logical)]
    assert stale_users.get(made[name]).username == name  # the read follows the move too
    assert stale_users.get_by_username(name).id == made[name]
    # Everyone else is still found, and only on their owner.
    restarted = databases(urls[:2])  # a process started after the move
    fresh = SqlUserRepository(database=restarted.store("users"))
    for index in range(40):
        assert fresh.get_by_username(f"early{index}").username == f"early{index}"
    restarted.dispose()
    stale_databases.dispose()
    two.dispose()
    three.dispose()


def test_an_interrupted_reshard_resumes_and_loses_nothing(urls: list[str]) -> None:
    three, four = databases(urls[:3]), databases(urls)
    three.create_schema()
    users = SqlUserRepository(database=three.store("users"))
    made = sign_up(users, [f"user{i}" for i in range(60)])

    class Killed(BaseException):
        pass

    def crash(done: int, total: int) -> None:
        if done >= total // 3:
            raise Killed

    first = reshard(four, three, batch=32, progress=crash)
    plan = first.plan()
    moved = len(plan.moves)
    assert abs(moved / LOGICAL_SHARDS - 1 / 4) <= 0.1 / 4  # 1/(N+1) within 10%
    with pytest.raises(Killed):
        first.execute(plan)
    first.dispose()
    more = sign_up(users, [f"between{i}" for i in range(20)])  # writes go on meanwhile

    again = reshard(four, batch=32)  # no --from needed now: the live layout exists
    resumed = again.plan()
    assert resumed.resuming
    assert {m.logical for m in resumed.moves} <= {m.logical for m in plan.moves}
    report = again.execute(resumed)
    again.dispose()
    assert report.moved == len(resumed.moves)

    old_file = databases(urls[:3])  # a process still on the 3-database file
    after = SqlUserRepository(database=old_file.store("users"))
    for name, user_id in {**made, **more}.items():
        assert where(urls, name) == [four.store("users").router.shard_for(shard_of(user_id))]
        assert after.get(user_id).username == name
    old_file.dispose()
    three.dispose()
    four.dispose()


def test_without_a_live_layout_the_first_reshard_needs_the_current_config(
    urls: list[str],
) -> None:
    resharder = reshard(databases(urls[:3]))
    try:
        with pytest.raises(ConfigError, match="--from"):
            resharder.plan()
    finally:
        resharder.dispose()


def test_the_fence_check_does_not_run_without_a_live_layout(urls: list[str]) -> None:
    db: ShardedDatabase = databases(urls[:2]).store("users")
    db.create_schema()
    assert db.live_layout() is None
    assert db.shard_count == 2
    assert LAYOUT_TTL > 0
    db.dispose()


def feed_rows(shards: list[str]) -> dict[tuple[str, str], list[int]]:
    """(follower, photo) -> the indexes of the databases holding that feed row."""
    found: dict[tuple[str, str], list[int]] = {}
    for index, url in enumerate(shards):
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.connect() as conn:
                if not sa.inspect(conn).has_table(feed_table.name):
                    continue
                query = sa.select(feed_table.c.follower_id, feed_table.c.photo_id)
                for follower, photo in conn.execute(query):
                    found.setdefault((follower, photo), []).append(index)
        finally:
            engine.dispose()
    return found


def run_all(groups: list[tuple[str, tuple[str, ...], Resharder]]) -> dict[str, int]:
    """Plan and execute every layout's reshard; the logical shards moved per layout."""
    moved = {}
    try:
        for name, _stores, resharder in groups:
            plan = resharder.plan()
            moved[name] = len(plan.moves)
            if plan.moves or plan.bootstrap:
                resharder.execute(plan)
    finally:
        for _name, _stores, resharder in groups:
            resharder.dispose()
    return moved


def test_a_store_moves_onto_databases_of_its_own_and_back(urls: list[str]) -> None:
    shared, own = urls[:2], urls[2]
    two = databases(shared)
    two.create_schema()
    users = SqlUserRepository(database=two.store("users"))
    made = sign_up(users, [f"user{i}" for i in range(30)])
    ids = IdGenerator()
    feed = SqlFeedRepository(database=two.store("feed"))
    entries = [
        FeedEntry(follower, ids.new(shard_of(owner)), owner, 1.0, 1.0)
        for follower in made.values()
        for owner in list(made.values())[:3]
    ]
    feed.merge(entries)
    assert run_all(resharders_for(two, two)) == {"default": 0}  # the first live layout

    # A process on the old file, its layout read before the move and trusted for an hour.
    stale_databases = databases(shared, layout_ttl=3600)
    stale_feed = stale_databases.store("feed")
    assert stale_feed.live_layout() is not None

    split = databases(shared, stores={"feed": {"shards": [own]}})
    groups = resharders_for(split, two, batch=128)
    assert [(name, stores) for name, stores, _ in groups] == [
        ("feed", ("feed",)),  # a store leaving its group moves first
        ("default", ("follows", "photos", "users")),
    ]
    assert run_all(groups) == {"default": 0, "feed": LOGICAL_SHARDS}
    placed = feed_rows(urls[:3])
    assert {(e.follower_id, e.photo_id) for e in entries} == set(placed)
    assert all(where == [2] for where in placed.values())
    for name in made:  # the users stayed where they were
        assert len(where(shared, name)) == 1

    # The stale process writes and reads the moved store: refused by the old owner, it
    # follows the store's own layout to the new database.
    late = FeedEntry(made["user0"], ids.new(shard_of(made["user1"])), made["user1"], 2.0, 2.0)
    SqlFeedRepository(database=stale_feed).merge([late])
    assert feed_rows(urls[:3])[(late.follower_id, late.photo_id)] == [2]
    fresh_old_file = databases(shared)  # started after the move, with the old file
    for reader in (stale_feed, fresh_old_file.store("feed"), split.store("feed")):
        page = SqlFeedRepository(database=reader).page(made["user0"], limit=10)
        assert {entry.photo_id for entry in page} >= {late.photo_id}

    # And back onto the shared databases, by the old file (the store keeps its layout).
    assert run_all(resharders_for(fresh_old_file, batch=128)) == {
        "default": 0,
        "feed": LOGICAL_SHARDS,
    }
    placed = feed_rows(urls[:3])
    router = two.store("users").router
    for (follower, _photo), at in placed.items():
        assert at == [router.shard_for(shard_of(follower))]
    assert len(placed) == len(entries) + 1
    for database in (two, split, stale_databases, fresh_old_file):
        database.dispose()


def test_scatter_gather_reads_a_moving_logical_shard_once(urls: list[str]) -> None:
    two, three = databases(urls[:2]), databases(urls[:3])
    two.create_schema()
    users = SqlUserRepository(database=two.store("users"))

    class Killed(BaseException):
        pass

    def crash(done: int, total: int) -> None:
        raise Killed  # after the first batch switched, before any row was deleted

    first = reshard(three, two, batch=8, progress=crash)
    plan = first.plan()
    source = plan.moves[0].source
    chunk = {m.logical for m in plan.moves if m.source == source}
    chunk = set(sorted(chunk)[:64])  # copied together; the first 8 switched too
    moving = [f"user{i}" for i in range(20_000) if logical_shard_for(f"user{i}") in chunk]
    made = sign_up(users, [f"user{i}" for i in range(40)] + moving[:30])
    with pytest.raises(Killed):
        first.execute(plan)
    first.dispose()
    doubled = [name for name in made if len(where(urls[:3], name)) == 2]
    assert doubled  # copied rows are on the old and the new owner now

    reader = databases(urls[:2])  # a process on the old file
    found = SqlUserRepository(database=reader.store("users"))
    recent = found.recent(limit=len(made) + 10)
    assert sorted(user.username for user in recent) == sorted(made)
    matches = found.search("user", limit=len(made) + 10)
    assert sorted(user.username for user in matches) == sorted(made)
    page = found.recent(limit=10)  # cut by the limit: never a doubled or a wrong row
    assert page
    assert [user.id for user in page] == [user.id for user in recent][: len(page)]
    assert reader.store("users").count_rows(users_table) == len(made)
    reader.dispose()
    two.dispose()
    three.dispose()


def test_one_config_moves_a_store_out_and_grows_the_group(urls: list[str]) -> None:
    two = databases(urls[:2])
    two.create_schema()
    made = sign_up(SqlUserRepository(database=two.store("users")), [f"u{i}" for i in range(30)])
    ids = IdGenerator()
    entries = [
        FeedEntry(follower, ids.new(shard_of(follower)), follower, 1.0, 1.0)
        for follower in made.values()
    ]
    SqlFeedRepository(database=two.store("feed")).merge(entries)
    assert run_all(resharders_for(two, two)) == {"default": 0}  # the first live layout

    new = databases(urls[:3], stores={"feed": {"shards": [urls[3]]}})
    moved = run_all(resharders_for(new, two, batch=128))
    assert moved["feed"] == LOGICAL_SHARDS
    assert abs(moved["default"] / LOGICAL_SHARDS - 1 / 3) <= 0.1 / 3
    placed = feed_rows(urls)
    assert set(placed) == {(e.follower_id, e.photo_id) for e in entries}
    assert all(at == [3] for at in placed.values())  # none left behind by the group's move
    router = new.store("users").router
    old_file = databases(urls[:2])
    for name, user_id in made.items():
        assert where(urls, name) == [router.shard_for(shard_of(user_id))]
        page = SqlFeedRepository(database=old_file.store("feed")).page(user_id, limit=5)
        assert [entry.follower_id for entry in page] == [user_id]
    for database in (two, new, old_file):
        database.dispose()
