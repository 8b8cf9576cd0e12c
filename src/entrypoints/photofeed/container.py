"""The reference service's container: the library's :class:`CoreContainer` plus the photo
feed.

On top of the ports and the databases (here: the photo feed's logical stores) it builds
the service's repositories (``[photofeed] repositories = "sql"`` or ``"memory"``), the
password hasher and image processor (``[photofeed.password_hasher]``,
``[photofeed.images]``), the :class:`~scalecore.photofeed.PhotoFeed` service with its
settings, its feed worker, outbox relay and cron jobs (the photo feed's own and the
library's maintenance jobs). Nothing heavy is imported until a provider is called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
from dependency_injector import providers

from entrypoints.config import Settings
from entrypoints.photofeed.config import adapter_options, repositories
from entrypoints.wiring.build import construct, rekey
from entrypoints.wiring.core import CoreContainer, port_checks
from entrypoints.wiring.databases import build_databases, pool_rows
from entrypoints.wiring.validation import check_options
from scalecore.clock import Clock
from scalecore.errors import ConfigError

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = ["HASHER", "IMAGES", "Container", "PhotoFeedRepositories", "readiness_checks"]

#: ``[photofeed.<name>]`` -> (what it is called in errors, the adapter's "module:Class").
HASHER = ("the argon2 password hasher", "adapters.photofeed.passwords.argon2:Argon2PasswordHasher")
IMAGES = ("the pillow image processor", "adapters.photofeed.images.pillow:PillowImageProcessor")


@attrs.frozen
class PhotoFeedRepositories:
    """The photo feed's five repositories, of one flavour (memory or SQL)."""

    NAMES: ClassVar[tuple[str, ...]] = ("users", "photos", "outbox", "follows", "feed")

    users: Any
    photos: Any
    outbox: Any
    follows: Any
    feed: Any


def photofeed_tables() -> Mapping[str, sa.MetaData]:
    """The photo feed's logical stores and their tables."""
    from adapters.photofeed.schema import METADATA

    return METADATA


def app_adapter(target: str) -> type:
    """The class of one of the photo feed's own adapters (``HASHER[1]``, ``IMAGES[1]``)."""
    import importlib

    module, _, name = target.partition(":")
    adapter: type = getattr(importlib.import_module(module), name)
    return adapter


def _photofeed_settings(settings: Settings) -> Any:
    from scalecore.photofeed.settings import PhotoFeedSettings

    _, options = repositories(settings)
    try:
        return PhotoFeedSettings.from_mapping(options)
    except ConfigError as exc:
        raise rekey(exc, "photofeed") from exc


def _database_stats(settings: Settings, databases: Callable[[], Any]) -> list[tuple[Any, ...]]:
    """(store, shard, role, queries, connections in use, pool size) of every database
    engine of the service's SQL stores; none when its repositories are in memory (the
    databases are then never built)."""
    if repositories(settings)[0] != "sql":
        return []
    return pool_rows(databases())


def _build_repositories(settings: Settings, databases: Callable[[], Any]) -> PhotoFeedRepositories:
    backend, _ = repositories(settings)
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


def build_app_adapter(name: str, spec: tuple[str, str], settings: Settings) -> Any:
    """The photo feed's ``[photofeed.<name>]`` adapter (``password_hasher``, ``images``)."""
    what, target = spec
    where = f"photofeed.{name}"
    adapter = app_adapter(target)
    options = adapter_options(settings, name)
    check_options(where, what, adapter, options)
    return construct(where, adapter, options)


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


class Container(CoreContainer):
    """The ports and databases of :class:`CoreContainer`, and one provider per part of the
    photo feed; each is built once, on first use.

    Not thread-safe while building: resolve what a process needs before it starts threads
    (``create_app`` and the runners do).
    """

    __self__ = providers.Self()
    tables: providers.Provider[Any] = providers.Callable(photofeed_tables)
    databases = providers.Singleton(
        build_databases, CoreContainer.settings, tables, CoreContainer.closer
    )
    photofeed_settings = providers.Singleton(_photofeed_settings, CoreContainer.settings)
    # The databases are built only for SQL repositories: hence the provider, not its value.
    repositories = providers.Singleton(
        _build_repositories, CoreContainer.settings, databases.provider
    )
    #: Called anew each time: the current queries and pool use of the SQL stores.
    database_stats = providers.Callable(_database_stats, CoreContainer.settings, databases.provider)
    password_hasher = providers.Singleton(
        build_app_adapter, "password_hasher", HASHER, CoreContainer.settings
    )
    image_processor = providers.Singleton(
        build_app_adapter, "images", IMAGES, CoreContainer.settings
    )
    photofeed = providers.Singleton(
        _build_photofeed,
        repositories,
        CoreContainer.blobs,
        CoreContainer.cache,
        CoreContainer.bus,
        password_hasher,
        image_processor,
        CoreContainer.clock,
        photofeed_settings,
    )
    feed_worker = providers.Singleton(_build_feed_worker, photofeed)
    outbox_relay = providers.Singleton(_outbox_relay, photofeed)
    cron_jobs = providers.Singleton(
        _cron_jobs, photofeed, CoreContainer.sessions, CoreContainer.ledger
    )
    #: Name -> ping of every backend (see :func:`readiness_checks`).
    readiness = providers.Singleton(lambda container: readiness_checks(container), __self__)


def readiness_checks(container: Container) -> dict[str, Callable[[], None]]:
    """Name -> ping of every backend the service uses: the ports and each repository.

    Each check builds its adapter on first use (so one that cannot even be built fails
    alone) and raises ``BackendUnavailable`` when its backend does not answer.
    """
    checks = port_checks(container)
    for name in PhotoFeedRepositories.NAMES:
        checks[f"photofeed.{name}"] = _repository_ping(container, name)
    return checks


def _repository_ping(container: Container, name: str) -> Callable[[], None]:
    def ping() -> None:
        repositories = container.repositories()
        repository = attrs.asdict(repositories, recurse=False)[name]
        repository.ping()

    return ping
