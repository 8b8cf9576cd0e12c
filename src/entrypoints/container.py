"""The composition root: the only place that maps configuration to adapters.

:func:`create_container` validates the whole configuration against the registry and the
adapters' constructors *before* anything connects, then returns a dependency-injector
container whose providers build each adapter once, on first use. Tests override providers
with in-memory adapters::

    container = create_container(load_settings(None))
    container.cache.override(providers.Object(MemoryCache()))

Besides the ports it builds the reference service: the ``[database]`` shards
(:class:`adapters.sql.shards.Databases`, routed by :func:`scalecore.routing.make_router`),
the photo feed's repositories (``[photofeed] repositories = "sql"`` or ``"memory"``), the
password hasher and image processor (``[photofeed.password_hasher]``,
``[photofeed.images]``), the :class:`~scalecore.photofeed.PhotoFeed` service with its
settings, its feed worker, outbox relay and cron jobs. The service's capability needs
(:func:`service_needs`) are checked with the rest, before anything is built.

Nothing heavy is imported until a provider is called: importing this module loads no
driver and not even SQLAlchemy.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
from dependency_injector import containers, providers

from entrypoints.config import PORT_SECTIONS, Settings
from entrypoints.registry import load_adapter
from scalecore.capabilities import Capability
from scalecore.clock import Clock, SystemClock
from scalecore.errors import ConfigError

__all__ = [
    "Container",
    "PhotoFeedRepositories",
    "close_adapters",
    "create_container",
    "create_tables",
    "declare_topology",
    "effective_config",
    "puppy_settings",
    "readiness_checks",
    "reshard_statuses",
    "resharders",
    "service_needs",
    "service_topology",
    "validate_settings",
]

_log = logging.getLogger(__name__)

#: Constructor arguments the container supplies; config may not set them.
_INJECTED = frozenset({"clock", "name"})
#: Secrets an embedded single-node deployment may generate and keep under data_dir.
_LOCAL_SECRETS: Mapping[tuple[str, str], str] = {("blobs", "localfs"): "url_secret"}


class Closer:
    """Remembers what one container built, to close it all in reverse order."""

    def __init__(self) -> None:
        self._items: list[tuple[str, Callable[[], object]]] = []
        self._lock = threading.Lock()

    def add(self, name: str, close: Callable[[], object]) -> None:
        with self._lock:
            self._items.append((name, close))

    def close_all(self) -> None:
        """Close everything registered, newest first; failures are logged, not raised."""
        with self._lock:
            items, self._items = self._items, []
        for name, close in reversed(items):
            try:
                close()
            except Exception:
                _log.warning("closing %s failed", name, exc_info=True)


def _build_port(port: str, settings: Settings, clock: Clock, closer: Closer) -> Any:
    adapter = _construct_port(port, settings, clock)
    closer.add(port, adapter.close)
    return adapter


def _construct_port(port: str, settings: Settings, clock: Clock) -> Any:
    backend, options = settings.port(port)
    adapter = load_adapter(port, backend)
    accepted = _keyword_parameters(adapter)
    secret_option = _LOCAL_SECRETS.get((port, backend))
    if secret_option and secret_option not in options:
        options[secret_option] = _local_secret(settings.data_dir)
    if "clock" in accepted:
        options["clock"] = clock
    if "name" in accepted:
        options["name"] = port
    try:
        return adapter(**options)
    except ConfigError as exc:  # an adapter names its own option; add the section
        message = str(exc).removeprefix(f"{exc.key}: ") if exc.key else str(exc)
        key = f"{port}.{exc.key}" if exc.key else port
        raise ConfigError(message, key=key) from exc
    except TypeError as exc:  # a signature mismatch validate_settings did not foresee
        raise ConfigError(f"cannot build {backend!r}: {exc}", key=port) from exc


def _local_secret(data_dir: Path) -> str:
    """Return this box's signing secret, creating it (mode 0600) on first use."""
    path = data_dir / "secret.key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race; use its secret
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value


def _keyword_parameters(adapter: type) -> dict[str, inspect.Parameter]:
    signature = inspect.signature(adapter)
    return {
        name: param
        for name, param in signature.parameters.items()
        if param.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }


# --------------------------------------------------------------------------- photo feed


@attrs.frozen
class PhotoFeedRepositories:
    """The photo feed's five repositories, of one flavour (memory or SQL)."""

    NAMES: ClassVar[tuple[str, ...]] = ("users", "photos", "outbox", "follows", "feed")

    users: Any
    photos: Any
    outbox: Any
    follows: Any
    feed: Any


def _rekey(exc: ConfigError, prefix: str) -> ConfigError:
    message = str(exc).removeprefix(f"{exc.key}: ") if exc.key else str(exc)
    return ConfigError(message, key=f"{prefix}.{exc.key}" if exc.key else prefix)


def _photofeed_settings(settings: Settings) -> Any:
    from scalecore.photofeed.settings import PhotoFeedSettings

    _, options = settings.photofeed()
    try:
        return PhotoFeedSettings.from_mapping(options)
    except ConfigError as exc:
        raise _rekey(exc, "photofeed") from exc


def _build_databases(settings: Settings, closer: Closer) -> Any:
    from adapters.photofeed.schema import METADATA
    from adapters.sql.shards import Databases

    try:
        databases = Databases(metadata=METADATA, **settings.data["database"])
    except ConfigError as exc:
        raise _rekey(exc, "database") from exc
    closer.add("databases", databases.dispose)
    return databases


def _database_stats(settings: Settings, databases: Callable[[], Any]) -> list[tuple[Any, ...]]:
    """(store, shard, role, queries, connections in use, pool size) of every database
    engine of the service's SQL stores; none when its repositories are in memory (the
    databases are then never built)."""
    if settings.photofeed()[0] != "sql":
        return []
    return [
        (store, item.shard, item.role, item.queries, item.in_use, item.size)
        for store, items in databases().pool_stats().items()
        for item in items
    ]


def _build_repositories(settings: Settings, databases: Callable[[], Any]) -> PhotoFeedRepositories:
    backend, _ = settings.photofeed()
    if backend == "memory":
        from adapters.photofeed.feed.memory import MemoryFeedRepository
        from adapters.photofeed.follows.memory import MemoryFollowRepository
        from adapters.photofeed.outbox.memory import MemoryOutboxRepository
        from adapters.photofeed.photos.memory import MemoryPhotoRepository
        from adapters.photofeed.users.memory import MemoryUserRepository

        outbox = MemoryOutboxRepository()
        return PhotoFeedRepositories(
            users=MemoryUserRepository(),
            photos=MemoryPhotoRepository(outbox=outbox),
            outbox=outbox,
            follows=MemoryFollowRepository(),
            feed=MemoryFeedRepository(),
        )
    from adapters.photofeed.feed.sql import SqlFeedRepository
    from adapters.photofeed.follows.sql import SqlFollowRepository
    from adapters.photofeed.outbox.sql import SqlOutboxRepository
    from adapters.photofeed.photos.sql import SqlPhotoRepository
    from adapters.photofeed.users.sql import SqlUserRepository

    stores = databases()
    return PhotoFeedRepositories(
        users=SqlUserRepository(database=stores.store("users")),
        photos=SqlPhotoRepository(database=stores.store("photos")),
        outbox=SqlOutboxRepository(database=stores.store("photos")),
        follows=SqlFollowRepository(database=stores.store("follows")),
        feed=SqlFeedRepository(database=stores.store("feed")),
    )


def _build_hasher(settings: Settings) -> Any:
    from adapters.photofeed.passwords.argon2 import Argon2PasswordHasher

    return _construct(
        "photofeed.password_hasher", "the argon2 password hasher", Argon2PasswordHasher, settings
    )


def _build_images(settings: Settings) -> Any:
    from adapters.photofeed.images.pillow import PillowImageProcessor

    return _construct(
        "photofeed.images", "the pillow image processor", PillowImageProcessor, settings
    )


def _construct(where: str, what: str, adapter: type, settings: Settings) -> Any:
    options = settings.photofeed_adapter(where.rpartition(".")[2])
    _check_options(where, what, adapter, options)
    try:
        return adapter(**options)
    except ConfigError as exc:
        raise _rekey(exc, where) from exc
    except TypeError as exc:
        raise ConfigError(f"cannot build it: {exc}", key=where) from exc


def _build_photofeed(
    repositories: PhotoFeedRepositories,
    blobs: Any,
    cache: Any,
    bus: Any,
    hasher: Any,
    images: Any,
    clock: Clock,
    photofeed_settings: Any,
) -> Any:
    from scalecore.photofeed.service import PhotoFeed

    return PhotoFeed(
        users=repositories.users,
        photos=repositories.photos,
        outbox=repositories.outbox,
        follows=repositories.follows,
        feed=repositories.feed,
        blobs=blobs,
        cache=cache,
        bus=bus,
        hasher=hasher,
        images=images,
        clock=clock,
        settings=photofeed_settings,
    )


def _build_feed_worker(service: Any) -> Any:
    from scalecore.photofeed.workers import FeedWorker

    return FeedWorker(service)


def _outbox_relay(service: Any) -> Any:
    return service.relay


def _cron_jobs(service: Any, sessions: Any, ledger: Any) -> Any:
    from scalecore.photofeed.jobs import cron_jobs

    return cron_jobs(photofeed=service, sessions=sessions, ledger=ledger)


def _sql_statements() -> int:
    # Imported on first call: building the container must not import SQLAlchemy.
    from adapters.sql.engine import statements_in_this_thread

    return statements_in_this_thread()


class Container(containers.DeclarativeContainer):
    """One provider per port and per part of the service; each is built once, on first use.

    Not thread-safe while building: resolve what a process needs before it starts threads
    (``create_app`` and the runners do).
    """

    __self__ = providers.Self()
    settings = providers.Dependency(instance_of=Settings)
    clock = providers.Singleton(SystemClock)
    closer = providers.Singleton(Closer)

    blobs = providers.Singleton(_build_port, "blobs", settings, clock, closer)
    sessions = providers.Singleton(_build_port, "sessions", settings, clock, closer)
    bus = providers.Singleton(_build_port, "bus", settings, clock, closer)
    cache = providers.Singleton(_build_port, "cache", settings, clock, closer)
    ledger = providers.Singleton(_build_port, "ledger", settings, clock, closer)

    databases = providers.Singleton(_build_databases, settings, closer)
    photofeed_settings = providers.Singleton(_photofeed_settings, settings)
    # The databases are built only for SQL repositories: hence the provider, not its value.
    repositories = providers.Singleton(_build_repositories, settings, databases.provider)
    #: Called anew each time: the current queries and pool use of the SQL stores.
    database_stats = providers.Callable(_database_stats, settings, databases.provider)
    password_hasher = providers.Singleton(_build_hasher, settings)
    image_processor = providers.Singleton(_build_images, settings)
    photofeed = providers.Singleton(
        _build_photofeed,
        repositories,
        blobs,
        cache,
        bus,
        password_hasher,
        image_processor,
        clock,
        photofeed_settings,
    )
    feed_worker = providers.Singleton(_build_feed_worker, photofeed)
    outbox_relay = providers.Singleton(_outbox_relay, photofeed)
    cron_jobs = providers.Singleton(_cron_jobs, photofeed, sessions, ledger)
    #: Name -> ping of every backend (see :func:`readiness_checks`).
    readiness = providers.Singleton(lambda container: readiness_checks(container), __self__)
    #: ``() -> int``: SQL statements sent so far by the calling thread (only grows).
    sql_statements = providers.Object(_sql_statements)


def service_needs(settings: Settings) -> dict[str, list[Capability]]:
    """The capabilities the photo feed needs of the configured ports.

    The bus must keep dead letters (``scalecore bus replay``); with ``[web]
    media_redirect = true`` the blob store must make signed URLs (``DIRECT_URL``).
    """
    needs: dict[str, list[Capability]] = {"bus": [Capability.DEAD_LETTER]}
    if settings.web["media_redirect"]:
        needs["blobs"] = [Capability.DIRECT_URL]
    return needs


def service_topology() -> tuple[tuple[str, str], ...]:
    """The service's (topic, consumer group) pairs."""
    from scalecore.photofeed.events import TOPOLOGY

    return TOPOLOGY


def declare_topology(container: Container) -> None:
    """Declare the service's queues on the bus, so events published before any worker
    runs are kept for it (on a durable broker). Idempotent."""
    bus = container.bus()
    for topic, group in service_topology():
        bus.declare(topic, group)


def readiness_checks(container: Container) -> dict[str, Callable[[], None]]:
    """Name -> ping of every backend the service uses: the ports and each repository.

    Each check builds its adapter on first use (so one that cannot even be built fails
    alone) and raises ``BackendUnavailable`` when its backend does not answer.
    """
    checks: dict[str, Callable[[], None]] = {}
    for port in PORT_SECTIONS:
        provider = getattr(container, port)
        checks[port] = functools.partial(_ping_provided, provider)
    for name in PhotoFeedRepositories.NAMES:
        checks[f"photofeed.{name}"] = functools.partial(_ping_repository, container, name)
    return checks


def _ping_provided(provider: Callable[[], Any]) -> None:
    provider().ping()


def _ping_repository(container: Container, name: str) -> None:
    getattr(container.repositories(), name).ping()


def create_tables(container: Container) -> list[str]:
    """Create the missing tables of every SQL-backed port and, for SQL repositories, of
    the photo feed's stores on every shard. Idempotent; returns what was created."""
    created: list[str] = []
    for port in PORT_SECTIONS:
        create_schema = getattr(getattr(container, port)(), "create_schema", None)
        if create_schema is not None:
            create_schema()
            created.append(port)
    backend, _ = container.settings().photofeed()
    if backend == "sql":
        databases = container.databases()
        databases.create_schema()
        created.append("photofeed (" + ", ".join(databases.names) + ")")
    return created


def _databases(settings: Settings) -> Any:
    from adapters.photofeed.schema import METADATA
    from adapters.sql.shards import Databases

    try:
        return Databases(metadata=METADATA, **settings.data["database"])
    except ConfigError as exc:
        raise _rekey(exc, "database") from exc


def resharders(
    settings: Settings,
    previous: Settings | None,
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

    new = _databases(settings)
    old = _databases(previous) if previous is not None else None
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


def reshard_statuses(settings: Settings) -> list[tuple[str, dict[str, Any] | None]]:
    """For ``scalecore db reshard --status``: the journal of each layout's last reshard."""
    from adapters.sql.reshard import reshard_status

    databases = _databases(settings)
    try:
        return [(name, reshard_status(db)) for name, db in sorted(databases.groups().items())]
    finally:
        databases.dispose()


def effective_config(settings: Settings) -> dict[str, Any]:
    """The whole configuration the service runs on: ``settings.data`` with every default
    filled in that an adapter's constructor, the photo feed's settings, the password
    hasher or the image processor would otherwise apply silently.

    Saved as TOML and loaded back it is the same configuration. Options injected by the
    container (clock, name) are left out, and so are those whose default is "unset"
    (TOML has no null); secrets are not masked here (see ``config.mask_secrets``).
    """
    from adapters.photofeed.images.pillow import PillowImageProcessor
    from adapters.photofeed.passwords.argon2 import Argon2PasswordHasher
    from scalecore.photofeed.settings import PhotoFeedSettings

    data: dict[str, Any] = {key: _plain(value) for key, value in settings.data.items()}
    for port in PORT_SECTIONS:
        backend, _ = settings.port(port)
        _fill_defaults(data[port], load_adapter(port, backend))
    photofeed = data["photofeed"]
    for field in attrs.fields(PhotoFeedSettings):
        if field.name not in photofeed and _plain(field.default) is not None:
            photofeed[field.name] = _plain(field.default)
    for name, adapter in (
        ("password_hasher", Argon2PasswordHasher),
        ("images", PillowImageProcessor),
    ):
        _fill_defaults(photofeed.setdefault(name, {}), adapter)
    return data


def _fill_defaults(section: dict[str, Any], adapter: type) -> None:
    for name, param in _keyword_parameters(adapter).items():
        if name in _INJECTED or name in section or param.default is inspect.Parameter.empty:
            continue
        value = _plain(param.default)
        if value is not None:
            section[name] = value


def _plain(value: Any) -> Any:
    """``value`` as TOML can hold it: tuples become lists, tables are copied; ``None``
    for what TOML cannot hold."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float | str):
        return value
    return None


def close_adapters(container: Container) -> None:
    """Close every adapter and connection pool this container built. Idempotent."""
    container.closer().close_all()


def validate_settings(
    settings: Settings,
    needs: Mapping[str, Iterable[Capability]] | None = None,
    *,
    forbid_puppies: bool = True,
) -> None:
    """Check every port's backend, options and capabilities; connect to nothing.

    Raises ``ConfigError`` naming the key at fault: an unknown backend or option, a missing
    required option, an adapter lacking a capability in ``needs`` (port -> capabilities),
    or, in a deployment declared multi-node (unless ``forbid_puppies`` is false), any
    setting that keeps state on one server.
    """
    needs = needs or {}
    for port in PORT_SECTIONS:
        backend, options = settings.port(port)
        adapter = load_adapter(port, backend)
        _check_options(port, f"backend {backend!r}", adapter, options)
        declared: frozenset[Capability] = getattr(adapter, "capabilities", frozenset())
        for capability in needs.get(port, ()):
            if capability not in declared:
                raise ConfigError(
                    f"backend {backend!r} lacks the {capability.value!r} capability "
                    "this service needs",
                    key=f"{port}.backend",
                )
    from adapters.photofeed.images.pillow import PillowImageProcessor
    from adapters.photofeed.passwords.argon2 import Argon2PasswordHasher

    _check_options(
        "photofeed.password_hasher",
        "the argon2 password hasher",
        Argon2PasswordHasher,
        settings.photofeed_adapter("password_hasher"),
    )
    _check_options(
        "photofeed.images",
        "the pillow image processor",
        PillowImageProcessor,
        settings.photofeed_adapter("images"),
    )
    if settings.multi_node and forbid_puppies:
        problems = puppy_settings(settings)
        if problems:
            raise ConfigError(
                "deployment.multi_node is true, but these settings keep state on one "
                "server: " + "; ".join(problems)
            )


def _check_options(port: str, what: str, adapter: type, options: Mapping[str, Any]) -> None:
    accepted = _keyword_parameters(adapter)
    configurable = {name for name in accepted if name not in _INJECTED}
    for option in options:
        if option not in configurable:
            known = ", ".join(sorted(configurable)) or "none"
            raise ConfigError(
                f"{what} has no option {option!r}; its options: {known}",
                key=f"{port}.{option}",
            )
    backend = what.removeprefix("backend ").strip("'")
    local_secret = _LOCAL_SECRETS.get((port, backend))
    for name, param in accepted.items():
        required = param.default is inspect.Parameter.empty
        if required and name not in _INJECTED and name not in options and name != local_secret:
            raise ConfigError(f"{what} needs this option", key=f"{port}.{name}")


def puppy_settings(settings: Settings) -> list[str]:
    """Name every setting that would keep unique state on one server of a fleet."""
    problems: list[str] = []
    if settings.photofeed()[0] == "memory":
        problems.append(
            "photofeed.repositories = 'memory' keeps users, photos and feeds on one server"
        )
    for port in PORT_SECTIONS:
        backend, options = settings.port(port)
        adapter = load_adapter(port, backend)
        declared: frozenset[Capability] = getattr(adapter, "capabilities", frozenset())
        if Capability.SHARED not in declared:
            problems.append(f"{port}.backend = {backend!r} keeps {port} on one server")
        for key, value in options.items():
            if isinstance(value, str) and value.startswith("sqlite"):
                problems.append(f"{port}.{key} is a SQLite file on one server")
    database = settings.data["database"]
    stores: dict[str, Any] = {"database": database}
    for name, store in database.get("stores", {}).items():
        stores[f"database.stores.{name}"] = store
    for where, store in stores.items():
        for index, shard in enumerate(store.get("shards", [])):
            url = shard if isinstance(shard, str) else shard.get("url", "")
            if url.startswith("sqlite"):
                problems.append(f"{where}.shards[{index}] is a SQLite file on one server")
    return problems


def create_container(
    settings: Settings, needs: Mapping[str, Iterable[Capability]] | None = None
) -> Container:
    """Validate ``settings`` (see :func:`validate_settings`) and return a wired container.

    The capabilities checked are the service's (:func:`service_needs`) plus ``needs``.
    """
    merged: dict[str, list[Capability]] = service_needs(settings)
    for port, capabilities in (needs or {}).items():
        merged.setdefault(port, []).extend(capabilities)
    validate_settings(settings, merged)
    return Container(settings=settings)
