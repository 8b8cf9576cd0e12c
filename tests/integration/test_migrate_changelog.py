"""The source's change log makes a later ``migrate`` pass short, and keeps it correct.

Real databases on both sides, both directions (a SQLite box to two PostgreSQL shards,
two PostgreSQL shards to a SQLite box), ``migrate`` called in process so a write can land
on the source *while* the first pass walks the follow table: the row written is one the
walk has already read, so only the change log can tell the next pass about it. Then:
the second pass copies that write (and only the rows near it), leaves the log empty,
``--verify`` agrees, a third pass writes nothing; ``--drop-change-log`` leaves no trigger
or log table behind and a pass after it still catches a change. A PostgreSQL transaction
still open when a pass reads the log keeps its entry for the next pass, and so does a pass
that dies before it records its walk or clears the log.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from adapters.photofeed.schema import (
    METADATA,
    follow_counts_table,
    followers_table,
    following_table,
    users_table,
)
from entrypoints.container import Container, close_adapters, create_tables
from entrypoints.migrate import Options, changelog, journal, migrate
from entrypoints.migrate.progress import Progress, Task
from entrypoints.migrate.sqlsync import PAGE_ROWS, ShardSet, digest_table
from entrypoints.photofeed.config import load_settings
from scalecore.ids import IdGenerator

pytestmark = [pytest.mark.integration]

USERS = 400
EDGES_PER_USER = 6  # 2,400 edges: the follow table is read in more than one page
SKIP = frozenset({"blobs", "sessions", "ledger"})


def box_config(path: Path, data_dir: Path) -> Path:
    path.write_text(f'[deployment]\nname = "box"\ndata_dir = "{data_dir}"\n')
    return path


def fleet_config(path: Path, data_dir: Path, urls: list[str]) -> Path:
    shards = ", ".join(f'"{url}"' for url in urls)
    path.write_text(
        f'[deployment]\nname = "fleet"\nmulti_node = true\ndata_dir = "{data_dir}"\n'
        f'[blobs]\nbackend = "localfs"\nroot = "{data_dir / "blobs"}"\n'
        'url_secret = "0123456789abcdef0123456789abcdef"\n'
        f"[database]\ncreate_databases = true\nshards = [{shards}]\n"
    )
    return path


class _Sides:
    """A config's databases, for writing rows as the site would and reading them back."""

    def __init__(self, config: Path) -> None:
        self.container = Container(settings=load_settings(str(config), environ={}))
        create_tables(self.container)
        self.databases = self.container.databases()

    def insert(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        store = self.databases.store(_store_of(table))
        first = next(iter(table.primary_key.columns)).name
        for row in rows:
            with store.unit_of_work(row[first]) as connection:
                connection.execute(table.insert(), row)

    def execute(self, table: sa.Table, key: str, statement: sa.Executable) -> None:
        with self.databases.store(_store_of(table)).unit_of_work(key) as connection:
            connection.execute(statement)

    def dump(self, table: sa.Table) -> list[tuple[Any, ...]]:
        store = self.databases.store(_store_of(table))
        rows: list[tuple[Any, ...]] = []
        for index in range(store.shard_count):
            with store.unit_of_work(shard=index) as connection:
                rows.extend(tuple(r) for r in connection.execute(sa.select(table)))
        return sorted(rows)

    def shards(self, table: sa.Table) -> ShardSet:
        store = self.databases.store(_store_of(table))
        return ShardSet(
            "test",
            store.shard_count,
            lambda i: store.unit_of_work(shard=i),
            lambda i: store.unit_of_work(shard=i),
            store.shard_for,
        )

    def scalar(self, table: sa.Table, sql: str) -> Any:
        store = self.databases.store(_store_of(table))
        total = 0
        for index in range(store.shard_count):
            with store.unit_of_work(shard=index) as connection:
                total += int(connection.exec_driver_sql(sql).scalar_one())
        return total

    def close(self) -> None:
        close_adapters(self.container)


def _store_of(table: sa.Table) -> str:
    return next(name for name, metadata in METADATA.items() if table.name in metadata.tables)


def populate(side: _Sides) -> list[str]:
    ids = IdGenerator()
    users = [ids.new_for(f"u{n}") for n in range(USERS)]
    side.insert(
        users_table,
        [
            {"id": u, "username": f"u{n}", "password_hash": "x", "created_at": float(n)}
            for n, u in enumerate(users)
        ],
    )
    edges = [(a, users[(n + k) % USERS]) for n, a in enumerate(users) for k in range(1, 7)]
    side.insert(
        followers_table,
        [
            {
                "user_id": b,
                "follower_id": a,
                "followed_at": 1.0,
                "unfollowed_at": None,
                "unsettled": False,
                "changed_at": 1.0,
            }
            for a, b in edges
        ],
    )
    side.insert(
        following_table,
        [
            {
                "user_id": a,
                "followee_id": b,
                "followed_at": 1.0,
                "unfollowed_at": None,
                "changed_at": 1.0,
            }
            for a, b in edges
        ],
    )
    side.insert(
        follow_counts_table,
        [{"user_id": u, "followers": EDGES_PER_USER, "following": EDGES_PER_USER} for u in users],
    )
    return users


class _WriteDuringFollows(Progress):
    """Progress that runs ``write`` once, after the first page of the follow store."""

    def __init__(self, write: Callable[[], None]) -> None:
        super().__init__("quiet", lambda _line: None)
        self._write = write
        self.fired = False

    def task(self, label: str, total: int | None, unit: str = "rows") -> Task:
        task = super().task(label, total, unit)
        if label != "follows":
            return task
        advance = task.advance

        def advanced(count: int) -> None:
            advance(count)
            if not self.fired:
                self.fired = True
                self._write()

        task.advance = advanced  # type: ignore[method-assign]
        return task


def _rows(report: Any) -> dict[str, Any]:
    return {row.store: row for row in report.rows}


@pytest.fixture(params=["sqlite-to-postgres", "postgres-to-sqlite"])
def configs(
    request: pytest.FixtureRequest, tmp_path: Path, scratch_database: Callable[[str], str]
) -> tuple[Path, Path]:
    box = box_config(tmp_path / "box.toml", tmp_path / "box")
    fleet = fleet_config(
        tmp_path / "fleet.toml",
        tmp_path / "fleet",
        [scratch_database("mig7log0"), scratch_database("mig7log1")],
    )
    return (box, fleet) if request.param == "sqlite-to-postgres" else (fleet, box)


def test_a_write_during_the_first_pass_is_caught_by_the_next(
    configs: tuple[Path, Path],
) -> None:
    source_config, target_config = configs
    source = _Sides(source_config)
    try:
        users = populate(source)
        total = source.scalar(followers_table, "SELECT count(*) FROM photofeed_followers")
        assert total > PAGE_ROWS  # the write below lands mid-walk
        # The first key in key order: read in the walk's first page, before the write.
        first_key = source.dump(followers_table)[0][:2]
        late_user = IdGenerator().new_for("late")

        def write() -> None:
            followers = followers_table.c
            source.execute(
                followers_table,
                first_key[0],
                followers_table.update()
                .where(followers.user_id == first_key[0], followers.follower_id == first_key[1])
                .values(changed_at=99.0, unfollowed_at=99.0),
            )
            source.insert(
                users_table,
                [{"id": late_user, "username": "late", "password_hash": "y", "created_at": 5.0}],
            )
            source.execute(
                followers_table,
                users[1],
                followers_table.delete().where(followers.user_id == users[1]),
            )

        progress = _WriteDuringFollows(write)
        first = migrate(Options(str(source_config), str(target_config), skip=SKIP), progress)
        assert progress.fired
        assert first.ok, first.differences
        target = _Sides(target_config)
        try:
            copied = {row[:2]: row for row in target.dump(followers_table)}
            assert copied[first_key][5] == 1.0  # the walk had read it before the write

            # The write is in the source's log; the next pass walks only the buckets it
            # names, and leaves the log empty.
            log = changelog.log_name(followers_table.name)
            assert source.scalar(followers_table, f"SELECT count(*) FROM {log}") >= 7
            second = migrate(
                Options(str(source_config), str(target_config), skip=SKIP),
                Progress.choose(True, print),
            )
            assert second.ok, second.differences
            rows = _rows(second)
            assert 0 < rows["follows"].written < total / 4
            # Every row counts as verified: the rows walked now, the others as recorded.
            assert rows["follows"].verified == (total - EDGES_PER_USER) + total + USERS
            assert rows["users"].verified == USERS + 1
            for table in (users_table, followers_table, following_table, follow_counts_table):
                assert target.dump(table) == source.dump(table), table.name
            assert source.scalar(followers_table, f"SELECT count(*) FROM {log}") == 0
            # The checksums recorded for a run without a log still describe every bucket.
            for table in (users_table, followers_table, following_table):
                recorded = journal.load_digests(target.databases, table.name)
                actual = digest_table(table, source.shards(table), sharded=True)
                assert recorded == {k: d for k, d in actual.items() if d.count}, table.name

            verify = migrate(
                Options(str(source_config), str(target_config), mode="verify", skip=SKIP),
                Progress.choose(True, print),
            )
            assert verify.ok, verify.differences
            third = migrate(
                Options(str(source_config), str(target_config), skip=SKIP),
                Progress.choose(True, print),
            )
            assert third.ok
            assert all(row.written == 0 for row in third.rows)

            # After the move: the log goes, and a later pass (re-installing it) still
            # copies what changed.
            dropped = migrate(
                Options(str(source_config), str(target_config), mode="drop-change-log"),
                Progress.choose(True, print),
            )
            assert dropped.ok
            assert _log_objects(source, followers_table) == 0
            source.execute(
                users_table,
                late_user,
                users_table.update().where(users_table.c.id == late_user).values(created_at=6.0),
            )
            again = migrate(
                Options(str(source_config), str(target_config), skip=SKIP),
                Progress.choose(True, print),
            )
            assert again.ok, again.differences
            assert target.dump(users_table) == source.dump(users_table)
        finally:
            target.close()
    finally:
        source.close()


def _log_objects(side: _Sides, table: sa.Table) -> int:
    """Triggers and log tables of the change log left on ``side``'s shards."""
    store = side.databases.store(_store_of(table))
    found = 0
    for index in range(store.shard_count):
        with store.unit_of_work(shard=index) as connection:
            if connection.dialect.name == "sqlite":
                query = "SELECT count(*) FROM sqlite_master WHERE name LIKE 'scalecore_changes%'"
            else:
                query = (
                    "SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE "
                    "'scalecore_changes%') + (SELECT count(*) FROM pg_tables WHERE tablename "
                    "LIKE 'scalecore_changes%') + (SELECT count(*) FROM pg_proc WHERE proname "
                    "LIKE 'scalecore_changes%')"
                )
            found += int(connection.execute(sa.text(query)).scalar_one())
    return found


def test_an_entry_of_a_transaction_open_while_the_log_is_read_survives(
    tmp_path: Path, scratch_database: Callable[[str], str]
) -> None:
    fleet = fleet_config(
        tmp_path / "fleet.toml", tmp_path / "fleet", [scratch_database("mig7open")]
    )
    side = _Sides(fleet)
    try:
        shards = side.shards(users_table)
        installs = changelog.install(users_table, shards)
        assert changelog.install(users_table, shards) == installs  # kept while intact
        ids = IdGenerator()
        early, open_, late = (ids.new_for(name) for name in ("early", "open", "late"))
        store = side.databases.store("users")

        def user(uid: str) -> dict[str, Any]:
            return {"id": uid, "username": uid, "password_hash": "x", "created_at": 1.0}

        side.insert(users_table, [user(early)])
        opened = threading.Event()
        release = threading.Event()

        def open_transaction() -> None:
            with store.unit_of_work(shard=0) as connection:
                connection.execute(users_table.insert(), user(open_))
                opened.set()
                release.wait(30)

        writer = threading.Thread(target=open_transaction)
        writer.start()
        assert opened.wait(30)
        side.insert(users_table, [user(late)])  # a higher seq, committed first
        read = changelog.snapshot(users_table, shards, installs)
        release.set()
        writer.join(30)
        changelog.forget(users_table, shards, read)
        left = changelog.snapshot(users_table, shards, installs)
        assert read.entries == 2
        assert left.entries == 1
        assert left.buckets
        assert left.buckets <= _buckets_of([open_])

        # A trigger dropped by hand: the install id changes, so no pass trusts the log.
        with store.unit_of_work(shard=0) as connection:
            log = changelog.log_name(users_table.name)
            connection.exec_driver_sql(f"DROP TRIGGER {log}_row ON {users_table.name}")
        assert changelog.install(users_table, shards) != installs
    finally:
        side.close()


def _buckets_of(ids: list[str]) -> set[int]:
    from entrypoints.migrate.sqlsync import bucket_of

    return {bucket_of((uid,), True) for uid in ids}


@pytest.mark.parametrize("dies_in", ["save_tracking", "forget"])
def test_a_pass_that_dies_before_it_clears_the_log_leaves_it_for_the_next(
    tmp_path: Path,
    scratch_database: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    dies_in: str,
) -> None:
    source_config = box_config(tmp_path / "box.toml", tmp_path / "box")
    target_config = fleet_config(
        tmp_path / "fleet.toml", tmp_path / "fleet", [scratch_database("mig7die")]
    )
    source = _Sides(source_config)
    target = _Sides(target_config)
    try:
        users = populate(source)
        options = Options(str(source_config), str(target_config), skip=SKIP)
        assert migrate(options, Progress.choose(True, print)).ok
        source.execute(
            users_table,
            users[7],
            users_table.update().where(users_table.c.id == users[7]).values(created_at=70.0),
        )
        log = changelog.log_name(users_table.name)
        module = journal if dies_in == "save_tracking" else changelog

        def killed(*_args: object) -> None:
            raise RuntimeError("killed")

        with monkeypatch.context() as patch:
            patch.setattr(module, dies_in, killed)
            with pytest.raises(RuntimeError, match="killed"):
                migrate(options, Progress.choose(True, print))
        assert source.scalar(users_table, f"SELECT count(*) FROM {log}") == 1
        source.execute(
            users_table,
            users[8],
            users_table.update().where(users_table.c.id == users[8]).values(created_at=80.0),
        )
        again = migrate(options, Progress.choose(True, print))
        assert again.ok, again.differences
        assert _rows(again)["users"].written == 1  # users[8]: the dead pass wrote users[7]
        assert target.dump(users_table) == source.dump(users_table)
        assert source.scalar(users_table, f"SELECT count(*) FROM {log}") == 0
    finally:
        target.close()
        source.close()
