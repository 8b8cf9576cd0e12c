"""Sharded SQL: routing of writes, units of work, scatter-gather, replicas, logical stores.

The core suite runs against every backend in ``SHARD_URLS``: three SQLite files, and three
PostgreSQL databases (``scalecore_test_shard_0..2``, created on first use, tables dropped
and recreated for each test). Replicas and logical stores are exercised on SQLite files,
which stand in for servers whose contents the test controls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.sql.engine import make_engine
from adapters.sql.layout import MOVED, STATE, check_owned, ensure_state, owned_states
from adapters.sql.shards import Databases, ShardedDatabase
from scalecore.clock import ManualClock
from scalecore.errors import (
    BackendUnavailable,
    ConfigError,
    Conflict,
    InvalidInput,
    NotFound,
    ShardMoved,
)
from scalecore.ids import IdGenerator, logical_shard_for, make_id, shard_of
from scalecore.ports.sharding import ShardRouter
from scalecore.routing import JumpHashRouter, ModuloRouter

SHARDS = 3
METADATA = sa.MetaData()
PHOTOS = sa.Table(
    "photos",
    METADATA,
    sa.Column("id", sa.String(26), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("caption", sa.String(200), nullable=False, server_default=""),
)
#: A shard URL that refuses connections at once and carries a password that must not leak.
BROKEN_URL = "postgresql+psycopg://scalecore:hunter2-secret@127.0.0.1:1/nowhere"


def _sqlite_urls(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    return [f"sqlite:///{tmp_path}/shard-{i}.db" for i in range(SHARDS)]


def _postgres_urls(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    server: str = request.getfixturevalue("postgres_url")
    return [f"{server}/scalecore_test_shard_{i}" for i in range(SHARDS)]


SHARD_URLS: dict[str, Callable[[pytest.FixtureRequest, Path], list[str]]] = {
    "sqlite": _sqlite_urls,
    "postgres": _postgres_urls,
}


@pytest.fixture(
    params=[
        pytest.param("sqlite"),
        pytest.param("postgres", marks=pytest.mark.integration),
    ]
)
def shard_urls(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    """One database URL per physical shard, of the parametrised backend."""
    return SHARD_URLS[request.param](request, tmp_path)


MakeDb = Callable[..., ShardedDatabase]


@pytest.fixture
def make_db(shard_urls: list[str]) -> Iterator[MakeDb]:
    """Build ShardedDatabases over ``shard_urls`` (overridable); all disposed afterwards."""
    made: list[ShardedDatabase] = []

    def make(
        *, shards: Sequence[Any] | None = None, router: ShardRouter | None = None, **kw: Any
    ) -> ShardedDatabase:
        database = ShardedDatabase(
            shards=list(shards if shards is not None else shard_urls),
            router=router or JumpHashRouter(SHARDS),
            metadata=METADATA,
            create_database=shard_urls[0].startswith("postgresql"),
            **kw,
        )
        made.append(database)
        return database

    yield make
    for database in made:
        database.dispose()


@pytest.fixture
def db(make_db: MakeDb) -> ShardedDatabase:
    """A three-shard database with fresh, empty tables on every shard."""
    database = make_db()
    database.drop_schema()
    database.create_schema()
    return database


def insert_photos(db: ShardedDatabase, photos: Sequence[tuple[str, str]]) -> None:
    """Insert (id, owner) rows, each on the shard its id's logical shard routes to."""
    by_shard: dict[int, list[dict[str, str]]] = {}
    for photo_id, owner in photos:
        by_shard.setdefault(db.shard_for(shard_of(photo_id)), []).append(
            {"id": photo_id, "owner": owner}
        )
    for index, rows in by_shard.items():
        with db.unit_of_work(shard=index) as conn:
            conn.execute(PHOTOS.insert(), rows)


def rows_on(db: ShardedDatabase, index: int) -> list[tuple[str, str]]:
    with db.read(shard=index) as conn:
        return [(r.id, r.owner) for r in conn.execute(sa.select(PHOTOS.c.id, PHOTOS.c.owner))]


def clear(db: ShardedDatabase) -> None:
    for index in range(db.shard_count):
        with db.unit_of_work(shard=index) as conn:
            conn.execute(PHOTOS.delete())


# --- routing and units of work -------------------------------------------------------------


def test_writes_land_on_the_routed_shard_only(db: ShardedDatabase) -> None:
    ids = IdGenerator(ManualClock())
    photos = [(ids.new_for(f"user-{i % 20}"), f"user-{i % 20}") for i in range(90)]
    for photo_id, owner in photos:
        with db.unit_of_work(logical_shard_for(owner)) as conn:
            conn.execute(PHOTOS.insert().values(id=photo_id, owner=owner))
    seen: list[tuple[str, str]] = []
    for index in range(SHARDS):
        on_shard = rows_on(db, index)
        assert on_shard, f"shard {index} got nothing: the routing does not spread"
        for photo_id, owner in on_shard:
            assert db.shard_for(logical_shard_for(owner)) == index
            assert db.shard_for(shard_of(photo_id)) == index  # the id alone finds it
        seen.extend(on_shard)
    assert sorted(seen) == sorted(photos)


def test_shard_for_is_the_routers_answer(make_db: MakeDb) -> None:
    router = ModuloRouter(SHARDS)
    database = make_db(router=router)
    assert database.router is router
    assert database.shard_count == len(database) == SHARDS
    for key in (0, 1, 2, 5, "alice", "bob"):
        assert database.shard_for(key) == router.shard_for(key)


def test_unit_of_work_rolls_back_when_the_block_raises(db: ShardedDatabase) -> None:
    key = logical_shard_for("ann")
    ids = IdGenerator(ManualClock())

    def write_two_then_fail() -> None:
        with db.unit_of_work(key) as conn:
            conn.execute(PHOTOS.insert().values(id=ids.new(key), owner="ann"))
            conn.execute(PHOTOS.insert().values(id=ids.new(key), owner="ann"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_two_then_fail()
    assert all(rows_on(db, index) == [] for index in range(SHARDS))


def test_a_violated_constraint_is_a_conflict_and_nothing_is_half_written(
    db: ShardedDatabase,
) -> None:
    key = logical_shard_for("ann")
    ids = IdGenerator(ManualClock())
    taken = ids.new(key)
    insert_photos(db, [(taken, "ann")])
    fresh = ids.new(key)

    def write_fresh_then_duplicate() -> None:
        with db.unit_of_work(key) as conn:
            conn.execute(PHOTOS.insert().values(id=fresh, owner="ann"))
            conn.execute(PHOTOS.insert().values(id=taken, owner="ann"))

    with pytest.raises(Conflict):
        write_fresh_then_duplicate()
    assert rows_on(db, db.shard_for(key)) == [(taken, "ann")]


def test_unit_of_work_and_read_take_a_key_or_a_shard_index(db: ShardedDatabase) -> None:
    for bad in ({}, {"key": 1, "shard": 0}, {"shard": SHARDS}, {"shard": -1}):
        with pytest.raises(InvalidInput), db.unit_of_work(**bad):
            pass
        with pytest.raises(InvalidInput), db.read(**bad):
            pass
    with pytest.raises(InvalidInput), db.unit_of_work(1.5):  # type: ignore[arg-type]
        pass


def test_read_never_commits(db: ShardedDatabase) -> None:
    with db.read(shard=0) as conn:
        conn.execute(PHOTOS.insert().values(id=make_id(1, 0, 0), owner="ghost"))
    assert rows_on(db, 0) == []


def test_create_schema_is_idempotent(db: ShardedDatabase) -> None:
    ids = IdGenerator(ManualClock())
    photo = (ids.new_for("ann"), "ann")
    insert_photos(db, [photo])
    db.create_schema()
    db.create_schema()
    assert [row for i in range(SHARDS) for row in rows_on(db, i)] == [photo]


# --- scatter-gather and count ----------------------------------------------------------------


def newest(limit: int | None) -> Callable[[sa.Connection, int], list[str]]:
    """The per-shard half of "newest N": each shard sorts and limits itself."""

    def query(conn: sa.Connection, index: int) -> list[str]:
        statement = sa.select(PHOTOS.c.id).order_by(PHOTOS.c.id.desc())
        if limit is not None:
            statement = statement.limit(limit)
        return list(conn.scalars(statement))

    return query


photo_rows = st.lists(
    st.tuples(st.integers(0, 50), st.integers(0, 40)),  # (timestamp ms, owner number)
    max_size=40,
)


@given(rows=photo_rows, limit=st.one_of(st.none(), st.integers(0, 45)), descending=st.booleans())
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_scatter_gather_equals_the_global_sort(
    db: ShardedDatabase, rows: list[tuple[int, int]], limit: int | None, descending: bool
) -> None:
    clear(db)
    photos = [
        (make_id(ts, logical_shard_for(f"u{owner}"), n), f"u{owner}")
        for n, (ts, owner) in enumerate(rows)
    ]
    insert_photos(db, photos)

    def query(conn: sa.Connection, index: int) -> list[str]:
        column = PHOTOS.c.id.desc() if descending else PHOTOS.c.id.asc()
        statement = sa.select(PHOTOS.c.id).order_by(column)
        return list(conn.scalars(statement if limit is None else statement.limit(limit)))

    got = db.scatter_gather(query, order_key=lambda i: i, limit=limit, descending=descending)
    expected = sorted((p for p, _ in photos), reverse=descending)
    assert got == expected[:limit]


def test_scatter_gather_newest_n_with_rows_as_tuples(db: ShardedDatabase) -> None:
    ids = IdGenerator(ManualClock())
    photos = [(ids.new_for(f"user-{i}"), f"user-{i}") for i in range(30)]
    insert_photos(db, photos)

    def query(conn: sa.Connection, index: int) -> list[tuple[str, str, int]]:
        statement = sa.select(PHOTOS.c.id, PHOTOS.c.owner).order_by(PHOTOS.c.id.desc()).limit(5)
        return [(r.id, r.owner, index) for r in conn.execute(statement)]

    got = db.scatter_gather(query, order_key=lambda row: row[0], limit=5)
    assert [(i, o) for i, o, _ in got] == sorted(photos, reverse=True)[:5]
    assert all(db.shard_for(shard_of(i)) == index for i, _, index in got)


def test_scatter_gather_refuses_a_negative_limit(db: ShardedDatabase) -> None:
    with pytest.raises(InvalidInput):
        db.scatter_gather(newest(None), order_key=lambda i: i, limit=-1)
    assert db.scatter_gather(newest(None), order_key=lambda i: i, limit=0) == []


def test_count_sums_every_shard(db: ShardedDatabase) -> None:
    ids = IdGenerator(ManualClock())
    insert_photos(db, [(ids.new_for(f"u{i}"), f"u{i}") for i in range(25)])

    def count(conn: sa.Connection, index: int) -> int:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(PHOTOS)) or 0)

    assert db.count(count) == 25
    assert sum(len(rows_on(db, i)) for i in range(SHARDS)) == 25


def test_a_failing_shard_is_named_by_index_never_by_url(
    db: ShardedDatabase, make_db: MakeDb, shard_urls: list[str]
) -> None:
    urls = list(shard_urls)
    urls[1] = BROKEN_URL
    broken = make_db(shards=urls)  # constructing connects to nothing
    with pytest.raises(BackendUnavailable) as info:
        broken.scatter_gather(newest(10), order_key=lambda i: i, limit=10)
    assert "shard 1" in str(info.value)
    chain = [info.value, info.value.__cause__]
    for error in chain:
        assert "hunter2" not in str(error)
        assert "127.0.0.1:1" not in str(error)
    with pytest.raises(BackendUnavailable, match="shard 1"):
        broken.count(lambda conn, index: 1)
    assert "hunter2" not in repr(broken)


def test_errors_of_the_query_itself_propagate_unchanged(db: ShardedDatabase) -> None:
    def query(conn: sa.Connection, index: int) -> list[str]:
        if index == 2:
            raise LookupError("a bug in the caller's query")
        return []

    with pytest.raises(LookupError, match="a bug"):
        db.scatter_gather(query, order_key=lambda i: i, limit=None)


def test_dispose_leaves_the_database_usable(db: ShardedDatabase) -> None:
    ids = IdGenerator(ManualClock())
    insert_photos(db, [(ids.new_for("ann"), "ann")])
    db.dispose()
    assert len(db.scatter_gather(newest(5), order_key=lambda i: i, limit=5)) == 1
    db.dispose()


# --- configuration ----------------------------------------------------------------------------


def test_configuration_errors_name_the_option(shard_urls: list[str]) -> None:
    def build(**kw: Any) -> ShardedDatabase:
        options: dict[str, Any] = {
            "shards": shard_urls,
            "router": JumpHashRouter(SHARDS),
            "metadata": METADATA,
        }
        return ShardedDatabase(**{**options, **kw})

    cases: list[tuple[dict[str, Any], str]] = [
        ({"router": JumpHashRouter(2)}, "router"),
        ({"router": "jump"}, "router"),
        ({"shards": []}, "shards"),
        ({"shards": "sqlite:///one.db"}, "shards"),
        ({"shards": [shard_urls[0], 5, shard_urls[2]]}, "shards[1]"),
        (
            {"shards": [shard_urls[0], {"url": shard_urls[1], "lag": 1}, shard_urls[2]]},
            "shards[1].lag",
        ),
        (
            {"shards": [shard_urls[0], {"url": shard_urls[1], "replicas": "x"}, shard_urls[2]]},
            "shards[1].replicas",
        ),
        ({"shards": [shard_urls[0], {"replicas": []}, shard_urls[2]]}, "shards[1].url"),
        ({"shards": [shard_urls[0], "mysql+nope://u:pw-9@h/db", shard_urls[2]]}, "shards[1]"),
        ({"shards": [shard_urls[0], "not a url :pw-9", shard_urls[2]]}, "shards[1]"),
        ({"metadata": {}}, "metadata"),
        ({"create_database": "yes"}, "create_database"),
        ({"max_workers": 0}, "max_workers"),
    ]
    for options, key in cases:
        with pytest.raises(ConfigError) as info:
            build(**options)
        assert info.value.key == key, (options, info.value)
        assert "pw-9" not in str(info.value)


# --- replicas (SQLite files stand in for replicas the test fills differently) -----------------


def _fill_replica(url: str, caption: str) -> None:
    engine = make_engine(url)
    try:
        METADATA.create_all(engine)
        with engine.begin() as conn:
            conn.execute(PHOTOS.insert().values(id=make_id(1, 0, 0), owner="r", caption=caption))
    finally:
        engine.dispose()


def _captions(conn: sa.Connection) -> list[str]:
    return list(conn.scalars(sa.select(PHOTOS.c.caption).order_by(PHOTOS.c.caption)))


def test_reads_go_to_replicas_round_robin_and_writes_to_the_primary(tmp_path: Path) -> None:
    url = {name: f"sqlite:///{tmp_path}/{name}.db" for name in ("p0", "r0a", "r0b", "p1")}
    _fill_replica(url["r0a"], "replica-a")
    _fill_replica(url["r0b"], "replica-b")
    database = ShardedDatabase(
        shards=[{"url": url["p0"], "replicas": [url["r0a"], url["r0b"]]}, url["p1"]],
        router=ModuloRouter(2),
        metadata=METADATA,
    )
    try:
        database.create_schema()
        for key, caption in ((0, "primary-0"), (1, "primary-1")):
            with database.unit_of_work(key) as conn:
                conn.execute(
                    PHOTOS.insert().values(id=make_id(2, key, 0), owner="p", caption=caption)
                )
        seen = []
        for _ in range(4):
            with database.read(0) as conn:
                seen.append(_captions(conn))
        assert seen == [["replica-a"], ["replica-b"], ["replica-a"], ["replica-b"]]
        with database.read(shard=1) as conn:  # no replicas: the primary serves
            assert _captions(conn) == ["primary-1"]
        with database.unit_of_work(0) as conn:  # writers (and their reads) see the primary
            assert _captions(conn) == ["primary-0"]
        gathered = database.scatter_gather(
            lambda conn, index: _captions(conn), order_key=lambda c: c, limit=None
        )
        assert "primary-0" not in gathered
        assert "primary-1" in gathered
        assert {"replica-a", "replica-b"} & set(gathered)
    finally:
        database.dispose()
    for name in ("r0a", "r0b"):  # the writes never reached a replica
        engine = make_engine(url[name])
        with engine.connect() as conn:
            assert _captions(conn) == [f"replica-{name[-1]}"]
        engine.dispose()


# --- logical stores (vertical partitioning) ------------------------------------------------


def _store_metadata() -> dict[str, sa.MetaData]:
    stores = {name: sa.MetaData() for name in ("users", "photos", "feed", "sessions")}
    sa.Table("users", stores["users"], sa.Column("name", sa.String(64), primary_key=True))
    sa.Table("photos", stores["photos"], sa.Column("id", sa.String(26), primary_key=True))
    sa.Table("feed", stores["feed"], sa.Column("id", sa.String(26), primary_key=True))
    sa.Table("sessions", stores["sessions"], sa.Column("id", sa.String(64), primary_key=True))
    return stores


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_each_logical_store_may_have_its_own_databases(tmp_path: Path) -> None:
    def url(name: str) -> str:
        return f"sqlite:///{tmp_path}/{name}.db"

    # The [database] config table, passed as it is.
    config: dict[str, Any] = {
        "strategy": "modulo",
        "shards": [url("main-0"), url("main-1")],
        "create_databases": False,
        "stores": {
            "photos": {
                "strategy": "directory",
                "shards": [url("photos-0"), url("photos-1"), url("photos-2")],
                "pins": {"7": 2, "celebrity": 0},
            },
            "sessions": url("sessions"),
        },
    }
    databases = Databases(metadata=_store_metadata(), **config)
    try:
        assert databases.names == ("feed", "photos", "sessions", "users")
        users, feed = databases.store("users"), databases["feed"]
        photos, sessions = databases.store("photos"), databases.store("sessions")
        # Stores without their own config share the default shards: one group, each
        # store seeing it through a view that would follow a live layout of its own.
        assert users.layout_name == feed.layout_name == "default"
        assert users.metadata is feed.metadata
        assert users.layout_names == ("users", "default")
        assert databases.groups()["default"].layout_names == ("default",)
        assert (users.shard_count, photos.shard_count, sessions.shard_count) == (2, 3, 1)
        assert isinstance(users.router, ModuloRouter)
        assert photos.shard_for(7) == 2  # a digit pin from TOML pins the integer key
        assert photos.shard_for("celebrity") == 0
        databases.create_schema()
        databases.create_schema()
        for index in range(2):
            assert _tables(url(f"main-{index}")) == {"users", "feed"}
        for index in range(3):
            assert _tables(url(f"photos-{index}")) == {"photos"}
        assert _tables(url("sessions")) == {"sessions"}
        photos_table = databases.store("photos").metadata.tables["photos"]
        with photos.unit_of_work(7) as conn:
            conn.execute(photos_table.insert().values(id="p"))
        with photos.read(shard=2) as conn:
            assert list(conn.scalars(sa.select(photos_table.c.id))) == ["p"]
        with pytest.raises(NotFound, match="known: feed, photos, sessions, users"):
            databases.store("likes")
        databases.drop_schema()
        assert _tables(url("sessions")) == set()
    finally:
        databases.dispose()


def test_logical_store_configuration_errors_name_the_key(tmp_path: Path) -> None:
    base = {"metadata": _store_metadata(), "shards": [f"sqlite:///{tmp_path}/m.db"]}
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"stores": {"phtos": "sqlite:///x.db"}}, "stores.phtos", "did you mean 'photos'"),
        ({"stores": {"photos": {"shards": ["sqlite:///a.db", 3]}}}, "stores.photos.shards[1]", ""),
        ({"stores": {"photos": {"shards": ["sqlite:///a.db"], "ttl": 3}}}, "stores.photos.ttl", ""),
        (
            {"stores": {"photos": {"shards": ["sqlite:///a.db"], "strategy": "ring"}}},
            "stores.photos.strategy",
            "",
        ),
        (
            {"stores": {"photos": {"shards": ["sqlite:///a.db"], "pins": {"a": 0}}}},
            "stores.photos.pins",
            "",
        ),
        (
            {
                "stores": {
                    "photos": {
                        "shards": ["sqlite:///a.db"],
                        "strategy": "directory",
                        "pins": {"a": 4},
                    }
                }
            },
            "stores.photos.pins.a",
            "",
        ),
        ({"stores": {"photos": 5}}, "stores.photos", ""),
        ({"stores": "photos"}, "stores", ""),
        ({"strategy": "ring"}, "strategy", ""),
        ({"shards": []}, "shards", ""),
        ({"metadata": {}}, "metadata", ""),
        ({"metadata": {"Users!": sa.MetaData()}}, "metadata", ""),
    ]
    for options, key, message in cases:
        with pytest.raises(ConfigError, match=message or None) as info:
            Databases(**{**base, **options})
        assert info.value.key == key, (options, info.value)


def test_two_default_sharded_stores_may_not_declare_the_same_table(tmp_path: Path) -> None:
    metadata = _store_metadata()
    sa.Table("users", metadata["feed"], sa.Column("x", sa.Integer, primary_key=True))
    with pytest.raises(ConfigError, match="both declare table 'users'"):
        Databases(metadata=metadata, shards=[f"sqlite:///{tmp_path}/m.db"])
    # giving one of them its own shards resolves it
    Databases(
        metadata=metadata,
        shards=[f"sqlite:///{tmp_path}/m.db"],
        stores={"feed": f"sqlite:///{tmp_path}/feed.db"},
    ).dispose()


def test_a_store_is_fenced_by_its_own_state_rows_before_its_groups(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/state.db")
    try:
        with engine.begin() as conn:
            ensure_state(conn, "default", {5, 6})
            ensure_state(conn, "feed", {6})
            conn.execute(
                STATE.update()
                .where(STATE.c.name == "feed", STATE.c.logical_shard == 5)
                .values(state=MOVED, moved_to="postgresql://app@feed0:5432/app")
            )
        with engine.begin() as conn:
            check_owned(conn, ("users", "default"), [5, 6], lock=True)  # no rows of its own
            check_owned(conn, ("feed", "default"), [6], lock=True)
            with pytest.raises(ShardMoved) as refused:
                check_owned(conn, ("feed", "default"), [5, 6], lock=True)
            assert refused.value.moved_to == "postgresql://app@feed0:5432/app"
            assert owned_states(conn, ("feed", "default"), [5, 6, 7], lock=False) == {6}
            assert owned_states(conn, ("users", "default"), [5, 6, 7], lock=False) == {5, 6}
    finally:
        engine.dispose()


def test_layout_ttl_must_be_a_number_of_seconds(tmp_path: Path) -> None:
    for bad in (-1, "2", True, 7200):
        with pytest.raises(ConfigError, match="layout_ttl"):
            ShardedDatabase(
                shards=[f"sqlite:///{tmp_path}/x.db"],
                router=JumpHashRouter(1),
                metadata=sa.MetaData(),
                layout_ttl=bad,  # type: ignore[arg-type]
            )
