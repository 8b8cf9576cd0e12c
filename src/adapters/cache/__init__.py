"""Cache adapters, and the rules every one of them applies identically.

Each adapter module holds one implementation of :class:`scalecore.ports.cache.Cache`. The
helpers here are what must not differ between them: how values are encoded and which
namespaces are valid. Values are checked with :func:`scalecore.validate.check_json` and TTLs
with :func:`scalecore.validate.check_optional_seconds` (``None`` or seconds > 0: zero is
refused because memcached reads it as "never expire"), so a value or TTL one adapter accepts
is accepted by all, and swapping ``memory`` for ``memcached`` in config changes no behaviour.
"""

from __future__ import annotations

import json
import re

from scalecore.errors import ConfigError, InvalidInput
from scalecore.types import JSONValue
from scalecore.validate import check_json

__all__ = [
    "MAX_NAMESPACE_LENGTH",
    "check_namespace",
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
    check_json(value, "cache value")
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"cache values must be JSON: {exc}") from None


def decode_value(text: str | bytes) -> JSONValue:
    """Return the value :func:`encode_value` encoded as ``text``."""
    value: JSONValue = json.loads(text)
    return value


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
