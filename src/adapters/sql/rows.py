"""Helpers for tables whose rows carry an id of their logical shard (:mod:`scalecore.ids`).

Every such row lives on the physical shard of its id's logical shard, so a batch of ids
splits by shard without a lookup. Malformed ids (they come from URLs) are dropped, never
an error.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import sqlalchemy as sa

from adapters.sql.shards import ShardedDatabase
from scalecore.errors import InvalidInput
from scalecore.ids import shard_of

__all__ = ["by_logical", "logical_of", "ping_all", "shard_index", "shards_of"]


def shard_index(database: ShardedDatabase, some_id: object) -> int | None:
    """The physical shard holding rows of ``some_id``'s logical shard; None if malformed."""
    try:
        return database.shard_for(shard_of(some_id))
    except InvalidInput:
        return None


def logical_of(some_id: object) -> int | None:
    """The logical shard of ``some_id``; None if it is not a well-formed id."""
    try:
        return shard_of(some_id)
    except InvalidInput:
        return None


def by_logical(ids: Iterable[str]) -> dict[int, list[str]]:
    """Group well-formed ids by logical shard (each id once); malformed ids are dropped.

    The input of :meth:`ShardedDatabase.write_each` and ``query_each``, which run one
    fenced transaction per database."""
    grouped: dict[int, list[str]] = defaultdict(list)
    for some_id in dict.fromkeys(ids):
        logical = logical_of(some_id)
        if logical is not None:
            grouped[logical].append(some_id)
    return dict(grouped)


def shards_of(database: ShardedDatabase, ids: Iterable[str]) -> dict[int, list[str]]:
    """Group well-formed ids by physical shard (each id once); malformed ids are dropped."""
    grouped: dict[int, list[str]] = defaultdict(list)
    for some_id in dict.fromkeys(ids):
        index = shard_index(database, some_id)
        if index is not None:
            grouped[index].append(some_id)
    return dict(grouped)


def ping_all(database: ShardedDatabase) -> None:
    """Raise ``BackendUnavailable`` unless every shard answers."""
    database.count(
        lambda connection, _index: int(connection.execute(sa.text("SELECT 1")).scalar_one())
    )
