"""The library entry: the configured ports and the core algorithms, for an application of
one's own (a Flask, FastAPI or Django app, a worker, a plain script)::

    from entrypoints.library import open_deployment

    with open_deployment("scalecore.toml", tables=metadata) as deployment:
        deployment.blobs.put("reports/1.csv", data, content_type="text/csv")
        page = deployment.loader(ttl=60).get_or_compute("home", render_home)

:func:`open_deployment` reads the same configuration as ``scalecore run`` (a TOML file, a
mapping, or the embedded defaults), validates it by the same code path as the reference
service (registry, options, capabilities, multi-node refusal: nothing connects before all
of it passed), creates what a fresh deployment lacks (the SQL ports' tables, the
application's tables and the outbox on every shard), and returns a :class:`Deployment`:

- the ports: ``blobs``, ``sessions``, ``bus``, ``cache``, ``ledger``, each built on first use;
- ``databases``: the ``[database]`` shards of the application's logical stores
  (``tables``), :class:`adapters.sql.shards.Databases`; ``database(store)`` one of them;
- ``loader(...)``: a :class:`~scalecore.stampede.CachedLoader` over the cache (single flight,
  leases across processes, stale-while-revalidate);
- ``outbox`` and ``relay``: events written in the application's own transactions
  (:class:`adapters.sql.outbox.SqlOutbox`) and the :class:`~scalecore.outbox.OutboxRelay`
  that publishes them on the bus;
- ``scheduler(jobs)``: a :class:`~scalecore.cron.Scheduler` over the ledger, with the
  library's housekeeping jobs (:mod:`scalecore.maintenance`) added.

A ``Deployment`` is a context manager; leaving it (or :meth:`Deployment.close`) closes every
adapter and connection pool it built. It imports nothing of the reference photo feed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from entrypoints.config import PORT_SECTIONS, Settings, load_config
from entrypoints.readiness import CHECK_TIMEOUT, ReadinessProbe
from entrypoints.wiring.core import CoreContainer, close_container, port_schemas
from entrypoints.wiring.validation import validate_settings
from scalecore.capabilities import Capability
from scalecore.clock import Clock
from scalecore.cron import CronJob, Scheduler
from scalecore.errors import ConfigError
from scalecore.maintenance import maintenance_jobs
from scalecore.outbox import OutboxRelay
from scalecore.singleflight import SingleFlight
from scalecore.stampede import CachedLoader

if TYPE_CHECKING:
    import sqlalchemy as sa

    from adapters.sql.outbox import SqlOutbox
    from adapters.sql.shards import Databases, ShardedDatabase
    from scalecore.ports.blobstore import BlobStore
    from scalecore.ports.bus import Bus
    from scalecore.ports.cache import Cache
    from scalecore.ports.ledger import JobLedger
    from scalecore.ports.sessions import SessionStore

__all__ = ["CONFIG_ENV", "DEFAULT_STORE", "OUTBOX_TABLE", "Deployment", "open_deployment"]

#: The variable naming the config file, as for ``scalecore run``.
CONFIG_ENV = "SCALECORE_CONFIG"
#: The logical store of an application that names none (``tables`` a MetaData or None).
DEFAULT_STORE = "main"
#: The outbox table, added to the first logical store's tables.
OUTBOX_TABLE = "scalecore_outbox"

ConfigSource = str | os.PathLike[str] | Mapping[str, Any] | None


def open_deployment(
    config: ConfigSource = None,
    *,
    environ: Mapping[str, str] | None = None,
    tables: sa.MetaData | Mapping[str, sa.MetaData] | None = None,
    needs: Mapping[str, Iterable[Capability]] | None = None,
    create_schema: bool = True,
) -> Deployment:
    """Validate the configuration and return the :class:`Deployment` it describes.

    ``config`` is a TOML file's path, a mapping of the same tables, or ``None``. The
    environment is read only when asked: with ``environ`` (e.g. ``os.environ``) a ``None``
    config means the file ``SCALECORE_CONFIG`` names (unset: the embedded defaults), and
    every ``SCALECORE_<SECTION>__<KEY>`` variable overrides its key, exactly as for
    ``scalecore run``; without it, ``None`` is the embedded defaults and nothing in the
    environment counts.

    ``tables`` are the application's tables: one ``MetaData`` (the logical store
    ``"main"``) or logical store name -> ``MetaData`` (``[database.stores]`` may give each
    its own databases). The outbox table joins the first store's tables. ``needs`` maps a
    port to capabilities the application needs of its adapter (``{"bus":
    [Capability.DEAD_LETTER]}``). With ``create_schema`` (the default) every missing table
    is created, so a fresh deployment needs no ``scalecore db init``; that connects to
    each backend once.

    Raises ``ConfigError`` naming the key at fault (before anything connects),
    ``MissingDriverError`` naming the extra to install, and ``BackendUnavailable`` when
    creating the schema finds a backend down.
    """
    settings = _load(config, environ)
    validate_settings(settings, needs)
    stores, outbox_store = _stores(tables)
    deployment = Deployment(settings, CoreContainer(settings=settings, tables=stores), outbox_store)
    try:
        # [database] against the application's stores: checked before anything connects.
        deployment.databases  # noqa: B018
        if create_schema:
            deployment.create_schema()
    except BaseException:
        deployment.close()
        raise
    return deployment


def _load(config: ConfigSource, environ: Mapping[str, str] | None) -> Settings:
    if environ is None:
        return load_config(config, {})
    if config is None:
        config = environ.get(CONFIG_ENV) or None
    return load_config(config, environ)


def _stores(
    tables: sa.MetaData | Mapping[str, sa.MetaData] | None,
) -> tuple[dict[str, sa.MetaData], str]:
    """Logical store -> a MetaData holding a copy of the application's tables (the
    application's own MetaData is left as it is), the outbox in the first store's."""
    import sqlalchemy as sa

    from adapters.sql.outbox import outbox_table

    if tables is None:
        tables = {DEFAULT_STORE: sa.MetaData()}
    elif isinstance(tables, sa.MetaData):
        tables = {DEFAULT_STORE: tables}
    if not isinstance(tables, Mapping) or not tables:
        raise ConfigError("must be a sqlalchemy MetaData or map store names to them", key="tables")
    stores: dict[str, sa.MetaData] = {}
    for name, metadata in tables.items():
        if not isinstance(metadata, sa.MetaData):
            raise ConfigError("must be a sqlalchemy MetaData", key=f"tables.{name}")
        if OUTBOX_TABLE in metadata.tables:
            raise ConfigError(f"{OUTBOX_TABLE} is the library's table", key=f"tables.{name}")
        copy = sa.MetaData()
        for table in metadata.sorted_tables:
            table.to_metadata(copy)
        stores[name] = copy
    first = next(iter(stores))
    outbox_table(stores[first], OUTBOX_TABLE)
    return stores, first


class Deployment:
    """The configured ports, databases and core algorithms of one process.

    Everything is built on first use, once, under a lock (so threads may share one
    deployment), and closed by :meth:`close`. ``container`` is the dependency-injector
    container underneath; a test may override a provider with a fake before first use.
    """

    def __init__(self, settings: Settings, container: CoreContainer, outbox_store: str) -> None:
        self.settings = settings
        self.container = container
        self.outbox_store = outbox_store
        self._lock = threading.RLock()
        self._flight: SingleFlight[str] = SingleFlight()
        self._outbox: SqlOutbox | None = None
        self._relay: OutboxRelay | None = None

    def __repr__(self) -> str:
        name = self.settings.data["deployment"]["name"]
        return f"<Deployment {name!r} from {self.settings.source}>"

    # -- the ports -------------------------------------------------------------------------

    def port(self, name: str) -> Any:
        """The adapter of port section ``name`` (``"blobs"``, ``"cache"``, ...)."""
        if name not in PORT_SECTIONS:
            raise ConfigError(f"unknown port; known: {', '.join(PORT_SECTIONS)}", key=name)
        return self._built(self.container.providers[name])

    @property
    def blobs(self) -> BlobStore:
        """The :class:`~scalecore.ports.blobstore.BlobStore` of ``[blobs]``."""
        store: BlobStore = self.port("blobs")
        return store

    @property
    def sessions(self) -> SessionStore:
        """The :class:`~scalecore.ports.sessions.SessionStore` of ``[sessions]``."""
        store: SessionStore = self.port("sessions")
        return store

    @property
    def bus(self) -> Bus:
        """The :class:`~scalecore.ports.bus.Bus` of ``[bus]``."""
        bus: Bus = self.port("bus")
        return bus

    @property
    def cache(self) -> Cache:
        """The :class:`~scalecore.ports.cache.Cache` of ``[cache]``."""
        cache: Cache = self.port("cache")
        return cache

    @property
    def ledger(self) -> JobLedger:
        """The :class:`~scalecore.ports.ledger.JobLedger` of ``[ledger]``."""
        ledger: JobLedger = self.port("ledger")
        return ledger

    @property
    def clock(self) -> Clock:
        clock: Clock = self._built(self.container.clock)
        return clock

    # -- the databases ---------------------------------------------------------------------

    @property
    def databases(self) -> Databases:
        """Every logical store of the application on the ``[database]`` shards."""
        databases: Databases = self._built(self.container.databases)
        return databases

    def database(self, store: str | None = None) -> ShardedDatabase:
        """The sharded database of logical ``store`` (default: the first one)."""
        return self.databases.store(store or self.outbox_store)

    # -- the algorithms --------------------------------------------------------------------

    def loader(self, **options: Any) -> CachedLoader:
        """A stampede-safe :class:`~scalecore.stampede.CachedLoader` over :attr:`cache`.

        ``options`` are its own (``ttl``, ``soft_ttl``, ``lock_timeout``, ``wait``,
        ``jitter``, ``executor`` ...). Loaders of one deployment share one single flight,
        so concurrent callers of a key in this process share one load.
        """
        options.setdefault("clock", self.clock)
        options.setdefault("flight", self._flight)
        return CachedLoader(self.cache, **options)

    @property
    def outbox(self) -> SqlOutbox:
        """The outbox in the first logical store: ``outbox.add(connection, topic, payload,
        shard=...)`` inside the transaction that makes the change the event announces."""
        with self._lock:
            if self._outbox is None:
                from adapters.sql.outbox import SqlOutbox

                database = self.database(self.outbox_store)
                self._outbox = SqlOutbox(
                    database=database,
                    table=database.metadata.tables[OUTBOX_TABLE],
                    clock=self.clock,
                )
            return self._outbox

    @property
    def relay(self) -> OutboxRelay:
        """The :class:`~scalecore.outbox.OutboxRelay` from :attr:`outbox` to :attr:`bus`."""
        with self._lock:
            if self._relay is None:
                self._relay = OutboxRelay(outbox=self.outbox, bus=self.bus, clock=self.clock)
            return self._relay

    def scheduler(
        self,
        jobs: Iterable[CronJob] = (),
        *,
        owner: str | None = None,
        schedules: Mapping[str, str] | None = None,
        maintenance: bool = True,
    ) -> Scheduler:
        """A :class:`~scalecore.cron.Scheduler` of ``jobs`` over :attr:`ledger`.

        With ``maintenance`` the library's housekeeping jobs are added (purging expired
        sessions and old ledger slots where the backend needs it, relaying and purging the
        outbox; :mod:`scalecore.maintenance`); ``schedules`` overrides theirs by name. Run
        one on every server: each slot of each job runs on one of them.
        """
        every = list(jobs)
        if maintenance:
            every += maintenance_jobs(
                sessions=self.sessions, ledger=self.ledger, outbox=self.relay, schedules=schedules
            )
        return Scheduler(self.ledger, every, owner=owner, clock=self.clock)

    # -- operations ------------------------------------------------------------------------

    def create_schema(self) -> list[str]:
        """Create every missing table: the SQL ports' and the application's (with the
        outbox) on every shard. Idempotent; returns what holds a schema."""
        with self._lock:
            created = port_schemas(self.container)
            databases = self.databases
            databases.create_schema()
        return [*created, "database (" + ", ".join(databases.names) + ")"]

    def readiness(self) -> dict[str, Callable[[], None]]:
        """Name -> ping of every backend (the ports, then each logical store); a ping raises
        ``BackendUnavailable`` when its backend does not answer. For a ``/readyz`` view."""
        checks = {name: self._port_ping(name) for name in PORT_SECTIONS}
        for store in self.databases.names:
            checks[f"database.{store}"] = self._store_ping(store)
        return checks

    def check(self) -> dict[str, str | None]:
        """Ping every backend now, all at once: name -> ``None`` when it answers, else the
        error on one line; a backend that has not answered after ``CHECK_TIMEOUT`` (10 s)
        is reported as such rather than waited for."""
        return ReadinessProbe(self.readiness(), timeout=CHECK_TIMEOUT).run()

    def close(self) -> None:
        """Close every adapter and connection pool built so far. Idempotent."""
        with self._lock:
            close_container(self.container)

    def __enter__(self) -> Deployment:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------

    def _built(self, provider: Callable[[], Any]) -> Any:
        with self._lock:
            return provider()

    def _port_ping(self, name: str) -> Callable[[], None]:
        def ping() -> None:
            self.port(name).ping()

        return ping

    def _store_ping(self, store: str) -> Callable[[], None]:
        def ping() -> None:
            from adapters.sql.rows import ping_all

            ping_all(self.database(store))

        return ping
