"""The container of the ports and the databases, on which every application is built.

:class:`CoreContainer` has one provider per port section of the registry (``blobs``,
``sessions``, ``bus``, ``cache``, ``ledger``: each builds its adapter once, on first use),
``databases`` (the ``[database]`` shards of the ``tables`` it is given), a clock, and a
:class:`~entrypoints.wiring.build.Closer` that closes everything built. Tests override a
provider with an in-memory adapter::

    container.cache.override(providers.Object(MemoryCache()))

Build one through :func:`entrypoints.library.open_deployment` (validated, wrapped) or the
photo feed's ``create_container``; never unvalidated settings.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from dependency_injector import containers, providers

from entrypoints.config import PORT_SECTIONS, Settings
from entrypoints.wiring.build import Closer, build_port
from entrypoints.wiring.databases import build_databases
from scalecore.clock import SystemClock

__all__ = ["CoreContainer", "close_container", "port_checks", "port_provider", "port_schemas"]


def _sql_statements() -> int:
    # Imported on first call: building the container must not import SQLAlchemy.
    from adapters.sql.engine import statements_in_this_thread

    return statements_in_this_thread()


class CoreContainer(containers.DeclarativeContainer):
    """One provider per port and the databases; each is built once, on first use.

    Not thread-safe while building: resolve what a process needs before it starts threads
    (the library's ``Deployment`` builds under a lock; ``create_app`` and the runners
    resolve first).
    """

    __self__ = providers.Self()
    settings = providers.Dependency(instance_of=Settings)
    #: Logical store name -> the sqlalchemy MetaData of that store's tables.
    tables: providers.Provider[Any] = providers.Dependency()
    clock = providers.Singleton(SystemClock)
    closer = providers.Singleton(Closer)

    # One per port of the registry, added below the class: (re)declared here for typing.
    blobs: providers.Singleton[Any]
    sessions: providers.Singleton[Any]
    bus: providers.Singleton[Any]
    cache: providers.Singleton[Any]
    ledger: providers.Singleton[Any]

    databases = providers.Singleton(build_databases, settings, tables, closer)
    #: ``() -> int``: SQL statements sent so far by the calling thread (only grows).
    sql_statements = providers.Object(_sql_statements)


for _port in PORT_SECTIONS:
    setattr(
        CoreContainer,
        _port,
        providers.Singleton(
            build_port, _port, CoreContainer.settings, CoreContainer.clock, CoreContainer.closer
        ),
    )


def port_provider(container: CoreContainer, port: str) -> Callable[[], Any]:
    """The provider of ``port`` (a section name of the registry) in ``container``."""
    provider: Callable[[], Any] = container.providers[port]
    return provider


def port_checks(container: CoreContainer) -> dict[str, Callable[[], None]]:
    """Port name -> ping of its backend. Each check builds its adapter on first use (so one
    that cannot even be built fails alone) and raises ``BackendUnavailable`` when its
    backend does not answer."""
    return {
        port: functools.partial(_ping, port_provider(container, port)) for port in PORT_SECTIONS
    }


def _ping(provider: Callable[[], Any]) -> None:
    provider().ping()


def port_schemas(container: CoreContainer) -> list[str]:
    """Create what each port's backend must hold before first use (its tables); return the
    ports that keep a schema. Idempotent."""
    return [port for port in PORT_SECTIONS if port_provider(container, port)().create_schema()]


def close_container(container: CoreContainer) -> None:
    """Close every adapter and connection pool this container built. Idempotent."""
    container.closer().close_all()
