"""Accounts in sharded SQL: each on the physical shard of its username's logical shard.

Backend: "sql"
Install extra: none for SQLite; postgres for PostgreSQL
Options: database (the ShardedDatabase of the "users" logical store, its MetaData built
    from ``adapters.photofeed.schema.METADATA["users"]``; required)
Differs from the port: nothing. A user's id carries the logical shard of its username, so
    lookups by id and by name both go to one shard, and the unique username index of that
    shard makes a name unique everywhere. Listing by prefix or by joining time asks every
    shard at once for at most a page each and merges (ShardedDatabase.scatter_gather).
    Lookups by id and name, and the lists, may read a replica (and lag); login reads the
    primary, so a new account can log in at once.
"""

from __future__ import annotations

from typing import Any, ClassVar

import sqlalchemy as sa

from adapters.photofeed.schema import check_database, logical_of, ping_all, users_table
from adapters.sql.shards import ShardedDatabase
from scalecore.capabilities import Capability
from scalecore.errors import InvalidInput, NotFound
from scalecore.ids import logical_shard_for, shard_of
from scalecore.photofeed.models import Account, FeedPosition, User
from scalecore.photofeed.ports import UserRepository

__all__ = ["SqlUserRepository"]

_t = users_table


class SqlUserRepository(UserRepository):
    """Accounts on their username's shard; thread-safe (the database pools connections)."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.SHARED, Capability.DURABLE}
    )

    def __init__(self, *, database: ShardedDatabase) -> None:
        self._db = check_database(database, "users")

    def __repr__(self) -> str:
        return f"SqlUserRepository({self._db!r})"

    def add(self, account: Account) -> None:
        user = account.user
        if shard_of(user.id) != logical_shard_for(user.username):
            raise InvalidInput("a user's id must carry the logical shard of its username")
        row = {
            "id": user.id,
            "username": user.username,
            "password_hash": account.password_hash,
            "created_at": user.created_at,
        }
        self._db.write(shard_of(user.id), lambda conn: conn.execute(_t.insert().values(**row)))

    def get(self, user_id: str) -> User:
        logical = logical_of(user_id)
        if logical is None:
            raise NotFound(f"no user with id {user_id!r}")
        row = self._db.query(
            logical, lambda conn: conn.execute(sa.select(_t).where(_t.c.id == user_id)).first()
        )
        if row is None:
            raise NotFound(f"no user with id {user_id!r}")
        return _user(row)

    def get_by_username(self, username: str) -> User:
        query = sa.select(_t).where(_t.c.username == username)
        row = self._db.query(logical_shard_for(username), lambda conn: conn.execute(query).first())
        if row is None:
            raise NotFound(f"no user {username!r}")
        return _user(row)

    def get_account(self, username: str) -> Account:
        # The primary, not a replica: an account created a moment ago must log in.
        query = sa.select(_t).where(_t.c.username == username)
        row = self._db.query(
            logical_shard_for(username), lambda conn: conn.execute(query).first(), primary=True
        )
        if row is None:
            raise NotFound(f"no user {username!r}")
        return Account(user=_user(row), password_hash=row.password_hash)

    def set_password_hash(self, user_id: str, password_hash: str) -> None:
        logical = logical_of(user_id)
        if logical is None:
            raise NotFound(f"no user with id {user_id!r}")
        statement = _t.update().where(_t.c.id == user_id).values(password_hash=password_hash)
        if self._db.write(logical, lambda conn: conn.execute(statement).rowcount) != 1:
            raise NotFound(f"no user with id {user_id!r}")

    def search(self, prefix: str, *, limit: int, after: str | None = None) -> list[User]:
        def query(conn: sa.Connection, _index: int) -> list[User]:
            name = _bytewise(conn, _t.c.username)
            select = sa.select(_t).where(_t.c.username.startswith(prefix, autoescape=True))
            if after is not None:
                select = select.where(name > after)
            rows = conn.execute(select.order_by(name).limit(limit))
            return [_user(row) for row in rows]

        return self._db.scatter_gather(
            query,
            order_key=lambda user: user.username,
            limit=limit,
            descending=False,
            logical_of=_logical_of_user,
        )

    def recent(self, *, limit: int, before: FeedPosition | None = None) -> list[User]:
        def query(conn: sa.Connection, _index: int) -> list[User]:
            user_id = _bytewise(conn, _t.c.id)
            select = sa.select(_t)
            if before is not None:
                select = select.where(
                    sa.or_(
                        _t.c.created_at < before.created_at,
                        sa.and_(_t.c.created_at == before.created_at, user_id < before.photo_id),
                    )
                )
            rows = conn.execute(
                select.order_by(_t.c.created_at.desc(), user_id.desc()).limit(limit)
            )
            return [_user(row) for row in rows]

        return self._db.scatter_gather(
            query,
            order_key=lambda user: (user.created_at, user.id),
            limit=limit,
            logical_of=_logical_of_user,
        )

    def ping(self) -> None:
        ping_all(self._db)


def _logical_of_user(user: User) -> int:
    return shard_of(user.id)


def _bytewise(conn: sa.Connection, column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
    """``column`` compared and sorted by code point, as Python sorts the merged shards:
    PostgreSQL's default collation may follow a locale (where "_" sorts apart); SQLite
    compares bytes already."""
    if conn.dialect.name == "postgresql":
        return sa.collate(column, "C")
    return column


def _user(row: Any) -> User:
    return User(id=row.id, username=row.username, created_at=row.created_at)
