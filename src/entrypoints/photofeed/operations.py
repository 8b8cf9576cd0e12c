"""What the CLI and the runners do with the photo feed's container: validate its settings,
create its tables, declare its queues, report its effective configuration, reshard its
databases. Each is the library's operation (:mod:`entrypoints.wiring`) with the photo
feed's part added.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from entrypoints.config import Settings
from entrypoints.photofeed.config import adapter_options, repositories
from entrypoints.photofeed.container import (
    HASHER,
    IMAGES,
    Container,
    app_adapter,
    photofeed_tables,
)
from entrypoints.wiring import databases as _databases
from entrypoints.wiring import validation as _validation
from entrypoints.wiring.core import close_container, port_schemas
from entrypoints.wiring.defaults import fill_defaults, plain, port_defaults
from scalecore.capabilities import Capability

__all__ = [
    "PHOTOFEED_RULES",
    "close_adapters",
    "create_container",
    "create_tables",
    "declare_topology",
    "effective_config",
    "puppy_settings",
    "reshard_statuses",
    "resharders",
    "service_needs",
    "service_topology",
    "validate_settings",
]


def service_needs(settings: Settings) -> dict[str, list[Capability]]:
    """The capabilities the photo feed needs of the configured ports.

    The bus must keep dead letters (``scalecore bus replay``); with ``[web]
    media_redirect = true`` the blob store must make signed URLs (``DIRECT_URL``).
    """
    needs: dict[str, list[Capability]] = {"bus": [Capability.DEAD_LETTER]}
    if settings.web["media_redirect"]:
        needs["blobs"] = [Capability.DIRECT_URL]
    return needs


def _check_app_adapters(settings: Settings) -> None:
    for name, (what, target) in (("password_hasher", HASHER), ("images", IMAGES)):
        _validation.check_options(
            f"photofeed.{name}", what, app_adapter(target), adapter_options(settings, name)
        )


def _photofeed_puppies(settings: Settings) -> list[str]:
    if repositories(settings)[0] == "memory":
        return ["photofeed.repositories = 'memory' keeps users, photos and feeds on one server"]
    return []


#: The photo feed's part of validation: its needs, its adapters' options, its puppies.
PHOTOFEED_RULES = _validation.AppRules(
    needs=service_needs, check=_check_app_adapters, puppies=_photofeed_puppies
)


def validate_settings(
    settings: Settings,
    needs: Mapping[str, Iterable[Capability]] | None = None,
    *,
    forbid_puppies: bool = True,
) -> None:
    """The library's :func:`~entrypoints.wiring.validation.validate_settings` with the photo
    feed's rules (the password hasher's and image processor's options, its puppies).
    ``needs`` are checked as given (:func:`create_container` adds the service's)."""
    _validation.validate_settings(
        settings, needs, forbid_puppies=forbid_puppies, rules=PHOTOFEED_RULES
    )


def puppy_settings(settings: Settings) -> list[str]:
    """Name every setting that would keep unique state on one server of a fleet."""
    return _validation.puppy_settings(settings, PHOTOFEED_RULES)


def create_container(
    settings: Settings, needs: Mapping[str, Iterable[Capability]] | None = None
) -> Container:
    """Validate ``settings`` (see :func:`validate_settings`) and return a wired container.

    The capabilities checked are the service's (:func:`service_needs`) plus ``needs``.
    """
    validate_settings(settings, _validation.merge_needs(service_needs(settings), needs))
    return Container(settings=settings)


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


def create_tables(container: Container) -> list[str]:
    """Create the missing tables of every SQL-backed port and, for SQL repositories, of
    the photo feed's stores on every shard. Idempotent; returns what was created."""
    created = port_schemas(container)
    backend, _ = repositories(container.settings())
    if backend == "sql":
        databases = container.databases()
        databases.create_schema()
        created.append("photofeed (" + ", ".join(databases.names) + ")")
    return created


def close_adapters(container: Container) -> None:
    """Close every adapter and connection pool this container built. Idempotent."""
    close_container(container)


def effective_config(settings: Settings) -> dict[str, Any]:
    """The whole configuration the service runs on: ``settings.data`` with every default
    filled in that an adapter's constructor, the photo feed's settings, the password
    hasher or the image processor would otherwise apply silently.

    Saved as TOML and loaded back it is the same configuration. Options injected by the
    container (clock, name) are left out, and so are those whose default is "unset"
    (TOML has no null); secrets are not masked here (see ``config.mask_secrets``).
    """
    from scalecore.photofeed.settings import PhotoFeedSettings

    data = port_defaults(settings)
    photofeed = data["photofeed"]
    for field in attrs.fields(PhotoFeedSettings):
        if field.name not in photofeed and plain(field.default) is not None:
            photofeed[field.name] = plain(field.default)
    for name, (_, target) in (("password_hasher", HASHER), ("images", IMAGES)):
        fill_defaults(photofeed.setdefault(name, {}), app_adapter(target))
    return data


def resharders(
    settings: Settings,
    previous: Settings | None,
    *,
    batch: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[str, tuple[str, ...], Any]]:
    """For ``scalecore db reshard``: the library's resharders over the photo feed's stores
    (see :func:`entrypoints.wiring.databases.resharders`)."""
    return _databases.resharders(
        settings, previous, photofeed_tables(), batch=batch, progress=progress
    )


def reshard_statuses(settings: Settings) -> list[tuple[str, dict[str, Any] | None]]:
    """For ``scalecore db reshard --status``: the journal of each layout's last reshard."""
    return _databases.reshard_statuses(settings, photofeed_tables())
