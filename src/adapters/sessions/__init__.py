"""SessionStore adapters, and the JSON rules every one of them applies to session data.

Session data must survive ``json.dumps``/``json.loads`` unchanged: objects with string keys,
lists, strings, finite numbers, booleans and ``None``. Anything else (tuples, sets, bytes,
NaN, non-string keys, arbitrary objects) is refused with ``InvalidInput`` before anything is
written (:func:`scalecore.validate.check_json`), so no adapter ever stores something another
adapter would read back differently. Every store's ``ttl`` option is checked with
:func:`scalecore.validate.check_seconds`: a finite number of seconds > 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from scalecore.errors import InvalidInput
from scalecore.types import JSONObject, JSONValue
from scalecore.validate import check_json, is_number

__all__ = [
    "DEFAULT_TTL",
    "IMPORT_BATCH",
    "check_record",
    "decode_data",
    "encode_data",
    "merge_changes",
]

#: Sessions written per round trip by ``import_sessions`` (and read per page by exports).
IMPORT_BATCH = 500

#: Sessions live 14 days after their last save unless configured otherwise.
DEFAULT_TTL = 14 * 24 * 3600.0


def check_record(record: object) -> str:
    """Return the JSON text of a :class:`SessionRecord`'s data, or raise ``InvalidInput``
    (never quoting the id) if the record, its id, data or expiry is malformed."""
    from scalecore.ports.sessions import SessionRecord, is_valid_session_id

    if not isinstance(record, SessionRecord):
        raise InvalidInput(f"expected a SessionRecord, not {type(record).__name__}")
    if not is_valid_session_id(record.id):
        raise InvalidInput("a session record has a malformed id")
    expires_at = record.expires_at
    if not is_number(expires_at):
        raise InvalidInput("a session record's expiry must be a number of Unix seconds")
    if not math.isfinite(expires_at):
        raise InvalidInput("a session record's expiry must be finite")
    return encode_data(record.data)


def encode_data(data: Mapping[str, JSONValue]) -> str:
    """Return the JSON text stored for ``data``; raise ``InvalidInput`` if it is not JSON."""
    if not isinstance(data, Mapping):
        raise InvalidInput(f"session data must be a mapping, not {type(data).__name__}")
    as_dict = dict(data)
    check_json(as_dict, "session data")
    try:
        return json.dumps(as_dict, separators=(",", ":"), allow_nan=False)
    except RecursionError:
        raise InvalidInput("session data is nested too deeply") from None


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
