"""The outbox in sharded SQL: events on the shard of the rows they announce, claimed with a
lease.

Backend: "sql" (the library's outbox, :attr:`entrypoints.library.Deployment.outbox`)
Install extra: none for SQLite; postgres for PostgreSQL
Options: database (a ShardedDatabase whose metadata holds ``table``; required), table (the
    outbox table, made by :func:`outbox_table` in the application's MetaData; required)
Differs from the port: nothing. :meth:`SqlOutbox.add` writes an event inside the caller's
    own transaction, so the event commits exactly with the change it announces. Claiming is
    safe from many processes at once: on PostgreSQL the pending rows are selected ``FOR
    UPDATE SKIP LOCKED`` (concurrent claimers take disjoint rows without waiting for each
    other), and the claim is a lease (``claimant``, ``claimed_until``) so rows of a relay
    that died become claimable again; on SQLite a write transaction locks the whole file
    (``BEGIN IMMEDIATE``), which serialises claimers. Without ``ids`` a claim visits every
    shard, starting at a random one so no shard's events wait behind another's.
"""

from __future__ import annotations

import json
import random
from collections.abc import Collection
from typing import Any, ClassVar

import sqlalchemy as sa

from adapters.sql.rows import by_logical, ping_all, shards_of
from adapters.sql.shards import ShardedDatabase
from scalecore.capabilities import Capability
from scalecore.clock import Clock, SystemClock
from scalecore.errors import ConfigError, InvalidInput
from scalecore.ids import ID_LENGTH, IdGenerator, shard_of
from scalecore.outbox import Outbox, OutboxEvent
from scalecore.types import JSONObject

__all__ = ["SqlOutbox", "outbox_row", "outbox_table"]

_COLUMNS = ("id", "topic", "payload", "created_at", "claimant", "claimed_until", "sent_at")


def outbox_table(metadata: sa.MetaData, name: str = "scalecore_outbox") -> sa.Table:
    """Define the outbox table ``name`` in ``metadata`` (the tables of the store whose
    transactions write events) and return it."""
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.String(ID_LENGTH), primary_key=True),
        sa.Column("topic", sa.String(120), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),  # JSON text
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("claimant", sa.String(64), nullable=True),
        sa.Column("claimed_until", sa.Double, nullable=True),
        sa.Column("sent_at", sa.Double, nullable=True),
        sa.Index(f"ix_{name}_pending", "sent_at", "created_at"),
    )


def outbox_row(event: OutboxEvent) -> dict[str, Any]:
    """The outbox row of a new (unclaimed, unsent) event."""
    return {
        "id": event.id,
        "topic": event.topic,
        "payload": json.dumps(event.payload, separators=(",", ":")),
        "created_at": event.created_at,
        "claimant": None,
        "claimed_until": None,
        "sent_at": None,
    }


class SqlOutbox(Outbox):
    """Events on their logical shard's database; thread-safe (the database pools
    connections)."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.SHARED, Capability.DURABLE}
    )

    def __init__(
        self, *, database: ShardedDatabase, table: sa.Table, clock: Clock | None = None
    ) -> None:
        if not isinstance(database, ShardedDatabase):
            raise ConfigError(
                f"must be a ShardedDatabase, not {type(database).__name__}", key="database"
            )
        if not isinstance(table, sa.Table) or tuple(table.c.keys()) != _COLUMNS:
            raise ConfigError("must be a table made by outbox_table()", key="table")
        if database.metadata.tables.get(table.name) is None:
            raise ConfigError(
                f"the database's metadata lacks {table.name}: define it there", key="table"
            )
        self._db = database
        self._t = table
        self._clock: Clock = clock or SystemClock()
        self._ids = IdGenerator(clock=self._clock)

    def __repr__(self) -> str:
        return f"SqlOutbox({self._t.name}, {self._db!r})"

    def add(
        self, connection: sa.Connection, topic: str, payload: JSONObject, *, shard: int
    ) -> OutboxEvent:
        """Write an event for ``topic`` inside ``connection``'s transaction and return it.

        ``shard`` is the logical shard the transaction writes (``connection`` must be one
        of ``database.write(shard, ...)`` or of ``unit_of_work(shard)``): the event's id
        carries it, so the event lives beside the change it announces and commits or rolls
        back with it. Raises ``InvalidInput`` for a payload that is not a JSON object.
        """
        if not isinstance(payload, dict):
            raise InvalidInput("an outbox payload must be a JSON object")
        event = OutboxEvent(
            id=self._ids.new(shard), topic=topic, payload=payload, created_at=self._clock.now()
        )
        connection.execute(self._t.insert().values(**outbox_row(event)))
        return event

    def claim(
        self,
        claimant: str,
        *,
        limit: int,
        now: float,
        lease: float,
        ids: Collection[str] | None = None,
    ) -> list[OutboxEvent]:
        if limit < 1:
            return []
        if ids is None:
            start = random.randrange(self._db.shard_count)
            plan: list[tuple[int, list[str] | None]] = [
                ((start + step) % self._db.shard_count, None)
                for step in range(self._db.shard_count)
            ]
        else:
            plan = list(shards_of(self._db, ids).items())
        claimed: list[OutboxEvent] = []
        for index, wanted in plan:
            if len(claimed) >= limit:
                break
            claimed.extend(
                self._claim_on(index, claimant, limit - len(claimed), now, lease, wanted)
            )
        return claimed

    def _claim_on(
        self,
        index: int,
        claimant: str,
        limit: int,
        now: float,
        lease: float,
        wanted: list[str] | None,
    ) -> list[OutboxEvent]:
        query = (
            sa.select(self._t)
            .where(
                self._t.c.sent_at.is_(None),
                sa.or_(self._t.c.claimed_until.is_(None), self._t.c.claimed_until <= now),
            )
            .order_by(self._t.c.created_at, self._t.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if wanted is not None:
            query = query.where(self._t.c.id.in_(wanted))
        with self._db.unit_of_work(shard=index) as conn:
            rows = conn.execute(query).all()
            # Leave alone the events of logical shards this database no longer owns.
            owned = self._db.owned_subset(conn, {shard_of(row.id) for row in rows})
            rows = [row for row in rows if shard_of(row.id) in owned]
            if rows:
                conn.execute(
                    self._t.update()
                    .where(self._t.c.id.in_([row.id for row in rows]))
                    .values(claimant=claimant, claimed_until=now + lease)
                )
        return [_event(row) for row in rows]

    def mark_sent(self, ids: Collection[str], *, now: float) -> None:
        self._db.write_each(
            by_logical(ids),
            lambda conn, group: conn.execute(
                self._t.update()
                .where(self._t.c.id.in_(group), self._t.c.sent_at.is_(None))
                .values(sent_at=now, claimant=None, claimed_until=None)
            ),
        )

    def release(self, ids: Collection[str], claimant: str) -> None:
        self._db.write_each(
            by_logical(ids),
            lambda conn, group: conn.execute(
                self._t.update()
                .where(
                    self._t.c.id.in_(group),
                    self._t.c.claimant == claimant,
                    self._t.c.sent_at.is_(None),
                )
                .values(claimant=None, claimed_until=None)
            ),
        )

    def pending_count(self) -> int:
        # Each logical shard counted once, on its owner (a moving one is on two databases).
        return self._db.count_rows(self._t, self._t.c.sent_at.is_(None))

    def oldest_pending_at(self) -> float | None:
        table = self._t
        query = (
            sa.select(table.c.created_at, table.c.id)
            .where(table.c.sent_at.is_(None))
            .order_by(table.c.created_at, table.c.id)
            .limit(1)
        )

        def shard_oldest(conn: sa.Connection, _index: int) -> list[tuple[float, str]]:
            return [(float(row.created_at), row.id) for row in conn.execute(query)]

        oldest = self._db.scatter_gather(
            shard_oldest,
            order_key=lambda row: row,
            limit=1,
            descending=False,
            logical_of=lambda row: shard_of(row[1]),
        )
        return oldest[0][0] if oldest else None

    def purge_sent(self, before: float) -> int:
        purged = 0
        for index in range(self._db.shard_count):
            with self._db.unit_of_work(shard=index) as conn:
                ids = list(
                    conn.execute(
                        sa.select(self._t.c.id).where(
                            self._t.c.sent_at.is_not(None), self._t.c.sent_at < before
                        )
                    ).scalars()
                )
                owned = self._db.owned_subset(conn, {shard_of(i) for i in ids})
                ids = [i for i in ids if shard_of(i) in owned]
                for start in range(0, len(ids), 500):
                    purged += conn.execute(
                        self._t.delete().where(self._t.c.id.in_(ids[start : start + 500]))
                    ).rowcount
        return purged

    def ping(self) -> None:
        ping_all(self._db)


def _event(row: Any) -> OutboxEvent:
    return OutboxEvent(
        id=row.id, topic=row.topic, payload=json.loads(row.payload), created_at=row.created_at
    )
