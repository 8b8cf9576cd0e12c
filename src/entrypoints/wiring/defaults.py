"""The effective configuration: ``settings.data`` with every default an adapter's
constructor would otherwise apply silently filled in (``scalecore config show``)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from entrypoints.config import PORT_SECTIONS, Settings
from entrypoints.registry import load_adapter
from entrypoints.wiring.build import INJECTED, keyword_parameters

__all__ = ["fill_defaults", "plain", "port_defaults"]


def port_defaults(settings: Settings) -> dict[str, Any]:
    """``settings.data`` as TOML can hold it, each port's section with its adapter's
    constructor defaults filled in.

    Options injected by the container (clock, name) are left out, and so are those whose
    default is "unset" (TOML has no null); secrets are not masked here (see
    ``config.mask_secrets``).
    """
    data: dict[str, Any] = {key: plain(value) for key, value in settings.data.items()}
    for port in PORT_SECTIONS:
        backend, _ = settings.port(port)
        fill_defaults(data[port], load_adapter(port, backend))
    return data


def fill_defaults(section: dict[str, Any], adapter: type) -> None:
    """Add to ``section`` every constructor default of ``adapter`` it does not set."""
    for name, param in keyword_parameters(adapter).items():
        if name in INJECTED or name in section or param.default is inspect.Parameter.empty:
            continue
        value = plain(param.default)
        if value is not None:
            section[name] = value


def plain(value: Any) -> Any:
    """``value`` as TOML can hold it: tuples become lists, tables are copied; ``None``
    for what TOML cannot hold."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bool | int | float | str):
        return value
    return None
