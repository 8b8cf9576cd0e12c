"""The composition root: the only place that maps configuration to adapters.

:func:`create_container` validates the whole configuration against the registry and the
adapters' constructors *before* anything connects, then returns a dependency-injector
container whose providers build each adapter once, on first use. Tests override providers
with in-memory adapters::

    container = create_container(load_settings(None))
    container.cache.override(providers.Object(MemoryCache()))
"""

from __future__ import annotations

import inspect
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dependency_injector import containers, providers

from entrypoints.config import PORT_SECTIONS, Settings
from entrypoints.registry import load_adapter
from scalecore.capabilities import Capability
from scalecore.clock import Clock, SystemClock
from scalecore.errors import ConfigError

__all__ = ["Container", "create_container", "puppy_settings", "validate_settings"]

#: Constructor arguments the container supplies; config may not set them.
_INJECTED = frozenset({"clock", "name"})
#: Secrets an embedded single-node deployment may generate and keep under data_dir.
_LOCAL_SECRETS: Mapping[tuple[str, str], str] = {("blobs", "localfs"): "url_secret"}


def _build_port(port: str, settings: Settings, clock: Clock) -> Any:
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


class Container(containers.DeclarativeContainer):
    """One provider per port; each adapter is built once, on first use."""

    settings = providers.Dependency(instance_of=Settings)
    clock = providers.Singleton(SystemClock)

    blobs = providers.Singleton(_build_port, "blobs", settings, clock)
    sessions = providers.Singleton(_build_port, "sessions", settings, clock)
    bus = providers.Singleton(_build_port, "bus", settings, clock)
    cache = providers.Singleton(_build_port, "cache", settings, clock)
    ledger = providers.Singleton(_build_port, "ledger", settings, clock)


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
        _check_options(port, backend, adapter, options)
        declared: frozenset[Capability] = getattr(adapter, "capabilities", frozenset())
        for capability in needs.get(port, ()):
            if capability not in declared:
                raise ConfigError(
                    f"backend {backend!r} lacks the {capability.value!r} capability "
                    "this service needs",
                    key=f"{port}.backend",
                )
    if settings.multi_node and forbid_puppies:
        problems = puppy_settings(settings)
        if problems:
            raise ConfigError(
                "deployment.multi_node is true, but these settings keep state on one "
                "server: " + "; ".join(problems)
            )


def _check_options(port: str, backend: str, adapter: type, options: Mapping[str, Any]) -> None:
    accepted = _keyword_parameters(adapter)
    configurable = {name for name in accepted if name not in _INJECTED}
    for option in options:
        if option not in configurable:
            known = ", ".join(sorted(configurable)) or "none"
            raise ConfigError(
                f"backend {backend!r} has no option {option!r}; its options: {known}",
                key=f"{port}.{option}",
            )
    local_secret = _LOCAL_SECRETS.get((port, backend))
    for name, param in accepted.items():
        required = param.default is inspect.Parameter.empty
        if required and name not in _INJECTED and name not in options and name != local_secret:
            raise ConfigError(f"backend {backend!r} needs this option", key=f"{port}.{name}")


def puppy_settings(settings: Settings) -> list[str]:
    """Name every setting that would keep unique state on one server of a fleet."""
    problems: list[str] = []
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
    """Validate ``settings`` (see :func:`validate_settings`) and return a wired container."""
    validate_settings(settings, needs)
    return Container(settings=settings)
