"""The ``[database]`` shards of an application's tables, and resharding them.

An application names its logical stores and the tables of each (``store name ->
MetaData``); :class:`adapters.sql.shards.Databases` puts each store on the configured
shards (or on databases of its own, ``[database.stores.<name>]``). Building connects to
nothing; SQLAlchemy is imported on first call, not when this module is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from entrypoints.config import Settings
from entrypoints.wiring.build import Closer, rekey
from scalecore.errors import ConfigError

if TYPE_CHECKING:
    import sqlalchemy as sa

    from adapters.sql.shards import Databases

__all__ = [
    "build_databases",
    "databases_for",
    "pool_rows",
    "reshard_statuses",
    "resharders",
]


def databases_for(settings: Settings, metadata: Mapping[str, sa.MetaData]) -> Databases:
    """The application's logical stores on ``settings``' ``[database]``; errors name the key."""
    from adapters.sql.shards import Databases

    try:
        return Databases(metadata=metadata, **settings.data["database"])
    except ConfigError as exc:
        raise rekey(exc, "database") from exc


def build_databases(
    settings: Settings, metadata: Mapping[str, sa.MetaData], closer: Closer
) -> Databases:
    """:func:`databases_for`, disposed of when the container closes."""
    databases = databases_for(settings, metadata)
    closer.add("databases", databases.dispose)
    return databases


def pool_rows(databases: Databases) -> list[tuple[Any, ...]]:
    """(store, shard, role, queries, connections in use, pool size) of every engine."""
    return [
        (store, item.shard, item.role, item.queries, item.in_use, item.size)
        for store, items in databases.pool_stats().items()
        for item in items
    ]


def resharders(
    settings: Settings,
    previous: Settings | None,
    metadata: Mapping[str, sa.MetaData],
    *,
    batch: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[str, tuple[str, ...], Any]]:
    """For ``scalecore db reshard``: one ``Resharder`` per live layout of ``settings``'
    ``[database]`` (a group of databases, or a logical store's own), as ``(layout name,
    its logical stores, resharder)``; a store the new config gives databases of its own
    moves there (vertical partitioning), and back. Stores' own layouts come first.

    ``previous`` is the config the deployment runs with now, needed only while a layout
    has no live layout yet.
    """
    from adapters.sql.reshard import resharders_for

    new = databases_for(settings, metadata)
    old = databases_for(previous, metadata) if previous is not None else None
    return resharders_for(new, old, batch=batch, progress=progress)


def reshard_statuses(
    settings: Settings, metadata: Mapping[str, sa.MetaData]
) -> list[tuple[str, dict[str, Any] | None]]:
    """For ``scalecore db reshard --status``: the journal of each layout's last reshard."""
    from adapters.sql.reshard import reshard_statuses as statuses

    databases = databases_for(settings, metadata)
    try:
        return statuses(databases)
    finally:
        databases.dispose()
