"""The ports and their adapters, as data: which backend names each port section takes,
where each adapter lives, and what the embedded defaults are.

This is the one list of the ports. The config sections, the embedded defaults (the backend
marked ``default``, with its ``embedded`` options under ``data_dir``), the container's
providers, validation, readiness checks and ``db init`` all follow it. Importing it imports
no adapter: :mod:`entrypoints.registry` does that, on first use.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

__all__ = ["PORTS", "AdapterEntry", "default_backends", "embedded_options"]


@attrs.frozen
class AdapterEntry:
    """Where one adapter lives: ``target`` is ``"module:Class"``; ``extra`` its install extra.

    ``default`` marks the port's backend in the embedded defaults; ``embedded`` are options
    it gets there when the config leaves them out (``{data_dir}`` is replaced by
    ``[deployment] data_dir``); ``local_secret`` names an option a single-node deployment
    may leave out: the container then generates a secret and keeps it under ``data_dir``.
    """

    target: str
    extra: str | None = None
    default: bool = False
    embedded: Mapping[str, str] = attrs.field(factory=dict)
    local_secret: str | None = None

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
        "localfs": AdapterEntry(
            "adapters.blob.localfs:LocalFsBlobStore",
            default=True,
            embedded={"root": "{data_dir}/blobs"},
            local_secret="url_secret",  # noqa: S106 - the option's name, not a secret
        ),
        "s3": AdapterEntry("adapters.blob.s3:S3BlobStore", extra="s3"),
    },
    "sessions": {
        "memory": AdapterEntry("adapters.sessions.memory:MemorySessionStore"),
        "sql": AdapterEntry(
            "adapters.sessions.sql:SqlSessionStore",
            default=True,
            embedded={"url": "sqlite:///{data_dir}/sessions.db"},
        ),
        "memcached": AdapterEntry("adapters.sessions.memcached:MemcachedSessionStore", "memcached"),
    },
    "bus": {
        "inprocess": AdapterEntry("adapters.bus.inprocess:InProcessBus", default=True),
        "rabbitmq": AdapterEntry("adapters.bus.rabbitmq:RabbitMqBus", extra="rabbitmq"),
    },
    "cache": {
        "memory": AdapterEntry("adapters.cache.memory:MemoryCache", default=True),
        "memcached": AdapterEntry("adapters.cache.memcached:MemcachedCache", "memcached"),
        "twotier": AdapterEntry("adapters.cache.twotier:TwoTierCache", "memcached"),
    },
    "ledger": {
        "memory": AdapterEntry("adapters.ledger.memory:MemoryJobLedger"),
        "sql": AdapterEntry(
            "adapters.ledger.sql:SqlJobLedger",
            default=True,
            embedded={"url": "sqlite:///{data_dir}/ledger.db"},
        ),
    },
}


def default_backends() -> dict[str, str]:
    """Port section name -> the backend of the embedded defaults, in registry order."""
    return {
        port: next(name for name, entry in backends.items() if entry.default)
        for port, backends in PORTS.items()
    }


def embedded_options(port: str, backend: object, data_dir: str) -> dict[str, str]:
    """The options ``backend`` of ``port`` gets under ``data_dir`` when left out; none for
    an unknown backend (that error is reported later, naming the key)."""
    entry = PORTS[port].get(backend) if isinstance(backend, str) else None
    if entry is None:
        return {}
    return {key: value.format(data_dir=data_dir) for key, value in entry.embedded.items()}
