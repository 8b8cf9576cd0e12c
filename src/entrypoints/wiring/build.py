"""Build one adapter of a port from its config section, and close what was built.

The registry (:mod:`entrypoints.registry`) names the adapter class; the section's other keys
are its keyword-only constructor options. The container injects ``clock`` and ``name``
where the constructor takes them, and, on a single-node deployment, a signing secret kept
under ``data_dir`` for a backend whose registry entry names a ``local_secret`` option.
"""

from __future__ import annotations

import inspect
import logging
import os
import secrets
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from entrypoints.config import Settings
from entrypoints.registry import entry_for, load_adapter
from scalecore.clock import Clock
from scalecore.errors import ConfigError

__all__ = [
    "INJECTED",
    "Closer",
    "build_port",
    "construct",
    "construct_port",
    "keyword_parameters",
    "local_secret",
    "rekey",
]

_log = logging.getLogger(__name__)

#: Constructor arguments the container supplies; config may not set them.
INJECTED = frozenset({"clock", "name"})


class Closer:
    """Remembers what one container built, to close it all in reverse order."""

    def __init__(self) -> None:
        self._items: list[tuple[str, Callable[[], object]]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many things wait to be closed."""
        with self._lock:
            return len(self._items)

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


def build_port(port: str, settings: Settings, clock: Clock, closer: Closer) -> Any:
    """The adapter of ``port`` the settings pick, registered with ``closer``."""
    adapter = construct_port(port, settings, clock)
    closer.add(port, adapter.close)
    return adapter


def construct_port(port: str, settings: Settings, clock: Clock) -> Any:
    """The adapter of ``port`` the settings pick; ``ConfigError`` names the key at fault."""
    backend, options = settings.port(port)
    adapter = load_adapter(port, backend)
    accepted = keyword_parameters(adapter)
    secret_option = entry_for(port, backend).local_secret
    if secret_option and secret_option not in options:
        options[secret_option] = local_secret(settings.data_dir)
    if "clock" in accepted:
        options["clock"] = clock
    if "name" in accepted:
        options["name"] = port
    try:
        return adapter(**options)
    except ConfigError as exc:  # an adapter names its own option; add the section
        raise rekey(exc, port) from exc
    except TypeError as exc:  # a signature mismatch validation did not foresee
        raise ConfigError(f"cannot build {backend!r}: {exc}", key=port) from exc


def construct(where: str, adapter: type, options: Mapping[str, Any]) -> Any:
    """``adapter(**options)`` for an application's own adapter configured at ``where``
    (``photofeed.images``); errors name the key."""
    try:
        return adapter(**options)
    except ConfigError as exc:
        raise rekey(exc, where) from exc
    except TypeError as exc:
        raise ConfigError(f"cannot build it: {exc}", key=where) from exc


def local_secret(data_dir: Path) -> str:
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


def keyword_parameters(adapter: type) -> dict[str, inspect.Parameter]:
    """The constructor parameters of ``adapter`` that config may pass by name."""
    signature = inspect.signature(adapter)
    return {
        name: param
        for name, param in signature.parameters.items()
        if param.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }


def rekey(exc: ConfigError, prefix: str) -> ConfigError:
    """``exc`` with its key put under ``prefix`` (an adapter names its own option)."""
    message = str(exc).removeprefix(f"{exc.key}: ") if exc.key else str(exc)
    return ConfigError(message, key=f"{prefix}.{exc.key}" if exc.key else prefix)
