"""The reference service's composition root, as the CLI, the runners and the tests use it.

The wiring is split by concern: the generic half (config to adapters, validation, the
databases, the effective config, the :class:`~entrypoints.wiring.core.CoreContainer` of the
ports) is :mod:`entrypoints.wiring`, shared with the library entry
(:mod:`entrypoints.library`); the photo feed's sub-container and operations are
:mod:`entrypoints.photofeed`. This module gathers the service's names in one place::

    container = create_container(load_settings(None))
    container.cache.override(providers.Object(MemoryCache()))

Nothing heavy is imported until a provider is called: importing this module loads no
driver and not even SQLAlchemy.
"""

from __future__ import annotations

from entrypoints.photofeed.container import Container, PhotoFeedRepositories, readiness_checks
from entrypoints.photofeed.operations import (
    close_adapters,
    create_container,
    create_tables,
    declare_topology,
    effective_config,
    puppy_settings,
    reshard_statuses,
    resharders,
    service_needs,
    service_topology,
    validate_settings,
)

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
