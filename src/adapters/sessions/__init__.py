"""SessionStore adapters, and the JSON rules every one of them applies to session data.

Session data must survive ``json.dumps``/``json.loads`` unchanged: objects with string keys,
lists, strings, finite numbers, booleans and ``None``. Anything else (tuples, sets, bytes,
NaN, non-string keys, arbitrary objects) is refused with ``InvalidInput`` before anything is
written, so no adapter ever stores something another adapter would read back differently.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from scalecore.errors import ConfigError, InvalidInput
from scalecore.types import JSONObject, JSONValue

__all__ = [
    "DEFAULT_TTL",
    "IMPORT_BATCH",
    "check_json",
    "check_record",
    "check_ttl",
    "decode_data",
    "encode_data",
    "merge_changes",
]

#: Sessions written per round trip by ``import_sessions`` (and read per page by exports).
IMPORT_BATCH = 500

#: Sessions live 14 days after their last save unless configured otherwise.
DEFAULT_TTL = 14 * 24 * 3600.0


def check_ttl(ttl: object) -> float:
    """Return ``ttl`` as a float, or raise ``ConfigError`` naming the ``ttl`` option."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise ConfigError(f"must be a number of seconds, not {ttl!r}", key="ttl")
    if not math.isfinite(ttl) or ttl <= 0:
        raise ConfigError(f"must be a positive number of seconds, not {ttl!r}", key="ttl")
    return float(ttl)


def check_json(value: object, where: str = "session data") -> None:
    """Raise ``InvalidInput`` unless ``value`` round-trips through JSON unchanged.

    The message names the offending key path and type, never the value.
    """
    try:
        _check(value, where)
    except RecursionError:
        raise InvalidInput(f"{where} is nested too deeply") from None


def _check(value: object, where: str) -> None:
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{where} is {value!r}, which JSON cannot represent")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, f"{where}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{where} has a {type(key).__name__} key; JSON keys are strings")
            _check(item, f"{where}[{key!r}]")
        return
    raise InvalidInput(f"{where} holds a {type(value).__name__}, which is not a JSON value")


def check_record(record: object) -> str:
    """Return the JSON text of a :class:`SessionRecord`'s data, or raise ``InvalidInput``
    (never quoting the id) if the record, its id, data or expiry is malformed."""
    import math

    from scalecore.ports.sessions import SessionRecord, is_valid_session_id

    if not isinstance(record, SessionRecord):
        raise InvalidInput(f"expected a SessionRecord, not {type(record).__name__}")
    if not is_valid_session_id(record.id):
        raise InvalidInput("a session record has a malformed id")
    expires_at = record.expires_at
    if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
        raise InvalidInput("a session record's expiry must be a number of Unix seconds")
    if not math.isfinite(expires_at):
        raise InvalidInput("a session record's expiry must be finite")
    return encode_data(record.data)


def encode_data(data: Mapping[str, JSONValue]) -> str:
    """Return the JSON text stored for ``data``; raise ``InvalidInput`` if it is not JSON."""
    if not isinstance(data, Mapping):
        raise InvalidInput(f"session data must be a mapping, not {type(data).__name__}")
    as_dict = dict(data)
    check_json(as_dict)
    return json.dumps(as_dict, separators=(",", ":"), allow_nan=False)


def decode_data(text: str) -> JSONObject | None:
    """Return the data stored as ``text``, or ``None`` if it is not a JSON object."""
    try:
        data: Any = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def merge_changes(
    stored: JSONObject, changed: Mapping[str, JSONValue], removed: frozenset[str]
) -> JSONObject:
    """Apply one request's changes (see ``Session.changes``) on top of the stored data."""
    merged = dict(stored)
    merged.update(changed)
    for key in removed:
        merged.pop(key, None)
    return merged
