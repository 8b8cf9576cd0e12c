"""Every check made before anything connects: one code path for the library entry and the
reference service.

:func:`validate_settings` checks each port's backend against the registry, its options
against the adapter's constructor, the capabilities asked for, an application's own
options (:class:`AppRules`), and, in a deployment declared multi-node, every setting that
would keep state on one server (:func:`puppy_settings`). ``ConfigError`` names the key.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from entrypoints.config import PORT_SECTIONS, Settings
from entrypoints.registry import entry_for, load_adapter
from entrypoints.wiring.build import INJECTED, keyword_parameters
from scalecore.capabilities import Capability, declared
from scalecore.errors import ConfigError

__all__ = [
    "LIBRARY_RULES",
    "AppRules",
    "check_options",
    "merge_needs",
    "puppy_settings",
    "validate_settings",
]


def _no_needs(settings: Settings) -> Mapping[str, Iterable[Capability]]:
    return {}


def _no_check(settings: Settings) -> None:
    return None


def _no_puppies(settings: Settings) -> list[str]:
    return []


@attrs.frozen
class AppRules:
    """What an application adds to the checks: ``needs`` (port -> capabilities it needs of
    the configured adapters), ``check`` (its own options; raises ``ConfigError``) and
    ``puppies`` (its own settings that keep state on one server, named first)."""

    needs: Callable[[Settings], Mapping[str, Iterable[Capability]]] = _no_needs
    check: Callable[[Settings], None] = _no_check
    puppies: Callable[[Settings], list[str]] = _no_puppies


#: The library alone: the ports and the databases, nothing of an application.
LIBRARY_RULES = AppRules()


def merge_needs(
    *needs: Mapping[str, Iterable[Capability]] | None,
) -> dict[str, list[Capability]]:
    """Port -> capabilities, all of ``needs`` together."""
    merged: dict[str, list[Capability]] = {}
    for one in needs:
        for port, capabilities in (one or {}).items():
            merged.setdefault(port, []).extend(capabilities)
    return merged


def validate_settings(
    settings: Settings,
    needs: Mapping[str, Iterable[Capability]] | None = None,
    *,
    forbid_puppies: bool = True,
    rules: AppRules = LIBRARY_RULES,
) -> None:
    """Check every port's backend, options and capabilities; connect to nothing.

    Raises ``ConfigError`` naming the key at fault: an unknown backend or option, a missing
    required option, an adapter lacking a capability in ``needs`` (port -> capabilities),
    an application's option ``rules.check`` refuses, or, in a deployment declared
    multi-node (unless ``forbid_puppies`` is false), any setting that keeps state on one
    server.
    """
    needs = needs or {}
    for port in PORT_SECTIONS:
        backend, options = settings.port(port)
        adapter = load_adapter(port, backend)
        check_options(
            port,
            f"backend {backend!r}",
            adapter,
            options,
            optional=entry_for(port, backend).local_secret,
        )
        for capability in needs.get(port, ()):
            if capability not in declared(adapter):
                raise ConfigError(
                    f"backend {backend!r} lacks the {capability.value!r} capability "
                    "this service needs",
                    key=f"{port}.backend",
                )
    rules.check(settings)
    if settings.multi_node and forbid_puppies:
        problems = puppy_settings(settings, rules)
        if problems:
            raise ConfigError(
                "deployment.multi_node is true, but these settings keep state on one "
                "server: " + "; ".join(problems)
            )


def check_options(
    where: str,
    what: str,
    adapter: type,
    options: Mapping[str, Any],
    *,
    optional: str | None = None,
) -> None:
    """Refuse an option ``adapter``'s constructor does not take, and a required one
    missing (but ``optional``, which the container fills in)."""
    accepted = keyword_parameters(adapter)
    configurable = {name for name in accepted if name not in INJECTED}
    for option in options:
        if option not in configurable:
            known = ", ".join(sorted(configurable)) or "none"
            raise ConfigError(
                f"{what} has no option {option!r}; its options: {known}",
                key=f"{where}.{option}",
            )
    for name, param in accepted.items():
        required = param.default is inspect.Parameter.empty
        if required and name not in INJECTED and name not in options and name != optional:
            raise ConfigError(f"{what} needs this option", key=f"{where}.{name}")


def puppy_settings(settings: Settings, rules: AppRules = LIBRARY_RULES) -> list[str]:
    """Name every setting that would keep unique state on one server of a fleet: the
    application's first, then the ports', then the databases'."""
    problems: list[str] = list(rules.puppies(settings))
    for port in PORT_SECTIONS:
        backend, options = settings.port(port)
        adapter = load_adapter(port, backend)
        if Capability.SHARED not in declared(adapter):
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
