"""Which adapter stands behind each backend name, and how to import it on first use.

A registry per port maps the name used in config (``backend = "localfs"``) to the adapter's
``"module:Class"`` and the install extra that provides its driver (the table itself is
:mod:`entrypoints.catalog`, the one list of the ports). Nothing is imported until
the container asks for that one adapter, so an embedded install never needs boto3, pika or
pymemcache. An unknown name is a :class:`~scalecore.errors.ConfigError` that lists the
known names and suggests the closest; a missing driver names the extra to install.
"""

from __future__ import annotations

import difflib
import importlib

from entrypoints.catalog import PORTS, AdapterEntry
from scalecore.errors import ConfigError, MissingDriverError

__all__ = ["PORTS", "AdapterEntry", "entry_for", "load_adapter"]


def entry_for(port: str, backend: object) -> AdapterEntry:
    """Return the registry entry for ``backend`` of ``port``, or raise a ``ConfigError``."""
    known = PORTS[port]
    if not isinstance(backend, str):
        raise ConfigError(
            f"must be a string, one of {', '.join(sorted(known))}", key=f"{port}.backend"
        )
    try:
        return known[backend]
    except KeyError:
        close = difflib.get_close_matches(backend, list(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"unknown backend {backend!r}; known: {', '.join(sorted(known))}{hint}",
            key=f"{port}.backend",
        ) from None


def load_adapter(port: str, backend: str) -> type:
    """Import and return the adapter class for ``backend`` of ``port``."""
    entry = entry_for(port, backend)
    try:
        module = importlib.import_module(entry.module)
    except ModuleNotFoundError as exc:
        if exc.name and not exc.name.startswith(("adapters", "scalecore")):
            extra = f"scalecore[{entry.extra}]" if entry.extra else "its driver"
            raise MissingDriverError(
                f"backend {backend!r} needs the {exc.name!r} package: install {extra}",
                key=f"{port}.backend",
            ) from exc
        raise
    adapter: type = getattr(module, entry.attribute)
    return adapter
