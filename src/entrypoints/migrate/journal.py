"""The migration journal: a small table in the target saying whose copy it holds.

``scalecore_migration`` lives beside the ``users`` tables on the target's first shard of
that store. It holds one row per name:

- ``source``: the fingerprint of the deployment copied from (:func:`sides.fingerprint`),
- ``source_name``: that deployment's ``[deployment] name``, for messages,
- ``state``: ``copying`` while a run copies, ``verified`` after a run verified everything,
- ``passes``: how many copy runs have started.

A second table, ``scalecore_migration_digests``, keeps per table and logical shard the
count and checksum of the source rows a run copied *and verified in the target*. A run
that cannot trust the source's change log (:mod:`entrypoints.migrate.changelog`)
checksums the source again and walks only the buckets whose checksum moved (a shard
without a recorded checksum, because a killed run was copying it, counts as moved). A run
forgets a shard's checksum before it walks it, and records it only once verified; one
that copies logged rows updates the checksums of their buckets by difference.

Rows named ``changelog:<table>`` hold the change-log state of a table: the source's
installation ids a complete walk started under, and the buckets it could not verify.

The journal is written before the first row is copied, so a target holding rows always says where
they came from; a later run from the same source resumes or catches up, and a run from
any other source is refused before it writes (see :func:`foreign_data`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence

import sqlalchemy as sa

from adapters.sql.shards import Databases
from scalecore.checksum import Digest

__all__ = [
    "BlobJournal",
    "blobs_table",
    "digests_table",
    "forget_digests",
    "journal_table",
    "load_digests",
    "read_journal",
    "save_digests",
    "write_journal",
]

_METADATA = sa.MetaData()

journal_table = sa.Table(
    "scalecore_migration",
    _METADATA,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)


digests_table = sa.Table(
    "scalecore_migration_digests",
    _METADATA,
    sa.Column("table_name", sa.String(64), primary_key=True),
    sa.Column("logical_shard", sa.Integer, primary_key=True, autoincrement=False),
    # JSON: bucket digit -> [row count, checksum hex] for the buckets holding rows.
    sa.Column("buckets", sa.Text, nullable=False),
)


blobs_table = sa.Table(
    "scalecore_migration_blobs",
    _METADATA,
    sa.Column("blob_key", sa.String(1024), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("etag", sa.String(64), nullable=False),
    sa.Column("content_type", sa.String(255), nullable=False),
    sa.Column("cache_control", sa.Text, nullable=True),
    sa.Column("expires", sa.BigInteger, nullable=True),
)


def read_journal(databases: Databases) -> dict[str, str]:
    """The journal's rows (empty if the table does not exist)."""
    store = databases.store("users")
    with store.read(shard=0) as connection:
        if not sa.inspect(connection).has_table(journal_table.name):
            return {}
        rows = connection.execute(sa.select(journal_table.c.name, journal_table.c.value))
        return {row.name: row.value for row in rows}


def write_journal(databases: Databases, **values: str) -> None:
    """Set the given names (creating the table if needed), in one transaction."""
    store = databases.store("users")
    from adapters.photofeed.schema import upsert

    with store.unit_of_work(shard=0) as connection:
        _METADATA.create_all(connection, checkfirst=True)
        now = time.time()
        for name, value in values.items():
            insert = upsert(connection, journal_table).values(
                name=name, value=value, updated_at=now
            )
            connection.execute(
                insert.on_conflict_do_update(
                    index_elements=[journal_table.c.name],
                    set_={"value": insert.excluded.value, "updated_at": now},
                )
            )


def load_digests(databases: Databases, table: str) -> dict[int, Digest]:
    """Bucket -> verified source digest recorded for ``table`` (empty if none)."""
    from entrypoints.migrate.sqlsync import BUCKETS_PER_SHARD

    t = digests_table
    with databases.store("users").read(shard=0) as connection:
        if not sa.inspect(connection).has_table(t.name):
            return {}
        rows = connection.execute(
            sa.select(t.c.logical_shard, t.c.buckets).where(t.c.table_name == table)
        ).all()
    found: dict[int, Digest] = {}
    for row in rows:
        for digit, (count, checksum) in json.loads(row.buckets).items():
            bucket = -1 if row.logical_shard < 0 else row.logical_shard * BUCKETS_PER_SHARD
            found[bucket + (int(digit) if row.logical_shard >= 0 else 0)] = Digest(
                count, int(checksum, 16)
            )
    return found


def forget_digests(databases: Databases, table: str, shards: set[int] | None) -> None:
    """Drop the recorded digests of the logical ``shards`` (all, if None) of ``table``:
    they are about to change."""
    t = digests_table
    with databases.store("users").unit_of_work(shard=0) as connection:
        _METADATA.create_all(connection, checkfirst=True)
        query = t.delete().where(t.c.table_name == table)
        if shards is not None:
            if not shards:
                return
            query = query.where(t.c.logical_shard.in_(sorted(shards)))
        connection.execute(query)


def save_digests(databases: Databases, table: str, digests: Mapping[int, Digest]) -> None:
    """Record verified bucket digests of ``table``, replacing whole logical shards: pass
    every bucket of each logical shard recorded."""
    from entrypoints.migrate.sqlsync import BUCKETS_PER_SHARD, logical_of

    grouped: dict[int, dict[str, list[object]]] = {}
    for bucket, digest in digests.items():
        if digest.count == 0:
            continue
        digit = 0 if bucket < 0 else bucket % BUCKETS_PER_SHARD
        grouped.setdefault(logical_of(bucket), {})[str(digit)] = [digest.count, digest.hexdigest]
    t = digests_table
    with databases.store("users").unit_of_work(shard=0) as connection:
        _METADATA.create_all(connection, checkfirst=True)
        covered = sorted({logical_of(bucket) for bucket in digests})
        if covered:
            connection.execute(
                t.delete().where(t.c.table_name == table, t.c.logical_shard.in_(covered))
            )
        if grouped:
            connection.execute(
                t.insert(),
                [
                    {"table_name": table, "logical_shard": logical, "buckets": json.dumps(b)}
                    for logical, b in grouped.items()
                ],
            )


class BlobJournal:
    """The objects a run copied and verified in the target (key, size, SHA-256, headers),
    so a later run compares the source's listing with this table instead of listing (and
    HEADing) every object of the target. Read in key order (bytes), a page at a time."""

    PAGE = 1000

    def __init__(self, databases: Databases) -> None:
        self._store = databases.store("users")

    def entries(self) -> Iterator[tuple[str, int, str, str, str | None, int | None]]:
        t = blobs_table
        with self._store.read(shard=0) as connection:
            if not sa.inspect(connection).has_table(t.name):
                return
        after: str | None = None
        while True:
            with self._store.read(shard=0) as connection:
                key = t.c.blob_key
                if connection.dialect.name == "postgresql":
                    key = key.collate("C")  # type: ignore[assignment]
                query = sa.select(t).order_by(key).limit(self.PAGE)
                if after is not None:
                    query = query.where(key > after)
                rows = connection.execute(query).all()
            for row in rows:
                yield (
                    row.blob_key,
                    row.size,
                    row.etag,
                    row.content_type,
                    row.cache_control,
                    row.expires,
                )
            if len(rows) < self.PAGE:
                return
            after = rows[-1].blob_key

    def record(self, entries: Sequence[tuple[str, int, str, str, str | None, int | None]]) -> None:
        if not entries:
            return
        from adapters.photofeed.schema import upsert

        t = blobs_table
        names = ["blob_key", "size", "etag", "content_type", "cache_control", "expires"]
        with self._store.unit_of_work(shard=0) as connection:
            _METADATA.create_all(connection, checkfirst=True)
            insert = upsert(connection, t)
            connection.execute(
                insert.on_conflict_do_update(
                    index_elements=[t.c.blob_key],
                    set_={name: insert.excluded[name] for name in names[1:]},
                ),
                [dict(zip(names, entry, strict=True)) for entry in entries],
            )

    def forget(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        t = blobs_table
        with self._store.unit_of_work(shard=0) as connection:
            _METADATA.create_all(connection, checkfirst=True)
            connection.execute(t.delete().where(t.c.blob_key.in_(list(keys))))

    def clear(self) -> None:
        t = blobs_table
        with self._store.unit_of_work(shard=0) as connection:
            _METADATA.create_all(connection, checkfirst=True)
            connection.execute(t.delete())


def load_tracking(databases: Databases, table: str) -> tuple[list[str], set[int]] | None:
    """The change-log state a complete walk of ``table`` left: the source's install ids it
    started under and the buckets it could not verify (None: no complete walk yet)."""
    value = read_journal(databases).get(f"changelog:{table}")
    if value is None:
        return None
    state = json.loads(value)
    return [str(i) for i in state["installs"]], {int(b) for b in state["pending"]}


def save_tracking(databases: Databases, table: str, installs: list[str], pending: set[int]) -> None:
    """Record that a walk of ``table`` covered every change logged under ``installs``,
    except the ``pending`` buckets."""
    value = json.dumps({"installs": installs, "pending": sorted(pending)})
    write_journal(databases, **{f"changelog:{table}": value})


def forget_tracking(databases: Databases) -> None:
    """Forget every table's change-log state (the source's logs were removed)."""
    store = databases.store("users")
    with store.unit_of_work(shard=0) as connection:
        if sa.inspect(connection).has_table(journal_table.name):
            connection.execute(
                journal_table.delete().where(journal_table.c.name.like("changelog:%"))
            )
