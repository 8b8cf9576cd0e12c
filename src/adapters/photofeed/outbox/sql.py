"""Outbox events in sharded SQL, beside the photos they announce, claimed with a lease.

Backend: "sql"
Install extra: none for SQLite; postgres for PostgreSQL
Options: database (the ShardedDatabase of the "photos" logical store: the same one as the
    SqlPhotoRepository's; required)
Differs from the port: nothing. Claiming is safe from many processes at once: on
    PostgreSQL the pending rows are selected ``FOR UPDATE SKIP LOCKED`` (concurrent
    claimers take disjoint rows without waiting for each other), and the claim is a lease
    (``claimant``, ``claimed_until``) so rows of a relay that died become claimable again;
    on SQLite a write transaction locks the whole file (``BEGIN IMMEDIATE``), which
    serialises claimers. Without ``ids`` a claim visits every shard, starting at a random
    one so no shard's events wait behind another's.
"""

from __future__ import annotations

import json
import random
from collections.abc import Collection
from typing import Any, ClassVar

import sqlalchemy as sa

from adapters.photofeed.schema import (
    by_logical,
    check_database,
    outbox_table,
    ping_all,
    shards_of,
)
from adapters.sql.shards import ShardedDatabase
from scalecore.capabilities import Capability
from scalecore.ids import shard_of
from scalecore.photofeed.models import OutboxEvent
from scalecore.photofeed.ports import OutboxRepository

__all__ = ["SqlOutboxRepository"]

_t = outbox_table


class SqlOutboxRepository(OutboxRepository):
    """Events on their owner's shard; thread-safe (the database pools connections)."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.SHARED, Capability.DURABLE}
    )

    def __init__(self, *, database: ShardedDatabase) -> None:
        self._db = check_database(database, "photos")

    def __repr__(self) -> str:
        return f"SqlOutboxRepository({self._db!r})"

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
            sa.select(_t)
            .where(
                _t.c.sent_at.is_(None),
                sa.or_(_t.c.claimed_until.is_(None), _t.c.claimed_until <= now),
            )
            .order_by(_t.c.created_at, _t.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if wanted is not None:
            query = query.where(_t.c.id.in_(wanted))
        with self._db.unit_of_work(shard=index) as conn:
            rows = conn.execute(query).all()
            # Leave alone the events of logical shards this database no longer owns.
            owned = self._db.owned_subset(conn, {shard_of(row.id) for row in rows})
            rows = [row for row in rows if shard_of(row.id) in owned]
            if rows:
                conn.execute(
                    _t.update()
                    .where(_t.c.id.in_([row.id for row in rows]))
                    .values(claimant=claimant, claimed_until=now + lease)
                )
        return [_event(row) for row in rows]

    def mark_sent(self, ids: Collection[str], *, now: float) -> None:
        self._db.write_each(
            by_logical(ids),
            lambda conn, group: conn.execute(
                _t.update()
                .where(_t.c.id.in_(group), _t.c.sent_at.is_(None))
                .values(sent_at=now, claimant=None, claimed_until=None)
            ),
        )

    def release(self, ids: Collection[str], claimant: str) -> None:
        self._db.write_each(
            by_logical(ids),
            lambda conn, group: conn.execute(
                _t.update()
                .where(_t.c.id.in_(group), _t.c.claimant == claimant, _t.c.sent_at.is_(None))
                .values(claimant=None, claimed_until=None)
            ),
        )

    def pending_count(self) -> int:
        query = sa.select(sa.func.count()).select_from(_t).where(_t.c.sent_at.is_(None))
        return self._db.count(lambda conn, _index: int(conn.execute(query).scalar_one()))

    def oldest_pending_at(self) -> float | None:
        query = sa.select(sa.func.min(_t.c.created_at)).where(_t.c.sent_at.is_(None))

        def shard_oldest(conn: sa.Connection, _index: int) -> list[float]:
            value = conn.execute(query).scalar_one()
            return [] if value is None else [float(value)]

        oldest = self._db.scatter_gather(
            shard_oldest, order_key=lambda value: value, limit=1, descending=False
        )
        return oldest[0] if oldest else None

    def purge_sent(self, before: float) -> int:
        purged = 0
        for index in range(self._db.shard_count):
            with self._db.unit_of_work(shard=index) as conn:
                ids = list(
                    conn.execute(
                        sa.select(_t.c.id).where(_t.c.sent_at.is_not(None), _t.c.sent_at < before)
                    ).scalars()
                )
                owned = self._db.owned_subset(conn, {shard_of(i) for i in ids})
                ids = [i for i in ids if shard_of(i) in owned]
                for start in range(0, len(ids), 500):
                    purged += conn.execute(
                        _t.delete().where(_t.c.id.in_(ids[start : start + 500]))
                    ).rowcount
        return purged

    def ping(self) -> None:
        ping_all(self._db)


def _event(row: Any) -> OutboxEvent:
    return OutboxEvent(
        id=row.id, topic=row.topic, payload=json.loads(row.payload), created_at=row.created_at
    )
