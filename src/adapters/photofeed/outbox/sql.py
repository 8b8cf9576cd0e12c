"""Outbox events in sharded SQL, beside the photos they announce, claimed with a lease.

Backend: "sql"
Install extra: none for SQLite; postgres for PostgreSQL
Options: database (the ShardedDatabase of the "photos" logical store: the same one as the
    SqlPhotoRepository's; required)
Differs from the port: nothing; it is :class:`adapters.sql.outbox.SqlOutbox` on the
    photo feed's table. Claiming is safe from many processes at once: on
    PostgreSQL the pending rows are selected ``FOR UPDATE SKIP LOCKED`` (concurrent
    claimers take disjoint rows without waiting for each other), and the claim is a lease
    (``claimant``, ``claimed_until``) so rows of a relay that died become claimable again;
    on SQLite a write transaction locks the whole file (``BEGIN IMMEDIATE``), which
    serialises claimers. Without ``ids`` a claim visits every shard, starting at a random
    one so no shard's events wait behind another's.
"""

from __future__ import annotations

from adapters.photofeed.schema import check_database, outbox_table
from adapters.sql.outbox import SqlOutbox
from adapters.sql.shards import ShardedDatabase

__all__ = ["SqlOutboxRepository"]


class SqlOutboxRepository(SqlOutbox):
    """The library's SQL outbox on the photos' ``photofeed_outbox`` table; thread-safe."""

    def __init__(self, *, database: ShardedDatabase) -> None:
        super().__init__(database=check_database(database, "photos"), table=outbox_table)

    def __repr__(self) -> str:
        return f"SqlOutboxRepository({self._db!r})"
