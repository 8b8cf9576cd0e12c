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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import sqlalchemy as sa

from adapters.sql.shards import Databases
from scalecore.checksum import Digest

if TYPE_CHECKING:
    from entrypoints.migrate.sqlsync import Buckets

#: Logical shards deleted or inserted per statement.
_SHARDS_PER_STATEMENT = 256

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


def load_digests(databases: Databases, table: str) -> Buckets:
    """Bucket -> verified source digest recorded for ``table`` (empty if none)."""
    from entrypoints.migrate.sqlsync import BUCKETS_PER_SHARD, Buckets

    t = digests_table
    found = Buckets()
    with databases.store("users").read(shard=0) as connection:
        if not sa.inspect(connection).has_table(t.name):
            return found
        rows = connection.execute(
            sa.select(t.c.logical_shard, t.c.buckets).where(t.c.table_name == table)
        )
        for logical, buckets in rows:
            for digit, (count, checksum) in json.loads(buckets).items():
                bucket = -1 if logical < 0 else logical * BUCKETS_PER_SHARD + int(digit)
                found[bucket] = Digest(count, int(checksum, 16))
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


def save_digests(
    databases: Databases,
    table: str,
    digests: Mapping[int, Digest],
    shards: Iterable[int] | None = None,
) -> None:
    """Record verified bucket digests of ``table``, replacing whole logical shards: pass
    every bucket of each logical shard recorded. The logical shards replaced are those of
    ``digests``, plus ``shards`` (a shard there without a bucket in ``digests`` is
    recorded as empty)."""
    from entrypoints.migrate.sqlsync import BUCKETS_PER_SHARD, logical_of

    covered = {logical_of(bucket) for bucket in digests}
    if shards is not None:
        covered.update(shards)
    t = digests_table
    with databases.store("users").unit_of_work(shard=0) as connection:
        _METADATA.create_all(connection, checkfirst=True)
        ordered = sorted(covered)
        for start in range(0, len(ordered), _SHARDS_PER_STATEMENT):
            connection.execute(
                t.delete().where(
                    t.c.table_name == table,
                    t.c.logical_shard.in_(ordered[start : start + _SHARDS_PER_STATEMENT]),
                )
            )
        # Written a few hundred logical shards at a time (a table has up to 4,096).
        rows: list[dict[str, object]] = []
        grouped: dict[int, dict[str, list[object]]] = {}
        for bucket in sorted(digests):
            digest = digests[bucket]
            if digest.count == 0:
                continue
            logical = logical_of(bucket)
            if logical not in grouped and len(grouped) >= _SHARDS_PER_STATEMENT:
                rows.extend(_digest_rows(table, grouped))
                connection.execute(t.insert(), rows)
                rows.clear()
                grouped.clear()
            digit = 0 if bucket < 0 else bucket % BUCKETS_PER_SHARD
            grouped.setdefault(logical, {})[str(digit)] = [digest.count, digest.hexdigest]
        rows.extend(_digest_rows(table, grouped))
        if rows:
            connection.execute(t.insert(), rows)


def _digest_rows(
    table: str, grouped: dict[int, dict[str, list[object]]]
) -> list[dict[str, object]]:
    return [
        {"table_name": table, "logical_shard": logical, "buckets": json.dumps(buckets)}
        for logical, buckets in grouped.items()
    ]


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
