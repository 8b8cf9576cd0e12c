"""The two deployments of a migration: their settings, adapters and where their data lives.

Each side is read from its file *as written*: relative paths resolve against the current
directory exactly as ``scalecore run --config FILE`` resolves them, and no ``SCALECORE_*``
environment override is applied (it could not say which side it means).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from entrypoints.config import ENV_PREFIX, Settings
from entrypoints.container import Container, validate_settings
from entrypoints.photofeed.config import load_settings, repositories
from scalecore.capabilities import Capability
from scalecore.errors import ConfigError

__all__ = ["Side", "env_overrides", "load_side", "locations", "overlap"]


@attrs.define
class Side:
    """One deployment: ``role`` is "source" or "target"."""

    role: str
    path: str
    settings: Settings
    container: Container

    @property
    def name(self) -> str:
        return str(self.settings.data["deployment"]["name"])

    def backend(self, port: str) -> str:
        return self.settings.port(port)[0]

    def capabilities(self, port: str) -> frozenset[Capability]:
        from entrypoints.registry import load_adapter
        from scalecore.capabilities import declared

        return declared(load_adapter(port, self.backend(port)))

    @property
    def sql_repositories(self) -> bool:
        return repositories(self.settings)[0] == "sql"


def env_overrides(environ: Mapping[str, str] | None = None) -> list[str]:
    """Names of the ``SCALECORE_<SECTION>__<KEY>`` variables set (values never shown)."""
    environ = os.environ if environ is None else environ
    return sorted(
        name for name in environ if name.startswith(ENV_PREFIX) and name != "SCALECORE_CONFIG"
    )


def load_side(role: str, path: str) -> Side:
    """Read and validate ``path`` without environment overrides; connects to nothing."""
    if not Path(path).is_file():
        raise ConfigError(f"--{'from' if role == 'source' else 'to'} {path}: no such file")
    settings = load_settings(path, environ={})
    validate_settings(settings, forbid_puppies=False)
    return Side(role, path, settings, Container(settings=settings))


def _sql_location(url: str) -> str:
    """A database URL as a location: the absolute file of SQLite, host/port/database of
    PostgreSQL; never the password."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ":memory:"
        if database not in (":memory:", "") and not database.startswith("file:"):
            database = str(Path(database).resolve())
        return f"sqlite:{database}"
    return f"postgresql://{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database}"


def _shard_urls(store: Any) -> list[str]:
    return [shard if isinstance(shard, str) else shard["url"] for shard in store["shards"]]


def locations(side: Side) -> dict[str, list[str]]:
    """Where each durable part of ``side`` lives, without secrets: part -> locations."""
    settings = side.settings
    found: dict[str, list[str]] = {}
    if side.sql_repositories:
        database = settings.data["database"]
        stores = database.get("stores", {})
        from adapters.photofeed.schema import METADATA

        for name in METADATA:
            store = stores.get(name, database)
            urls = [store] if isinstance(store, str) else _shard_urls(store)
            found[f"database.{name}"] = [_sql_location(url) for url in urls]
    backend, options = settings.port("blobs")
    if backend == "localfs":
        found["blobs"] = [f"folder:{Path(options['root']).resolve()}"]
    elif backend == "s3":
        endpoint = options.get("endpoint_url") or "aws"
        found["blobs"] = [f"s3:{endpoint}/{options['bucket']}/{options.get('prefix', '')}"]
    for port in ("sessions", "ledger"):
        backend, options = settings.port(port)
        if backend == "sql":
            found[port] = [_sql_location(options["url"])]
        elif backend == "memcached":
            found[port] = [
                f"memcached:{server}/{options.get('namespace', 'session:')}"
                for server in sorted(options["servers"])
            ]
    return found


def overlap(source: Side, target: Side) -> str | None:
    """A sentence naming a place both sides use, or None. SQLite or PostgreSQL databases
    shared by two *different* stores are fine; one database as source and target is not."""
    theirs: dict[str, str] = {}
    for part, places in locations(target).items():
        for place in places:
            theirs.setdefault(place, part)
    for part, places in locations(source).items():
        for place in places:
            if place in theirs:
                shown = place.split(":", 1)[0]
                return (
                    f"the source's {part} and the target's {theirs[place]} are the same "
                    f"{shown} location; --from and --to must describe different deployments"
                )
    return None


def fingerprint(side: Side) -> str:
    """A stable identity of the data ``side`` holds: a hash of where every part lives."""
    text = json.dumps(locations(side), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
