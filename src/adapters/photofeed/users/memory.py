"""Accounts in a dict of this process.

Backend: "memory"
Install extra: none
Options: none
Differs from the port: accounts live in this process only and vanish with it; a second
    server sees none of them (for tests and a one-process trial). Ids are checked as the
    SQL adapter checks them, so both refuse the same input.
"""

from __future__ import annotations

import threading
from typing import ClassVar

import attrs

from scalecore.capabilities import Capability
from scalecore.errors import Conflict, InvalidInput, NotFound
from scalecore.ids import logical_shard_for, shard_of
from scalecore.photofeed.models import Account, FeedPosition, User
from scalecore.photofeed.ports import UserRepository

__all__ = ["MemoryUserRepository"]


class MemoryUserRepository(UserRepository):
    """Accounts by id and by username under one lock; thread-safe."""

    #: Not SHARED, not DURABLE: the data lives in this process.
    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accounts: dict[str, Account] = {}
        self._ids_by_name: dict[str, str] = {}

    def add(self, account: Account) -> None:
        user = account.user
        if shard_of(user.id) != logical_shard_for(user.username):
            raise InvalidInput("a user's id must carry the logical shard of its username")
        with self._lock:
            if user.username in self._ids_by_name or user.id in self._accounts:
                raise Conflict(f"username {user.username!r} or id {user.id!r} is taken")
            self._accounts[user.id] = account
            self._ids_by_name[user.username] = user.id

    def get(self, user_id: str) -> User:
        with self._lock:
            account = self._accounts.get(user_id)
        if account is None:
            raise NotFound(f"no user with id {user_id!r}")
        return account.user

    def get_by_username(self, username: str) -> User:
        return self.get_account(username).user

    def get_account(self, username: str) -> Account:
        with self._lock:
            user_id = self._ids_by_name.get(username)
            account = self._accounts.get(user_id) if user_id is not None else None
        if account is None:
            raise NotFound(f"no user {username!r}")
        return account

    def search(self, prefix: str, *, limit: int, after: str | None = None) -> list[User]:
        with self._lock:
            names = sorted(
                name
                for name in self._ids_by_name
                if name.startswith(prefix) and (after is None or name > after)
            )[:limit]
            return [self._accounts[self._ids_by_name[name]].user for name in names]

    def recent(self, *, limit: int, before: FeedPosition | None = None) -> list[User]:
        with self._lock:
            users = [account.user for account in self._accounts.values()]
        bound = None if before is None else (before.created_at, before.photo_id)
        chosen = [u for u in users if bound is None or (u.created_at, u.id) < bound]
        chosen.sort(key=lambda user: (user.created_at, user.id), reverse=True)
        return chosen[:limit]

    def set_password_hash(self, user_id: str, password_hash: str) -> None:
        with self._lock:
            account = self._accounts.get(user_id)
            if account is None:
                raise NotFound(f"no user with id {user_id!r}")
            self._accounts[user_id] = attrs.evolve(account, password_hash=password_hash)
