"""Sharded SQL databases: one schema on N physical shards, with replicas and logical stores.

Backend: sql (SQLAlchemy 2 Core; SQLite files or PostgreSQL databases)
Install extra: none for SQLite; postgres for PostgreSQL
Options: ShardedDatabase(*, shards, router, metadata, create_database=False, max_workers=8,
                         layout="default", control=None, fence_wait=5.0, layout_ttl=2.0)
    shards           list, one entry per physical shard: a database URL, or a table
                     {url = "...", replicas = ["...", ...]} naming read replicas
    router           ShardRouter with shard_count == len(shards) (built by the composition
                     root, e.g. scalecore.routing.make_router)
    metadata         sqlalchemy MetaData of the tables that live on every shard
    create_database  create missing PostgreSQL databases of the primaries on first use
    max_workers      threads that query shards in parallel in scatter_gather and count
    layout           the name of its live layout in the control database
    control          the control database's URL (default: the first shard)
    fence_wait       seconds a write refused by a moving logical shard is retried
    layout_ttl       seconds the live layout is cached before it is read again
  Databases(*, metadata, shards, strategy="jump", pins=None, create_databases=False,
            stores=None, max_workers=8): the [database] config table as it is, plus
    metadata         logical store name -> MetaData of that store's tables
    stores           logical store name -> a URL (one shard) or a table with its own
                     shards, strategy, pins, create_databases; unlisted stores share the
                     top-level shards
    control          the control database of the live layouts (default: the first shard)
    layout_ttl       seconds a process trusts its cached live layout (default 2)
Differs from the port: the ShardRouter port only routes; this module adds the SQL side.
    Replicas are read-only copies kept by the database's own replication: reads through
    ``read`` and ``scatter_gather`` may lag the primary. Each unit of work is a transaction
    on one shard; there are no cross-shard transactions.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import heapq
import itertools
import re
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

import attrs
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from adapters.sql.engine import create_tables, make_engine, translate_errors
from adapters.sql.layout import (
    LAYOUT_TTL,
    Layout,
    check_owned,
    connect_url,
    identity,
    key_column,
    load_layouts,
    logical_of_key,
    owned_states,
    shard_expression,
)
from scalecore.errors import BackendUnavailable, ConfigError, InvalidInput, NotFound, ShardMoved
from scalecore.ids import LOGICAL_SHARDS
from scalecore.ports.sharding import ShardKey, ShardRouter
from scalecore.routing import make_router
from scalecore.validate import check_int, is_int, is_number

__all__ = ["Databases", "PoolStats", "ShardConfig", "ShardedDatabase"]

T = TypeVar("T")
R = TypeVar("R")
X = TypeVar("X")

#: Layout names, like store names (``default`` is the shards stores share).
_LAYOUT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

#: Logical store names: lower-case identifiers, as they appear in config.
_STORE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@attrs.frozen
class ShardConfig:
    """One physical shard: its primary's URL and its read replicas' URLs."""

    url: str
    replicas: tuple[str, ...] = ()


@attrs.frozen
class PoolStats:
    """One engine of a sharded database, for metrics: the physical shard, whether it is
    the ``primary`` or a ``replica``, statements run since it was made, and its pool's
    connections in use (checked out) and size (0 for pools without a fixed size)."""

    shard: int
    role: str
    queries: int
    in_use: int
    size: int


def _parse_shards(shards: object, where: str) -> list[ShardConfig]:
    if isinstance(shards, str | bytes) or not isinstance(shards, Sequence) or not shards:
        raise ConfigError("must be a non-empty list of database URLs", key=where)
    parsed: list[ShardConfig] = []
    for index, shard in enumerate(shards):
        key = f"{where}[{index}]"
        if isinstance(shard, str):
            parsed.append(ShardConfig(_check_url(shard, key)))
        elif isinstance(shard, Mapping):
            unknown = set(shard) - {"url", "replicas"}
            if unknown:
                raise ConfigError("unknown key; known: replicas, url", key=f"{key}.{min(unknown)}")
            replicas = shard.get("replicas", [])
            if isinstance(replicas, str) or not isinstance(replicas, Sequence):
                raise ConfigError("must be a list of database URLs", key=f"{key}.replicas")
            parsed.append(
                ShardConfig(
                    _check_url(shard.get("url"), f"{key}.url"),
                    tuple(_check_url(r, f"{key}.replicas[{i}]") for i, r in enumerate(replicas)),
                )
            )
        else:
            raise ConfigError("must be a database URL or a table {url, replicas}", key=key)
    return parsed


def _check_url(url: object, key: str) -> str:
    # The message never repeats the URL: it may hold a password.
    if not isinstance(url, str) or not url:
        raise ConfigError("must be a database URL", key=key)
    try:
        backend = make_url(url).get_backend_name()
    except (sa_exc.ArgumentError, ValueError):
        backend = None
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(
            "must be a database URL like sqlite:///var/db.sqlite or postgresql://host/db",
            key=key,
        )
    return url


class ShardedDatabase:
    """A set of physical shards holding the same tables, and the key -> shard routing.

    Thread-safe; engines (and PostgreSQL databases, with ``create_database``) are made on
    first use, so constructing one connects to nothing. Every method raises
    :class:`BackendUnavailable` (or :class:`Conflict` for a violated constraint) instead of
    a SQLAlchemy or driver error.
    """

    def __init__(
        self,
        *,
        shards: Sequence[str | Mapping[str, Any]],
        router: ShardRouter,
        metadata: sa.MetaData,
        create_database: bool = False,
        max_workers: int = 8,
        layout: str = "default",
        control: str | None = None,
        fence_wait: float = 5.0,
        layout_ttl: float = LAYOUT_TTL,
    ) -> None:
        self._shards = _parse_shards(shards, "shards")
        if not isinstance(router, ShardRouter):
            raise ConfigError(f"must be a ShardRouter, not {type(router).__name__}", key="router")
        if router.shard_count != len(self._shards):
            raise ConfigError(
                f"routes to {router.shard_count} shards but {len(self._shards)} are configured",
                key="router",
            )
        if not isinstance(metadata, sa.MetaData):
            raise ConfigError("must be a sqlalchemy MetaData", key="metadata")
        if not isinstance(create_database, bool):
            raise ConfigError("must be true or false", key="create_database")
        check_int(max_workers, "max_workers", minimum=1, error=ConfigError)
        if not isinstance(layout, str) or not _LAYOUT_NAME.match(layout):
            raise ConfigError("must be a lower-case identifier", key="layout")
        if control is not None:
            _check_url(control, "control")
        if not is_number(fence_wait):
            raise ConfigError("must be a number of seconds", key="fence_wait")
        if (
            isinstance(layout_ttl, bool)
            or not isinstance(layout_ttl, int | float)
            or not 0 <= layout_ttl <= 3600
        ):
            raise ConfigError("must be a number of seconds from 0 to 3600", key="layout_ttl")
        self._name = layout
        # The live layouts this database follows, the first that exists winning: a
        # store's own (see :meth:`view`), then the group's.
        self._names: tuple[str, ...] = (layout,)
        self._layout_ttl = float(layout_ttl)
        self._control = control if control is not None else self._shards[0].url
        self._fence_wait = float(fence_wait)
        self._layout: Layout | None = None
        self._layout_at = -float("inf")
        self._layout_lock = threading.Lock()
        self._overrides: dict[int, str] = {}
        self._reachable: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._router = router
        self._metadata = metadata
        self._create_database = create_database
        self._max_workers = min(max_workers, len(self._shards))
        self._lock = threading.Lock()
        self._engines: dict[str, sa.Engine] = {}
        self._readers: dict[str, sa.Engine] = {}
        # Statements run per engine URL, counted by a SQLAlchemy event (for metrics).
        self._queries: dict[str, int] = {}
        self._replica_turns = [itertools.count() for _ in self._shards]
        self._executor: ThreadPoolExecutor | None = None

    @property
    def shard_count(self) -> int:
        """Physical databases: the live layout's when there is one, else the config's."""
        return len(self)

    @property
    def create_database(self) -> bool:
        """Whether missing PostgreSQL databases of the primaries are created on first use."""
        return self._create_database

    @property
    def layout_name(self) -> str:
        """The name of this database's live layout in the control database."""
        return self._name

    @property
    def layout_names(self) -> tuple[str, ...]:
        """The live layouts this database follows, first the one that wins when it
        exists: for a logical store's :meth:`view`, the store's own name, then the
        group's (``layout_name``)."""
        return self._names

    def view(self, store: str) -> ShardedDatabase:
        """This database as logical store ``store`` sees it: the same shards, engines and
        pools, but following the live layout called ``store`` once one exists (the store
        was moved onto databases of its own by ``db reshard``), else this one's.

        Writes check the store's own state rows first, so a process whose config still
        puts the store on these shards is fenced when the store moves away."""
        if not isinstance(store, str) or not _STORE_NAME.match(store):
            raise ConfigError("must be a lower-case identifier", key="store")
        if (store,) == self._names:
            return self
        clone = copy.copy(self)  # shares the engines, pools, counters and locks
        clone._names = (store, self._name)
        clone._layout = None
        clone._layout_at = -float("inf")
        clone._layout_lock = threading.Lock()
        clone._overrides = {}
        clone._executor = None
        return clone

    @property
    def control_url(self) -> str:
        """The URL of the control database that holds the live layout."""
        return self._control

    @property
    def configured_urls(self) -> tuple[str, ...]:
        """The primaries' URLs of the config, in order."""
        return tuple(shard.url for shard in self._shards)

    @property
    def router(self) -> ShardRouter:
        return self._router

    @property
    def metadata(self) -> sa.MetaData:
        return self._metadata

    def shard_for(self, key: ShardKey) -> int:
        """The physical shard that holds ``key``.

        Without a live layout, the router's answer. With one, ``key`` must be a logical
        shard and the answer is the index of its owner in the layout's databases.
        """
        layout = self.live_layout()
        if layout is None:
            return self._router.shard_for(key)
        return layout.databases.index(self._owner(layout, _logical(key)))

    def _index(self, key: ShardKey | None, shard: int | None) -> int:
        if (key is None) == (shard is None):
            raise InvalidInput("pass exactly one of a key or shard=")
        if shard is None:
            assert key is not None
            return self.shard_for(key)
        return check_int(shard, "shard", minimum=0, maximum=len(self) - 1)

    def __len__(self) -> int:
        layout = self.live_layout()
        return len(self._shards) if layout is None else len(layout.databases)

    # -- the live layout ---------------------------------------------------------------

    def live_layout(self) -> Layout | None:
        """The live layout (cached for at most ``layout_ttl`` seconds, by default
        ``LAYOUT_TTL``), or None if the control database holds none: then the config's
        router decides, as before. A :meth:`view` follows the store's own layout once
        one exists."""
        if time.monotonic() - self._layout_at < self._layout_ttl:
            return self._layout
        return self.reload_layout()

    def reload_layout(self) -> Layout | None:
        """Read the live layout from the control database now."""
        with self._layout_lock:
            began = time.monotonic()
            if began - self._layout_at < 0.05:  # another thread just did
                return self._layout
            try:
                layout = self._statements(
                    self._control,
                    True,
                    lambda connection: _first_layout(
                        load_layouts(connection, self._names), self._names
                    ),
                )
            except BackendUnavailable as exc:
                raise BackendUnavailable("the control database is unavailable") from exc
            if layout is not None:
                for logical, name in list(self._overrides.items()):
                    if layout.owner(logical) == name or name not in layout.databases:
                        del self._overrides[logical]
            self._layout, self._layout_at = layout, began
            return layout

    def _owner(self, layout: Layout, logical: int) -> str:
        override = self._overrides.get(logical)
        if override is not None and override in layout.databases:
            return override
        return layout.owner(logical)

    def _moved(self, logicals: Collection[int], moved_to: str | None) -> None:
        # A refusal naming the new owner is followed at once; one that names none (the
        # hint led to a database that does not own it, or the move was undone) drops
        # the hint, and the layout decides again.
        for logical in logicals:
            if moved_to is not None:
                self._overrides[logical] = moved_to
            else:
                self._overrides.pop(logical, None)
        self._layout_at = -float("inf")  # the next call reads the layout again

    def _url(self, index: int) -> tuple[str, tuple[str, ...]]:
        """The primary URL and replica URLs of physical shard ``index``."""
        layout = self.live_layout()
        if layout is None:
            config = self._shards[index]
            return config.url, config.replicas
        return self._reach(layout.databases[index])

    def _reach(self, name: str) -> tuple[str, tuple[str, ...]]:
        """The URL (and replicas) to reach the database of identity ``name``: the config's
        entry for it, else :func:`connect_url`. Cached: identities never change meaning."""
        found = self._reachable.get(name)
        if found is None:
            for config in self._shards:
                if identity(config.url) == name:
                    found = (config.url, config.replicas)
                    break
            else:
                found = (connect_url(name, self.configured_urls), ())
            self._reachable[name] = found
        return found

    def owned_subset(self, connection: sa.Connection, logical_shards: Collection[int]) -> set[int]:
        """Which of ``logical_shards`` the database of ``connection`` (a unit of work)
        owns, their state rows locked ``FOR SHARE`` until it commits; all of them when
        there is no live layout. For work that spans a whole database (claims, purges)
        and must leave alone the rows of logical shards that are moving or moved."""
        wanted = set(logical_shards)
        if not wanted or self.live_layout() is None:
            return wanted
        return owned_states(connection, self._names, wanted, lock=True)

    def write(self, logical_shard: int, work: Callable[[sa.Connection], T]) -> T:
        """Run ``work(connection)`` in one transaction on the owner of ``logical_shard``.

        The fenced form of :meth:`unit_of_work` that repositories use. With a live layout
        the transaction first checks, ``FOR SHARE``, that the database still owns the
        logical shard; if it has moved, ``work`` is rolled back and run again on the new
        owner (so it must only touch the database). Raises :class:`ShardMoved` (a
        :class:`BackendUnavailable`, so a 503) if the move did not settle within
        ``fence_wait`` seconds.
        """
        results = self.write_each({_logical(logical_shard): [None]}, lambda conn, _: work(conn))
        return results[0]

    def write_each(
        self,
        items: Mapping[int, Sequence[X]],
        work: Callable[[sa.Connection, list[X]], T],
    ) -> list[T]:
        """Run ``work(connection, items)`` once per database, with the items of the logical
        shards it owns, each call one fenced transaction (see :meth:`write`).

        ``items`` maps logical shards to their items. Returns the calls' results (in no
        particular order). A logical shard that moves is retried on its new owner with
        its own items only; what committed stays committed.
        """
        return self._each(items, work, write=True, primary=True)

    def query(
        self, logical_shard: int, work: Callable[[sa.Connection], T], *, primary: bool = False
    ) -> T:
        """Run ``work(connection)`` on a connection to the owner of ``logical_shard`` and
        return its result; ``primary`` avoids replicas (read your own writes).

        With a live layout the state is checked after ``work`` has read: rows are deleted
        from an old owner only after it says ``moved``, so an answer read before that is
        whole; a moved logical shard is read again from its new owner.
        """
        results = self.query_each(
            {_logical(logical_shard): [None]}, lambda conn, _: work(conn), primary=primary
        )
        return results[0]

    def query_each(
        self,
        items: Mapping[int, Sequence[X]],
        work: Callable[[sa.Connection, list[X]], T],
        *,
        primary: bool = False,
    ) -> list[T]:
        """:meth:`query` for many logical shards: one call per database (see
        :meth:`write_each`)."""
        return self._each(items, work, write=False, primary=primary)

    def _each(
        self,
        items: Mapping[int, Sequence[X]],
        work: Callable[[sa.Connection, list[X]], T],
        *,
        write: bool,
        primary: bool,
    ) -> list[T]:
        pending = {_logical(logical): list(group) for logical, group in items.items()}
        results: list[T] = []
        deadline = time.monotonic() + self._fence_wait
        delay = 0.005
        while True:
            layout = self.live_layout()
            groups: dict[int, list[int]] = {}
            for logical in pending:
                if layout is None:
                    index = self._router.shard_for(logical)
                else:
                    index = layout.databases.index(self._owner(layout, logical))
                groups.setdefault(index, []).append(logical)
            refused: ShardMoved | None = None
            for index, logicals in groups.items():
                batch = [item for logical in logicals for item in pending[logical]]
                try:
                    results.append(self._run(index, logicals, batch, work, layout, write, primary))
                except ShardMoved as exc:
                    self._moved(logicals, exc.moved_to)
                    refused = exc
                    continue
                for logical in logicals:
                    del pending[logical]
            if not pending:
                return results
            assert refused is not None
            if time.monotonic() + delay > deadline:
                raise refused
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _run(
        self,
        index: int,
        logicals: list[int],
        batch: list[X],
        work: Callable[[sa.Connection, list[X]], T],
        layout: Layout | None,
        write: bool,
        primary: bool,
    ) -> T:
        if layout is None:
            url, replicas = self._url(index)
        else:
            url, replicas = self._reach(layout.databases[index])
        is_primary = True
        if replicas and not write and not primary:
            turn = next(self._replica_turns[index % len(self._replica_turns)])
            url, is_primary = replicas[turn % len(replicas)], False
        if write:
            if layout is None:
                return self._transaction(url, lambda connection: work(connection, batch))

            def fenced_write(connection: sa.Connection) -> T:
                check_owned(connection, self._names, logicals, lock=True)
                return work(connection, batch)

            return self._transaction(url, fenced_write)
        if layout is None:
            return self._statements(url, is_primary, lambda connection: work(connection, batch))

        def fenced_read(connection: sa.Connection) -> T:
            result = work(connection, batch)
            check_owned(connection, self._names, logicals, lock=False)
            return result

        return self._statements(url, is_primary, fenced_read)

    # Disconnects are handled optimistically: the engines do not ping a connection before
    # each use (``pool_pre_ping`` costs a round trip per checkout, as much as a short
    # query). A statement that meets a connection the database has dropped (a restart, a
    # failover) fails; SQLAlchemy then invalidates it and every other connection the pool
    # held before, and the work below runs once more on a fresh connection. That is safe
    # for reads, and for a transaction that failed before its COMMIT was sent (the
    # database rolls back what a dropped connection left open); a COMMIT that fails is
    # never repeated (its outcome is unknown), so that error reaches the caller.

    def _statements(self, url: str, primary: bool, work: Callable[[sa.Connection], T]) -> T:
        """``work(connection)`` on a connection in autocommit mode (PostgreSQL): a read
        costs its own statements' round trips, with no BEGIN and no ROLLBACK."""

        def attempt() -> T:
            with translate_errors(), self._reader(url, primary=primary).connect() as connection:
                return work(connection)

        try:
            return attempt()
        except BackendUnavailable as exc:
            if not _dropped(exc):
                raise
        return attempt()

    def _transaction(self, url: str, work: Callable[[sa.Connection], T]) -> T:
        """``work(connection)`` in one transaction on the primary ``url``."""
        committing = False

        def attempt() -> T:
            nonlocal committing
            with translate_errors(), self._engine(url, primary=True).begin() as connection:
                result = work(connection)
                committing = True
            return result

        try:
            return attempt()
        except BackendUnavailable as exc:
            if committing or not _dropped(exc):
                raise
        return attempt()

    def _engine(self, url: str, *, primary: bool) -> sa.Engine:
        with self._lock:
            engine = self._engines.get(url)
            if engine is None:
                engine = make_engine(
                    url,
                    create_database=self._create_database and primary,
                    pool_pre_ping=False,  # see _statements and _transaction
                )
                self._queries.setdefault(url, 0)
                sa.event.listen(engine, "before_cursor_execute", self._counter(url))
                self._engines[url] = engine
            return engine

    def _reader(self, url: str, *, primary: bool) -> sa.Engine:
        """The engine of ``url`` in autocommit mode for single reads: same pool, and on
        PostgreSQL no BEGIN and ROLLBACK round trips around them (at READ COMMITTED a
        lone statement sees what it would have seen in a transaction). SQLite keeps its
        transactions: its connections manage BEGIN themselves (see ``make_engine``)."""
        engine = self._engine(url, primary=primary)
        if engine.dialect.name != "postgresql":
            return engine
        with self._lock:
            reader = self._readers.get(url)
            if reader is None:
                reader = engine.execution_options(isolation_level="AUTOCOMMIT")
                self._readers[url] = reader
            return reader

    def _counter(self, url: str) -> Callable[..., None]:
        def count(*_args: Any) -> None:
            with self._lock:
                self._queries[url] += 1

        return count

    def pool_stats(self) -> list[PoolStats]:
        """Queries and pool use of every engine made so far (none is made here)."""
        with self._lock:
            engines = dict(self._engines)
            queries = dict(self._queries)
        stats = []
        # With a live layout (the cached one: nothing is read here) its databases are the
        # physical shards, including any the config does not list.
        layout = self._layout
        if layout is None:
            shards = [(config.url, config.replicas) for config in self._shards]
        else:
            shards = [self._reach(name) for name in layout.databases]
        for index, (primary, replicas) in enumerate(shards):
            for url, role in [(primary, "primary")] + [(r, "replica") for r in replicas]:
                engine = engines.get(url)
                if engine is None:
                    continue
                pool: Any = engine.pool
                in_use = pool.checkedout() if hasattr(pool, "checkedout") else 0
                size = pool.size() if hasattr(pool, "size") else 0
                stats.append(PoolStats(index, role, queries.get(url, 0), int(in_use), int(size)))
        return stats

    @contextlib.contextmanager
    def unit_of_work(
        self, key: ShardKey | None = None, *, shard: int | None = None
    ) -> Iterator[sa.Connection]:
        """Yield a connection in one transaction on the primary of ``key``'s shard.

        Pass a routing key, or ``shard=`` a physical shard index (from ``shard_for`` or
        a scatter-gather callback). The transaction commits when the block ends and rolls
        back if it raises, so nothing is half-written; the block's own exception is
        re-raised (SQLAlchemy errors translated). Raises :class:`InvalidInput` for a bad
        shard index. A connection the database has dropped fails the block once (see
        ``_transaction`` for the repositories' retry).
        """
        index = self._index(key, shard)
        url, _replicas = self._url(index)
        with translate_errors():
            engine = self._engine(url, primary=True)
            with engine.begin() as connection:
                yield connection

    @contextlib.contextmanager
    def read(
        self, key: ShardKey | None = None, *, shard: int | None = None
    ) -> Iterator[sa.Connection]:
        """Yield a connection for reading ``key``'s shard (or ``shard=`` an index).

        With replicas configured, successive reads of a shard take them in turn
        (round-robin) and may lag the primary; read your own writes through
        :meth:`unit_of_work`. Without replicas the primary serves. Nothing done through
        this connection is committed.
        """
        index = self._index(key, shard)
        url, replicas = self._url(index)
        primary = True
        if replicas:
            turn = next(self._replica_turns[index % len(self._replica_turns)])
            url, primary = replicas[turn % len(replicas)], False
        with translate_errors():
            engine = self._engine(url, primary=primary)
            # Closing rolls back whatever the block left open: reads never commit.
            with engine.connect() as connection:
                yield connection

    def scatter_gather(
        self,
        query: Callable[[sa.Connection, int], Sequence[T]],
        *,
        order_key: Callable[[T], Any],
        limit: int | None,
        descending: bool = True,
        logical_of: Callable[[T], int] | None = None,
    ) -> list[T]:
        """Run ``query(connection, shard_index)`` on every shard at once; merge the results.

        Returns the rows of all shards in ``order_key`` order (largest first when
        ``descending``), cut to ``limit`` (``None``: no cut). For "newest N across shards"
        each shard's query should itself ``ORDER BY`` and ``LIMIT`` N: the global top N is
        always within the union of every shard's top N, so the answer is exact while each
        shard sends at most N rows. Each shard's rows are sorted again here, so a query
        that forgets ``ORDER BY`` is slower, not wrong (unless it also applied a LIMIT).
        Ties keep shard order. Reads go through :meth:`read` (replicas when configured).

        ``logical_of`` gives a row's logical shard (``shard_of`` of the id that routes
        it). With it and a live layout, each database's rows are kept only for the
        logical shards that database owns, as its state rows say when read after the
        rows, and each logical shard is taken from one database only: while a reshard
        moves a logical shard its rows exist on the old and the new owner (from the copy
        to the delete), and this reads them once. When that drops rows from a database
        whose answer ``limit`` cut, the merge stops at the last row that database sent
        (rows after it might be missing): the answer is then shorter, never wrong.

        Raises :class:`InvalidInput` for a negative ``limit``, and
        :class:`BackendUnavailable` naming the shard index (never its URL) if a shard
        fails; other exceptions from ``query`` propagate unchanged.
        """
        if limit is not None and not (is_int(limit) and limit >= 0):
            raise InvalidInput(f"limit must be None or a non-negative integer, got {limit!r}")
        if limit == 0:
            return []
        if logical_of is None or self.live_layout() is None:
            results = self._on_every_shard(lambda index: list(self._read_with(query, index)))
            runs = [sorted(rows, key=order_key, reverse=descending) for rows in results]
            merged = heapq.merge(*runs, key=order_key, reverse=descending)
            return list(itertools.islice(merged, limit))
        found = self._on_every_shard(lambda index: self._read_owned(query, index, logical_of))
        keep = self._claims([{logical_of(row) for row in rows} & owned for rows, owned in found])
        runs = []
        stop: Any = None
        for index, (rows, _owned) in enumerate(found):
            kept = [row for row in rows if keep.get(logical_of(row)) == index]
            if len(kept) < len(rows) and limit is not None and len(rows) >= limit:
                # This database's answer was cut by the limit and lost rows here: rows
                # after its last one may be missing, so the merge stops there.
                last = order_key(
                    min(rows, key=order_key) if descending else max(rows, key=order_key)
                )
                if stop is None or (last > stop if descending else last < stop):
                    stop = last
            runs.append(sorted(kept, key=order_key, reverse=descending))
        joined: Iterator[T] = heapq.merge(*runs, key=order_key, reverse=descending)
        if stop is not None:
            joined = itertools.takewhile(
                lambda row: order_key(row) >= stop if descending else order_key(row) <= stop,
                joined,
            )
        return list(itertools.islice(joined, limit))

    def count_rows(self, table: sa.Table, *where: Any) -> int:
        """The number of rows of ``table`` matching ``where`` on every shard, each logical
        shard counted on one database only (its owner; see ``logical_of`` of
        :meth:`scatter_gather`). ``table`` must be keyed by ids (its first primary key
        column carries the logical shard)."""
        key = shard_expression(key_column(table)).label("k")
        query = sa.select(key, sa.func.count()).select_from(table).where(*where).group_by(key)

        def counts(connection: sa.Connection, _index: int) -> list[tuple[int, int]]:
            totals: dict[int, int] = {}
            for value, number in connection.execute(query):
                if value and len(value) == 4:
                    logical = logical_of_key(value)
                    totals[logical] = totals.get(logical, 0) + int(number)
            return list(totals.items())

        if self.live_layout() is None:
            return sum(
                n
                for rows in self._on_every_shard(lambda index: self._read_with(counts, index))
                for _, n in rows
            )
        found = self._on_every_shard(lambda index: self._read_owned(counts, index, _first))
        keep = self._claims([{row[0] for row in rows} & owned for rows, owned in found])
        return sum(
            number
            for index, (rows, _owned) in enumerate(found)
            for logical, number in rows
            if keep.get(logical) == index
        )

    def _read_owned(
        self,
        query: Callable[[sa.Connection, int], Sequence[T]],
        index: int,
        logical_of: Callable[[T], int],
    ) -> tuple[list[T], set[int]]:
        """The rows ``query`` reads on shard ``index`` and, read after them, which of their
        logical shards that database owns."""
        with self.read(shard=index) as connection:
            rows = list(query(connection, index))
            logicals = {logical_of(row) for row in rows}
            owned = owned_states(connection, self._names, logicals, lock=False)
            return rows, owned

    def _claims(self, owned: Sequence[set[int]]) -> dict[int, int]:
        """Logical shard -> the one shard index to take its rows from. Two databases may
        both have said "owned" only when the switch fell between their reads; then the
        layout's owner (else the first) is taken, each answer being whole."""
        layout = self.live_layout()
        keep: dict[int, int] = {}
        for index, logicals in enumerate(owned):
            for logical in logicals:
                if logical not in keep or (
                    layout is not None
                    and index < len(layout.databases)
                    and layout.databases[index] == self._owner(layout, logical)
                ):
                    keep[logical] = index
        return keep

    def count(self, query: Callable[[sa.Connection, int], int]) -> int:
        """Sum ``query(connection, shard_index)`` over every shard, queried in parallel.

        Fails like :meth:`scatter_gather`.
        """
        return sum(self._on_every_shard(lambda index: int(self._read_with(query, index))))

    def _read_with(self, query: Callable[[sa.Connection, int], R], index: int) -> R:
        url, replicas = self._url(index)
        primary = True
        if replicas:
            turn = next(self._replica_turns[index % len(self._replica_turns)])
            url, primary = replicas[turn % len(replicas)], False
        return self._statements(url, primary, lambda connection: query(connection, index))

    def _on_every_shard(self, task: Callable[[int], R]) -> list[R]:
        executor = self._pool()
        futures = [executor.submit(task, index) for index in range(len(self))]
        wait(futures)  # every shard finishes before we raise, so no connection outlives us
        for index, future in enumerate(futures):
            error = future.exception()
            if isinstance(error, BackendUnavailable):
                # The index, never the URL: URLs may hold passwords.
                cause = error.__cause__ or error
                raise BackendUnavailable(
                    f"shard {index} is unavailable ({type(cause).__name__})"
                ) from error
            if error is not None:
                raise error
        return [future.result() for future in futures]

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self._max_workers, thread_name_prefix="scalecore-shard"
                )
            return self._executor

    def create_schema(self) -> None:
        """Create the metadata's missing tables and indexes on every primary; idempotent,
        and safe when several processes run it at once."""
        for index, config in enumerate(self._shards):
            try:
                with translate_errors():
                    create_tables(self._engine(config.url, primary=True), self._metadata)
            except BackendUnavailable as exc:
                raise BackendUnavailable(f"shard {index}: cannot create the schema") from exc

    def drop_schema(self) -> None:
        """Drop the metadata's tables on every primary (tests and tear-down); idempotent."""
        for index, config in enumerate(self._shards):
            try:
                with translate_errors():
                    self._metadata.drop_all(self._engine(config.url, primary=True))
            except BackendUnavailable as exc:
                raise BackendUnavailable(f"shard {index}: cannot drop the schema") from exc

    def dispose(self) -> None:
        """Close every pooled connection and the worker threads; the object stays usable."""
        with self._lock:
            engines = list(self._engines.values())
            self._engines.clear()
            self._readers.clear()
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        for engine in engines:
            engine.dispose()

    def __repr__(self) -> str:  # never the URLs: they may hold passwords
        return f"ShardedDatabase(shards={len(self._shards)}, router={self._router!r})"


def _dropped(error: BackendUnavailable) -> bool:
    """Whether ``error`` came from a connection the database had dropped (SQLAlchemy has
    invalidated it and the pool's older connections: a retry gets a fresh one)."""
    cause = error.__cause__
    return isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated


def _first_layout(found: Mapping[str, Layout], names: Sequence[str]) -> Layout | None:
    return next((found[name] for name in names if name in found), None)


def _first(row: tuple[int, int]) -> int:
    return row[0]


def _logical(key: object) -> int:
    if not is_int(key) or not 0 <= key < LOGICAL_SHARDS:
        raise InvalidInput(
            f"with a live layout a key must be a logical shard (0 to {LOGICAL_SHARDS - 1}), "
            f"got {key!r}"
        )
    return key


_STORE_KEYS = frozenset({"shards", "strategy", "pins", "create_databases"})


class Databases:
    """Vertical partitioning: each logical store ("users", "photos", "feed" ...) on its own
    databases, or all of them on one set of shards.

    The keyword arguments other than ``metadata`` and ``max_workers`` are the
    ``[database]`` config table as it is: ``shards``, ``strategy``, ``pins`` and
    ``create_databases`` describe the default shards; ``stores`` gives a logical store
    its own, either as one URL (one shard) or as a table of the same four keys
    (``create_databases`` defaults to the top-level value). ``metadata`` maps every
    logical store the application has to the MetaData of its tables; stores without an
    entry in ``stores`` share the default shards, whose schema is the union of theirs.

    Pin keys come from TOML, so they are text; a pin key of decimal digits is read as the
    integer key (a logical shard, see :mod:`scalecore.ids`), any other as a text key.

    Raises :class:`ConfigError` naming the option (``stores.photos.shards[1]``) for a bad
    value, a store in ``stores`` the application does not declare, or two default-sharded
    stores declaring the same table. Connects to nothing.
    """

    def __init__(
        self,
        *,
        metadata: Mapping[str, sa.MetaData],
        shards: Sequence[str | Mapping[str, Any]],
        strategy: str = "jump",
        pins: Mapping[str, int] | None = None,
        create_databases: bool = False,
        stores: Mapping[str, str | Mapping[str, Any]] | None = None,
        max_workers: int = 8,
        control: str | None = None,
        layout_ttl: float = LAYOUT_TTL,
    ) -> None:
        if not isinstance(metadata, Mapping) or not metadata:
            raise ConfigError("must map logical store names to MetaData", key="metadata")
        for name, tables in metadata.items():
            if not isinstance(name, str) or not _STORE_NAME.match(name):
                raise ConfigError(
                    f"store names are lower-case identifiers, got {name!r}", key="metadata"
                )
            if not isinstance(tables, sa.MetaData):
                raise ConfigError("must be a sqlalchemy MetaData", key=f"metadata.{name}")
        if stores is None:
            stores = {}
        if not isinstance(stores, Mapping):
            raise ConfigError("must be a table of logical stores", key="stores")
        for name in stores:
            if name not in metadata:
                close = difflib.get_close_matches(str(name), sorted(metadata), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"unknown logical store; known: {', '.join(sorted(metadata))}{hint}",
                    key=f"stores.{name}",
                )
        self._stores: dict[str, ShardedDatabase] = {}
        self._metadata = dict(metadata)
        self._max_workers = max_workers
        self._layout_ttl = layout_ttl
        # The config of each group of databases by layout name, to build it again for
        # other stores (resharding).
        self._options: dict[str, tuple[str, Mapping[str, Any]]] = {}
        # Every live layout is kept in one control database all processes reach.
        if control is None:
            parsed = _parse_shards(shards, "shards")
            control = parsed[0].url
        else:
            control = _check_url(control, "control")
        self._control = control
        shared = [name for name in metadata if name not in stores]
        default_options = {
            "shards": shards,
            "strategy": strategy,
            "pins": pins,
            "create_databases": create_databases,
        }
        self._options["default"] = ("", default_options)
        if shared:
            default = _build(
                "",
                default_options,
                _union(metadata, shared),
                max_workers,
                "default",
                control,
                layout_ttl,
            )
            self._stores.update(dict.fromkeys(shared, default))
        for name, store in stores.items():
            where = f"stores.{name}."
            if isinstance(store, str):
                options: Mapping[str, Any] = {"shards": [store]}
            elif isinstance(store, Mapping):
                options = store
            else:
                raise ConfigError(
                    "must be a database URL or a table {shards, strategy, pins}",
                    key=where.rstrip("."),
                )
            options = {"create_databases": create_databases, **options}
            self._options[name] = (where, options)
            self._stores[name] = _build(
                where, options, metadata[name], max_workers, name, control, layout_ttl
            )
        # What repositories get: each store's view of its group, which follows the
        # store's own live layout once a reshard gave it one.
        self._views = {name: db.view(name) for name, db in self._stores.items()}

    @property
    def names(self) -> tuple[str, ...]:
        """Every logical store name, sorted."""
        return tuple(sorted(self._stores))

    def store(self, name: str) -> ShardedDatabase:
        """The sharded database holding logical store ``name`` (its
        :meth:`ShardedDatabase.view`); :class:`NotFound` if none."""
        try:
            return self._views[name]
        except KeyError:
            raise NotFound(f"no logical store {name!r}; known: {', '.join(self.names)}") from None

    __getitem__ = store

    def groups(self) -> dict[str, ShardedDatabase]:
        """Each distinct sharded database by its layout name (``default`` for the shards
        stores share, else the store's own name)."""
        return {database.layout_name: database for database in self._distinct()}

    @property
    def control_url(self) -> str:
        """The control database that holds every live layout."""
        return self._control

    def group_of(self, store: str) -> str:
        """The layout name of the group of databases the config puts ``store`` on."""
        return self.store(store).layout_name

    def layout_for(self, name: str, stores: Sequence[str]) -> ShardedDatabase:
        """A new sharded database of layout ``name`` holding the tables of ``stores``, on
        the databases the config gives them (they must share a group). For resharding:
        a store that has a live layout of its own moves apart from its group."""
        groups = {self.group_of(store) for store in stores}
        if len(groups) != 1:
            raise ConfigError(f"stores {', '.join(stores)} are not on one group of databases")
        where, options = self._options[groups.pop()]
        return _build(
            where,
            options,
            _union(self._metadata, list(stores)),
            self._max_workers,
            name,
            self._control,
            self._layout_ttl,
        )

    def stores_of(self, layout: str) -> tuple[str, ...]:
        """The logical stores kept on the databases of layout ``layout``, sorted."""
        return tuple(sorted(name for name, db in self._stores.items() if db.layout_name == layout))

    def _distinct(self) -> list[ShardedDatabase]:
        seen: dict[int, ShardedDatabase] = {}
        for database in self._stores.values():
            seen.setdefault(id(database), database)
        return list(seen.values())

    def create_schema(self) -> None:
        """Create every store's tables on every one of its shards; idempotent."""
        for database in self._distinct():
            database.create_schema()

    def drop_schema(self) -> None:
        """Drop every store's tables on every one of its shards; idempotent."""
        for database in self._distinct():
            database.drop_schema()

    def pool_stats(self) -> dict[str, list[PoolStats]]:
        """:meth:`ShardedDatabase.pool_stats` by store; stores that share their databases
        are reported once, under their names joined by ``+``."""
        names: dict[int, list[str]] = {}
        databases: dict[int, ShardedDatabase] = {}
        for name in self.names:
            database = self._stores[name]
            names.setdefault(id(database), []).append(name)
            databases[id(database)] = database
        return {"+".join(names[key]): database.pool_stats() for key, database in databases.items()}

    def dispose(self) -> None:
        """Close every connection pool and worker thread."""
        for database in self._distinct():
            database.dispose()
        for view in self._views.values():
            view.dispose()

    def __repr__(self) -> str:
        return f"Databases({', '.join(self.names)})"


def _union(metadata: Mapping[str, sa.MetaData], names: Sequence[str]) -> sa.MetaData:
    """One MetaData with the tables of ``names`` (they share the default shards)."""
    if len(names) == 1:
        return metadata[names[0]]
    union = sa.MetaData()
    owner: dict[str, str] = {}
    for name in names:
        for table in metadata[name].tables.values():
            if table.key in owner:
                raise ConfigError(
                    f"stores {owner[table.key]!r} and {name!r} both declare table "
                    f"{table.key!r} on the default shards; give one its own shards",
                    key=f"stores.{name}",
                )
            owner[table.key] = name
            table.to_metadata(union)
    return union


def _build(
    where: str,
    options: Mapping[str, Any],
    metadata: sa.MetaData,
    max_workers: int,
    layout: str,
    control: str,
    layout_ttl: float = LAYOUT_TTL,
) -> ShardedDatabase:
    unknown = set(options) - _STORE_KEYS
    if unknown:
        raise ConfigError(
            f"unknown key; known: {', '.join(sorted(_STORE_KEYS))}", key=f"{where}{min(unknown)}"
        )
    try:
        shards = _parse_shards(options.get("shards"), "shards")
        pins = _read_pins(options.get("pins"))
        router = make_router(options.get("strategy", "jump"), len(shards), pins)
        return ShardedDatabase(
            shards=[{"url": s.url, "replicas": list(s.replicas)} for s in shards],
            router=router,
            metadata=metadata,
            create_database=options.get("create_databases", False),
            max_workers=max_workers,
            layout=layout,
            control=control,
            layout_ttl=layout_ttl,
        )
    except ConfigError as exc:
        if not where:
            raise
        message = str(exc)
        if exc.key:
            message = message.removeprefix(f"{exc.key}: ")
        raise ConfigError(message, key=f"{where}{exc.key or ''}".rstrip(".")) from exc


def _read_pins(pins: object) -> dict[ShardKey, int]:
    if pins is None:
        return {}
    if not isinstance(pins, Mapping):
        raise ConfigError("must be a table of key = shard index", key="pins")
    result: dict[ShardKey, int] = {}
    for key, shard in pins.items():
        if isinstance(key, str) and key.isdecimal() and key.isascii():
            result[int(key)] = shard
        else:
            result[key] = shard
    return result
