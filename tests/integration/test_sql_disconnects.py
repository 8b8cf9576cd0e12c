"""PostgreSQL drops every connection (a restart, a failover): the sharded database's reads
and writes carry on without an error, and a write is applied once.

The engines do not ping a pooled connection before each use; a statement that meets a
dropped one makes SQLAlchemy invalidate the pool, and the repository's work runs once more
on a fresh connection. Here the connections are really dropped, by
``pg_terminate_backend`` on the server.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from adapters.sql.shards import ShardedDatabase
from scalecore.errors import BackendUnavailable
from scalecore.routing import JumpHashRouter

pytestmark = pytest.mark.integration

METADATA = sa.MetaData()
ROWS = sa.Table("drops_rows", METADATA, sa.Column("id", sa.Integer, primary_key=True))


@pytest.fixture
def database(scratch_database: Callable[[str], str]) -> Iterator[ShardedDatabase]:
    """A one-shard database with an empty table and three pooled connections."""
    db = ShardedDatabase(
        shards=[scratch_database("drops")],
        router=JumpHashRouter(1),
        metadata=METADATA,
        create_database=True,
    )
    db.create_schema()
    # Three connections in the pool at once, so the drop meets more than one stale one.
    with db.read(shard=0) as a, db.read(shard=0) as b, db.read(shard=0) as c:
        for connection in (a, b, c):
            connection.execute(sa.select(1))
    yield db
    db.dispose()


def drop_every_connection(database: ShardedDatabase, postgres_url: str) -> int:
    """Terminate every server process connected to the database; return how many."""
    name = sa.make_url(database.configured_urls[0]).database
    admin = sa.create_engine(f"{postgres_url}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return len(
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                ).all()
            )
    finally:
        admin.dispose()


def count(database: ShardedDatabase) -> int:
    return int(
        database.query(
            0, lambda conn: conn.execute(sa.select(sa.func.count()).select_from(ROWS)).scalar()
        )
    )


def insert(database: ShardedDatabase, row_id: int) -> None:
    database.write(0, lambda conn: conn.execute(ROWS.insert().values(id=row_id)))


def test_reads_and_writes_carry_on_after_the_database_drops_its_connections(
    database: ShardedDatabase, postgres_url: str
) -> None:
    insert(database, 1)
    assert count(database) == 1

    assert drop_every_connection(database, postgres_url) >= 3
    assert count(database) == 1  # a read: retried on a fresh connection

    assert drop_every_connection(database, postgres_url) >= 1
    insert(database, 2)  # a write that failed before COMMIT: run once more
    assert count(database) == 2

    assert drop_every_connection(database, postgres_url) >= 1
    rows = database.scatter_gather(
        lambda conn, _index: list(conn.execute(sa.select(ROWS.c.id)).scalars()),
        order_key=lambda row_id: row_id,
        limit=None,
    )
    assert rows == [2, 1]

    assert drop_every_connection(database, postgres_url) >= 1
    assert (
        database.count(
            lambda conn, _index: int(
                conn.execute(sa.select(sa.func.count()).select_from(ROWS)).scalar()
            )
        )
        == 2
    )


def test_concurrent_readers_see_no_error_after_the_drop(
    database: ShardedDatabase, postgres_url: str
) -> None:
    insert(database, 1)
    drop_every_connection(database, postgres_url)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def reader() -> None:
        start.wait()
        try:
            for _ in range(20):
                assert count(database) == 1
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []


def test_a_database_that_is_down_is_still_an_error(database: ShardedDatabase) -> None:
    down = ShardedDatabase(
        shards=["postgresql+psycopg://postgres@127.0.0.1:1/nowhere"],
        router=JumpHashRouter(1),
        metadata=METADATA,
    )
    with pytest.raises(BackendUnavailable):
        count(down)
    down.dispose()
