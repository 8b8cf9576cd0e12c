"""Follow edges in sharded SQL, on both sides: the follower's shard and the followee's.

Backend: "sql"
Install extra: none for SQLite; postgres for PostgreSQL
Options: database (the ShardedDatabase of the "follows" logical store, its MetaData built
    from ``adapters.photofeed.schema.METADATA["follows"]``; required)
Differs from the port: nothing. Each side's merge and its count change are one
    transaction on that side's shard; the row is locked (``SELECT ... FOR UPDATE`` on
    PostgreSQL, the database write lock on SQLite) between reading the old state and
    writing the new, so concurrent writers of one edge never miscount. Point reads of an
    edge go to the primary (the service stamps its next change after what it reads);
    follower and following lists and counts may come from a replica.
"""

from __future__ import annotations

from typing import Any, ClassVar

import sqlalchemy as sa

from adapters.photofeed.schema import (
    check_database,
    follow_counts_table,
    followers_table,
    following_table,
    live,
    logical_of,
    ping_all,
    upsert,
)
from adapters.sql.shards import ShardedDatabase
from scalecore.capabilities import Capability
from scalecore.errors import InvalidInput
from scalecore.ids import shard_of
from scalecore.photofeed.models import FollowCounts, FollowEdge
from scalecore.photofeed.ports import FollowRepository

__all__ = ["SqlFollowRepository"]

_in = followers_table
_out = following_table
_counts = follow_counts_table


class SqlFollowRepository(FollowRepository):
    """Both sides of every edge plus per-user counts; thread-safe."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.SHARED, Capability.DURABLE}
    )

    def __init__(self, *, database: ShardedDatabase) -> None:
        self._db = check_database(database, "follows")

    def __repr__(self) -> str:
        return f"SqlFollowRepository({self._db!r})"

    def _logical(self, user_id: str) -> int:
        logical = logical_of(user_id)
        if logical is None:
            raise InvalidInput(f"not a user id: {user_id!r}")
        return logical

    # -- writes ------------------------------------------------------------------------

    def record_follower(self, edge: FollowEdge) -> FollowEdge:
        return self._record(edge, follower_side=False)

    def record_following(self, edge: FollowEdge) -> FollowEdge:
        return self._record(edge, follower_side=True)

    def _record(self, edge: FollowEdge, *, follower_side: bool) -> FollowEdge:
        """Merge ``edge`` into one side: the follower's (``_out``, its following count) or
        the followee's (``_in``, its follower count, marked unsettled when it changes)."""
        if follower_side:
            table, owner, other, other_id = _out, edge.follower_id, "followee_id", edge.followee_id
        else:
            table, owner, other, other_id = _in, edge.followee_id, "follower_id", edge.follower_id
        key = (table.c.user_id == owner, table.c[other] == other_id)

        def apply(conn: sa.Connection) -> FollowEdge:
            unsettled: dict[str, bool] = {}
            row = _locked(conn, table, key)
            if row is None:
                if not follower_side:
                    unsettled = {
                        "unsettled": edge != FollowEdge(edge.follower_id, edge.followee_id)
                    }
                inserted = conn.execute(
                    upsert(conn, table)
                    .values(
                        user_id=owner,
                        followed_at=edge.followed_at,
                        unfollowed_at=edge.unfollowed_at,
                        changed_at=edge.changed_at,
                        **{other: other_id},
                        **unsettled,
                    )
                    .on_conflict_do_nothing(index_elements=["user_id", other])
                    .returning(table.c.user_id)
                ).first()
                # RETURNING, not rowcount: psycopg reports -1 for INSERT ... ON CONFLICT.
                if inserted is not None:
                    _bump_side(conn, owner, follower_side, int(edge.active))
                    return edge
                row = _locked(conn, table, key)  # a concurrent writer inserted it first
                assert row is not None
            base = _edge(row, edge.follower_id, edge.followee_id)
            merged = base.merge(edge)
            if merged != base:
                conn.execute(
                    table.update()
                    .where(*key)
                    .values(
                        followed_at=merged.followed_at,
                        unfollowed_at=merged.unfollowed_at,
                        changed_at=max(row.changed_at, edge.changed_at),
                        **({} if follower_side else {"unsettled": True}),
                    )
                )
                _bump_side(conn, owner, follower_side, int(merged.active) - int(base.active))
            return merged

        return self._db.write(self._logical(owner), apply)

    def settle(self, edge: FollowEdge) -> bool:
        key = (_in.c.user_id == edge.followee_id, _in.c.follower_id == edge.follower_id)

        def apply(conn: sa.Connection) -> bool:
            row = _locked(conn, _in, key)
            if row is None:
                return True
            if not _edge(row, edge.follower_id, edge.followee_id).covered_by(edge):
                return not row.unsettled
            if row.unsettled:
                conn.execute(_in.update().where(*key).values(unsettled=False))
            return True

        return self._db.write(self._logical(edge.followee_id), apply)

    # -- reads -------------------------------------------------------------------------

    def follower_edge(self, followee_id: str, follower_id: str) -> FollowEdge | None:
        logical = logical_of(followee_id)
        if logical is None:
            return None
        query = sa.select(_in).where(_in.c.user_id == followee_id, _in.c.follower_id == follower_id)
        row = self._db.query(logical, lambda conn: conn.execute(query).first(), primary=True)
        return None if row is None else _edge(row, follower_id, followee_id)

    def following_edge(self, follower_id: str, followee_id: str) -> FollowEdge | None:
        logical = logical_of(follower_id)
        if logical is None:
            return None
        query = sa.select(_out).where(
            _out.c.user_id == follower_id, _out.c.followee_id == followee_id
        )
        row = self._db.query(logical, lambda conn: conn.execute(query).first(), primary=True)
        return None if row is None else _edge(row, follower_id, followee_id)

    def unsettled(self, *, before: float, limit: int) -> list[FollowEdge]:
        if limit < 1:
            return []
        query = (
            sa.select(_in)
            .where(_in.c.unsettled == sa.true(), _in.c.changed_at < before)
            .order_by(_in.c.changed_at)
            .limit(limit)
        )
        rows = self._db.scatter_gather(
            lambda conn, _index: conn.execute(query).all(),
            order_key=lambda row: (row.changed_at, row.user_id, row.follower_id),
            limit=limit,
            descending=False,
            logical_of=lambda row: shard_of(row.user_id),
        )
        return [_edge(row, row.follower_id, row.user_id) for row in rows]

    def followers(self, user_id: str, *, limit: int, after: str | None = None) -> list[str]:
        logical = logical_of(user_id)
        if logical is None or limit < 1:
            return []
        query = sa.select(_in.c.follower_id).where(
            _in.c.user_id == user_id, live(_in.c.followed_at, _in.c.unfollowed_at)
        )
        if after is not None:
            query = query.where(_in.c.follower_id > after)
        query = query.order_by(_in.c.follower_id).limit(limit)
        return self._db.query(logical, lambda conn: list(conn.execute(query).scalars()))

    def following(self, user_id: str) -> list[str]:
        logical = logical_of(user_id)
        if logical is None:
            return []
        query = (
            sa.select(_out.c.followee_id)
            .where(_out.c.user_id == user_id, live(_out.c.followed_at, _out.c.unfollowed_at))
            .order_by(_out.c.followee_id)
        )
        return self._db.query(logical, lambda conn: list(conn.execute(query).scalars()))

    def counts(self, user_id: str) -> FollowCounts:
        logical = logical_of(user_id)
        if logical is None:
            return FollowCounts()
        query = sa.select(_counts.c.followers, _counts.c.following).where(
            _counts.c.user_id == user_id
        )
        row = self._db.query(logical, lambda conn: conn.execute(query).first())
        return FollowCounts() if row is None else FollowCounts(row.followers, row.following)

    def popular(self, min_followers: int) -> list[str]:
        query = sa.select(_counts.c.user_id).where(_counts.c.followers >= min_followers)
        return self._db.scatter_gather(
            lambda conn, _index: list(conn.execute(query).scalars()),
            order_key=lambda user_id: user_id,
            limit=None,
            descending=False,
            logical_of=shard_of,
        )

    def ping(self) -> None:
        ping_all(self._db)


def _locked(conn: sa.Connection, table: sa.Table, key: tuple[Any, ...]) -> Any:
    return conn.execute(sa.select(table).where(*key).with_for_update()).one_or_none()


def _edge(row: Any, follower_id: str, followee_id: str) -> FollowEdge:
    return FollowEdge(follower_id, followee_id, row.followed_at, row.unfollowed_at)


def _bump_side(conn: sa.Connection, user_id: str, follower_side: bool, delta: int) -> None:
    """Add ``delta`` to the count that side keeps: following (follower's), followers
    (followee's)."""
    if follower_side:
        _bump(conn, user_id, following=delta)
    else:
        _bump(conn, user_id, followers=delta)


def _bump(conn: sa.Connection, user_id: str, *, followers: int = 0, following: int = 0) -> None:
    """Add to a user's counts in the caller's transaction (creating the row at zero)."""
    if not followers and not following:
        return
    statement = upsert(conn, _counts).values(
        user_id=user_id, followers=followers, following=following
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["user_id"],
            set_={
                "followers": _counts.c.followers + statement.excluded.followers,
                "following": _counts.c.following + statement.excluded.following,
            },
        )
    )
