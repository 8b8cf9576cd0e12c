"""Accounts in sharded SQL: each on the physical shard of its username's logical shard.

Backend: "sql"
Install extra: none for SQLite; postgres for PostgreSQL
Options: database (the ShardedDatabase of the "users" logical store, its MetaData built
    from ``adapters.photofeed.schema.METADATA["users"]``; required)
Differs from the port: nothing. A user's id carries the logical shard of its username, so
    lookups by id and by name both go to one shard, and the unique username index of that
    shard makes a name unique everywhere. Lookups by id and name may read a replica (and
    lag); login reads the primary, so a new account can log in at once.
"""

from __future__ import annotations

from typing import Any, ClassVar

import sqlalchemy as sa

from adapters.photofeed.schema import check_database, logical_of, ping_all, users_table
from adapters.sql.shards import ShardedDatabase
from scalecore.capabilities import Capability
from scalecore.errors import InvalidInput, NotFound
from scalecore.ids import logical_shard_for, shard_of
from scalecore.photofeed.models import Account, User
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

    def ping(self) -> None:
        ping_all(self._db)


def _user(row: Any) -> User:
    return User(id=row.id, username=row.username, created_at=row.created_at)
