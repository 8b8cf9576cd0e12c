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
    """For ``scalecore db reshard``: one ``Resharder`` per group of databases (layout) of
    ``settings``' ``[database]``, as ``(layout name, its logical stores, resharder)``.

    ``previous`` is the config the deployment runs with now, needed only while no live
    layout exists. Raises ``ConfigError`` if the two configs group the logical stores
    differently (a store moving onto databases of its own is not supported yet).
    """
    from adapters.sql.reshard import Resharder

    new = databases_for(settings, metadata)
    old = databases_for(previous, metadata) if previous is not None else None
    groups = new.groups()
    if old is not None:
        before = {name: old.stores_of(name) for name in old.groups()}
        after = {name: new.stores_of(name) for name in groups}
        if before != after:
            raise ConfigError(
                "the two configs put the logical stores on different groups of databases; "
                "db reshard moves logical shards within one group (use scalecore migrate "
                "to give a store databases of its own)",
                key="database.stores",
            )
    result = []
    for name, database in sorted(groups.items()):
        previous_db = old.groups()[name] if old is not None else None
        resharder = Resharder(
            database=database, previous=previous_db, batch=batch, progress=progress
        )
        result.append((name, new.stores_of(name), resharder))
    return result


def reshard_statuses(
    settings: Settings, metadata: Mapping[str, sa.MetaData]
) -> list[tuple[str, dict[str, Any] | None]]:
    """For ``scalecore db reshard --status``: the journal of each layout's last reshard."""
    from adapters.sql.reshard import reshard_status

    databases = databases_for(settings, metadata)
    try:
        return [(name, reshard_status(db)) for name, db in sorted(databases.groups().items())]
    finally:
        databases.dispose()
