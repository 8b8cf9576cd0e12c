"""Feed entries in sharded SQL, on the follower's shard, merged as LWW state by upserts.

Backend: "sql"
Install extra: none for SQLite; postgres for PostgreSQL
Options: database (the ShardedDatabase of the "feed" logical store, its MetaData built from
    ``adapters.photofeed.schema.METADATA["feed"]``; required)
Differs from the port: nothing. A merge is one ``INSERT ... ON CONFLICT DO UPDATE`` per
    shard whose update keeps the later of each timestamp, so concurrent merges of one entry
    (a redelivered message racing its first delivery) need no lock and cannot lose a
    change. Pages may be read from a replica (and lag).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any, ClassVar

import sqlalchemy as sa

from adapters.photofeed.schema import (
    below,
    check_database,
    feed_table,
    later_of,
    live,
    logical_of,
    ping_all,
    upsert,
)
from adapters.sql.shards import ShardedDatabase
from scalecore.capabilities import Capability
from scalecore.errors import InvalidInput
from scalecore.ids import shard_of
from scalecore.photofeed.models import FeedEntry, FeedPosition
from scalecore.photofeed.ports import FeedRepository

__all__ = ["SqlFeedRepository"]

_t = feed_table
#: Rows per INSERT statement of a merge.
_BATCH = 500
#: The first page of a feed, built once: SQLAlchemy then skips building the statement and
#: its cache key on every read (the hot path of a feed request).
_FIRST_PAGE = (
    sa.select(_t)
    .where(_t.c.follower_id == sa.bindparam("follower"), live(_t.c.added_at, _t.c.removed_at))
    .order_by(_t.c.created_at.desc(), _t.c.photo_id.desc())
    .limit(sa.bindparam("limit", type_=sa.Integer))
)


class SqlFeedRepository(FeedRepository):
    """Each follower's feed on the follower's shard; thread-safe."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.SHARED, Capability.DURABLE}
    )

    def __init__(self, *, database: ShardedDatabase) -> None:
        self._db = check_database(database, "feed")

    def __repr__(self) -> str:
        return f"SqlFeedRepository({self._db!r})"

    def merge(self, entries: Iterable[FeedEntry]) -> None:
        # Merge duplicates here first: PostgreSQL refuses one INSERT that updates a row twice.
        by_shard: dict[int, dict[tuple[str, str], FeedEntry]] = defaultdict(dict)
        for entry in entries:
            logical = logical_of(entry.follower_id)
            if logical is None:
                raise InvalidInput(f"not a user id: {entry.follower_id!r}")
            batch = by_shard[logical]
            key = (entry.follower_id, entry.photo_id)
            batch[key] = batch[key].merge(entry) if key in batch else entry

        def apply(conn: sa.Connection, batch: list[FeedEntry]) -> None:
            rows = [_row(entry) for entry in batch]
            statement = upsert(conn, _t)
            statement = statement.on_conflict_do_update(
                index_elements=["follower_id", "photo_id"],
                set_={
                    "added_at": later_of(_t.c.added_at, statement.excluded.added_at),
                    "removed_at": later_of(_t.c.removed_at, statement.excluded.removed_at),
                },
            )
            for start in range(0, len(rows), _BATCH):
                conn.execute(statement, rows[start : start + _BATCH])

        self._db.write_each(
            {logical: list(batch.values()) for logical, batch in by_shard.items()}, apply
        )

    def remove_owner(self, follower_id: str, owner_id: str, at: float) -> int:
        logical = logical_of(follower_id)
        if logical is None:
            return 0
        statement = (
            _t.update()
            .where(
                _t.c.follower_id == follower_id,
                _t.c.owner_id == owner_id,
                sa.or_(_t.c.removed_at.is_(None), _t.c.removed_at < at),
            )
            .values(removed_at=at)
        )
        return self._db.write(logical, lambda conn: int(conn.execute(statement).rowcount))

    def page(
        self, follower_id: str, *, limit: int, before: FeedPosition | None = None
    ) -> list[FeedEntry]:
        logical = logical_of(follower_id)
        if logical is None or limit < 1:
            return []
        if before is None:
            params = {"follower": follower_id, "limit": limit}
            first = self._db.query(logical, lambda conn: conn.execute(_FIRST_PAGE, params).all())
            return [_entry(row) for row in first]
        query = sa.select(_t).where(
            _t.c.follower_id == follower_id, live(_t.c.added_at, _t.c.removed_at)
        )
        query = query.where(below(_t.c.created_at, _t.c.photo_id, before))
        query = query.order_by(_t.c.created_at.desc(), _t.c.photo_id.desc()).limit(limit)
        rows = self._db.query(logical, lambda conn: conn.execute(query).all())
        return [_entry(row) for row in rows]

    def get(self, follower_id: str, photo_id: str) -> FeedEntry | None:
        logical = logical_of(follower_id)
        if logical is None:
            return None
        query = sa.select(_t).where(_t.c.follower_id == follower_id, _t.c.photo_id == photo_id)
        row = self._db.query(logical, lambda conn: conn.execute(query).first())
        return None if row is None else _entry(row)

    def purge_removed(self, before: float) -> int:
        purged = 0
        for index in range(self._db.shard_count):
            with self._db.unit_of_work(shard=index) as conn:
                keys = conn.execute(
                    sa.select(_t.c.follower_id, _t.c.photo_id).where(
                        _t.c.removed_at.is_not(None),
                        _t.c.removed_at < before,
                        sa.not_(live(_t.c.added_at, _t.c.removed_at)),
                    )
                ).all()
                # Leave alone the rows of logical shards this database no longer owns.
                owned = self._db.owned_subset(conn, {shard_of(key[0]) for key in keys})
                pairs = [tuple(key) for key in keys if shard_of(key[0]) in owned]
                for start in range(0, len(pairs), _BATCH):
                    purged += conn.execute(
                        _t.delete().where(
                            sa.tuple_(_t.c.follower_id, _t.c.photo_id).in_(
                                pairs[start : start + _BATCH]
                            )
                        )
                    ).rowcount
        return purged

    def ping(self) -> None:
        ping_all(self._db)


def _row(entry: FeedEntry) -> dict[str, Any]:
    return {
        "follower_id": entry.follower_id,
        "photo_id": entry.photo_id,
        "owner_id": entry.owner_id,
        "created_at": entry.created_at,
        "added_at": entry.added_at,
        "removed_at": entry.removed_at,
    }


def _entry(row: Any) -> FeedEntry:
    return FeedEntry(
        follower_id=row.follower_id,
        photo_id=row.photo_id,
        owner_id=row.owner_id,
        created_at=row.created_at,
        added_at=row.added_at,
        removed_at=row.removed_at,
    )
