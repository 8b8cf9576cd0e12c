"""Cache adapters, and the rules every one of them applies identically.

Each adapter module holds one implementation of :class:`scalecore.ports.cache.Cache`. The
helpers here are what must not differ between them: which values are JSON, how they are
encoded, which TTLs and namespaces are valid. A value or TTL one adapter accepts is accepted
by all, so swapping ``memory`` for ``memcached`` in config changes no behaviour.
"""

from __future__ import annotations

import json
import math
import re

from scalecore.errors import ConfigError, InvalidInput
from scalecore.types import JSONValue

__all__ = [
    "MAX_NAMESPACE_LENGTH",
    "check_namespace",
    "check_ttl",
    "check_ttl_option",
    "decode_value",
    "encode_value",
]

#: Long enough for ``"app:v3:"``; short enough that a hashed key stays far below 250 bytes.
MAX_NAMESPACE_LENGTH = 64
_NAMESPACE = re.compile(r"[!-~]*")  # printable ASCII, no space: memcached accepts it verbatim


def encode_value(value: object) -> str:
    """Return the JSON text of ``value``; raise ``InvalidInput`` unless it is plain JSON.

    Plain JSON means ``None``, ``bool``, ``int``, finite ``float``, ``str``, and ``list`` and
    ``dict`` (with ``str`` keys) of those: exactly what comes back equal from
    ``decode_value``. Tuples, sets, bytes, NaN, infinities and non-string dict keys are
    refused rather than silently changed.
    """
    _check_plain_json(value)
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"cache values must be JSON: {exc}") from None


def decode_value(text: str | bytes) -> JSONValue:
    """Return the value :func:`encode_value` encoded as ``text``."""
    value: JSONValue = json.loads(text)
    return value


def _check_plain_json(value: object) -> None:
    # Iterative, so a deeply nested value is refused cleanly instead of overflowing the stack.
    pending = [value]
    while pending:
        item = pending.pop()
        if item is None or isinstance(item, str | bool | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidInput(f"cache values must be JSON; {item!r} is not a JSON number")
            continue
        if isinstance(item, list):
            pending.extend(item)
            continue
        if isinstance(item, dict):
            for key, nested in item.items():
                if not isinstance(key, str):
                    raise InvalidInput(
                        f"cache values must be JSON; dict key {key!r} is not a string"
                    )
                pending.append(nested)
            continue
        raise InvalidInput(f"cache values must be JSON, not {type(item).__name__}")


def check_ttl(ttl: object) -> float | None:
    """Return ``ttl`` if it is ``None`` or a finite number of seconds > 0; else ``InvalidInput``.

    Zero and negative TTLs are refused because backends disagree on them (memcached reads
    0 as "never expire").
    """
    if ttl is None:
        return None
    if (
        isinstance(ttl, bool)
        or not isinstance(ttl, int | float)
        or not math.isfinite(ttl)
        or ttl <= 0
    ):
        raise InvalidInput(f"ttl must be None or a number of seconds > 0, not {ttl!r}")
    return float(ttl)


def check_ttl_option(value: object, option: str) -> float | None:
    """Like :func:`check_ttl` for a constructor option: raise ``ConfigError`` naming it."""
    try:
        return check_ttl(value)
    except InvalidInput:
        raise ConfigError(
            f"must be None or a number of seconds > 0, not {value!r}", key=option
        ) from None


def check_namespace(namespace: object) -> str:
    """Return ``namespace`` if valid, else raise ``ConfigError`` naming the ``namespace`` option.

    A namespace is a prefix put before every key (see
    :func:`scalecore.keys.normalise_cache_key`): printable ASCII without spaces, at most
    :data:`MAX_NAMESPACE_LENGTH` characters, possibly empty. End it with a separator
    (``"photos:"``) so that no key of one namespace spells a key of another.
    """
    if not isinstance(namespace, str):
        raise ConfigError(f"must be a string, not {type(namespace).__name__}", key="namespace")
    if len(namespace) > MAX_NAMESPACE_LENGTH:
        raise ConfigError(
            f"must be at most {MAX_NAMESPACE_LENGTH} characters, not {len(namespace)}",
            key="namespace",
        )
    if not _NAMESPACE.fullmatch(namespace):
        raise ConfigError(f"must be printable ASCII without spaces: {namespace!r}", key="namespace")
    return namespace
