"""Which adapter stands behind each backend name, and how to import it on first use.

A registry per port maps the name used in config (``backend = "localfs"``) to the adapter's
``"module:Class"`` and the install extra that provides its driver. Nothing is imported until
the container asks for that one adapter, so an embedded install never needs boto3, pika or
pymemcache. An unknown name is a :class:`~scalecore.errors.ConfigError` that lists the
known names and suggests the closest; a missing driver names the extra to install.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping

import attrs

from scalecore.errors import ConfigError, MissingDriverError

__all__ = ["PORTS", "AdapterEntry", "entry_for", "load_adapter"]


@attrs.frozen
class AdapterEntry:
    """Where one adapter lives: ``target`` is ``"module:Class"``; ``extra`` its install extra."""

    target: str
    extra: str | None = None

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    @property
    def attribute(self) -> str:
        return self.target.partition(":")[2]


#: port section name -> backend name -> adapter.
PORTS: Mapping[str, Mapping[str, AdapterEntry]] = {
    "blobs": {
        "memory": AdapterEntry("adapters.blob.memory:MemoryBlobStore"),
        "localfs": AdapterEntry("adapters.blob.localfs:LocalFsBlobStore"),
        "s3": AdapterEntry("adapters.blob.s3:S3BlobStore", extra="s3"),
    },
    "sessions": {
        "memory": AdapterEntry("adapters.sessions.memory:MemorySessionStore"),
        "sql": AdapterEntry("adapters.sessions.sql:SqlSessionStore"),
        "memcached": AdapterEntry("adapters.sessions.memcached:MemcachedSessionStore", "memcached"),
    },
    "bus": {
        "inprocess": AdapterEntry("adapters.bus.inprocess:InProcessBus"),
        "rabbitmq": AdapterEntry("adapters.bus.rabbitmq:RabbitMqBus", extra="rabbitmq"),
    },
    "cache": {
        "memory": AdapterEntry("adapters.cache.memory:MemoryCache"),
        "memcached": AdapterEntry("adapters.cache.memcached:MemcachedCache", "memcached"),
        "twotier": AdapterEntry("adapters.cache.twotier:TwoTierCache", "memcached"),
    },
    "ledger": {
        "memory": AdapterEntry("adapters.ledger.memory:MemoryJobLedger"),
        "sql": AdapterEntry("adapters.ledger.sql:SqlJobLedger"),
    },
}


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
