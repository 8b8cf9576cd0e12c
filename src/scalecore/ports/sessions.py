"""SessionStore: server-side sessions behind an unguessable id, with a TTL and JSON data."""

from __future__ import annotations

import abc
import copy
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from typing import ClassVar

import attrs

from scalecore.capabilities import Capability
from scalecore.errors import InvalidInput
from scalecore.types import JSONObject, JSONValue

__all__ = [
    "SESSION_ID_PATTERN",
    "Session",
    "SessionRecord",
    "SessionStore",
    "new_session_id",
]

#: 32 random bytes (256 bits), URL-safe base64 without padding: 43 characters.
SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")


def new_session_id() -> str:
    """Return a fresh session id carrying 256 bits from the OS's secure random source."""
    return secrets.token_urlsafe(32)


def is_valid_session_id(value: object) -> bool:
    """Whether ``value`` has the shape of a session id (it may still be unknown)."""
    return isinstance(value, str) and SESSION_ID_PATTERN.fullmatch(value) is not None


class Session:
    """One session's data, tracking which keys this request changed.

    Behaves like a mutable mapping of JSON values. :meth:`SessionStore.save` writes only the
    keys changed through this object, so two requests of one user that change different
    keys do not overwrite each other.
    """

    def __init__(self, session_id: str, data: Mapping[str, JSONValue], expires_at: float) -> None:
        self.id = session_id
        self.expires_at = expires_at
        self._data: JSONObject = copy.deepcopy(dict(data))
        self._changed: set[str] = set()
        self._removed: set[str] = set()

    def __getitem__(self, key: str) -> JSONValue:
        return self._data[key]

    def __setitem__(self, key: str, value: JSONValue) -> None:
        if not isinstance(key, str):
            raise InvalidInput(f"session keys are strings, not {type(key).__name__}")
        self._data[key] = copy.deepcopy(value)
        self._changed.add(key)
        self._removed.discard(key)

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self._removed.add(key)
        self._changed.discard(key)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, default: JSONValue = None) -> JSONValue:
        """Return the value under ``key``, or ``default``."""
        return self._data.get(key, default)

    def pop(self, key: str, default: JSONValue = None) -> JSONValue:
        """Remove ``key`` and return its value, or ``default`` if it was absent."""
        if key not in self._data:
            return default
        value = self._data[key]
        del self[key]
        return value

    @property
    def data(self) -> JSONObject:
        """A copy of all data, as last loaded plus this request's changes."""
        return copy.deepcopy(self._data)

    @property
    def changes(self) -> tuple[dict[str, JSONValue], frozenset[str]]:
        """The keys set (with values) and the keys removed since load or the last save."""
        return {k: copy.deepcopy(self._data[k]) for k in self._changed}, frozenset(self._removed)

    @property
    def modified(self) -> bool:
        """Whether anything changed since load or the last save."""
        return bool(self._changed or self._removed)

    def mark_saved(self, data: Mapping[str, JSONValue], expires_at: float) -> None:
        """Adopt the merged data a store wrote and forget the pending changes (for adapters)."""
        self._data = copy.deepcopy(dict(data))
        self.expires_at = expires_at
        self._changed.clear()
        self._removed.clear()

    def __repr__(self) -> str:
        # Never show the id: session ids are secrets and reprs end up in logs.
        return f"<Session keys={sorted(self._data)!r} expires_at={self.expires_at:.0f}>"


@attrs.frozen(repr=False)
class SessionRecord:
    """One stored session as it is: id, data and absolute expiry (Unix seconds).

    What :meth:`SessionStore.export_sessions` yields and :meth:`SessionStore.import_sessions`
    takes. The repr never shows the id: session ids are secrets.
    """

    id: str
    data: JSONObject
    expires_at: float

    def __repr__(self) -> str:
        return f"<SessionRecord keys={sorted(self.data)!r} expires_at={self.expires_at:.0f}>"


class SessionStore(abc.ABC):
    """Server-side sessions keyed by an unguessable 256-bit id, holding JSON data.

    Every adapter honours the TTL: a session not saved or touched for ``ttl`` seconds is gone,
    and :meth:`load` returns ``None`` for it. A malformed id is treated like an unknown one
    (``None``), never an error, because ids come from untrusted cookies.

    Capabilities: ``SHARED`` (every process sees the same sessions), ``DURABLE``
    (sessions survive a restart), ``PURGE`` (expired sessions occupy space until
    :meth:`purge_expired` runs; without it the backend expires them itself), ``EXPORT``
    (:meth:`export_sessions` lists every live session) and ``IMPORT``
    (:meth:`import_sessions` writes sessions as they are): together, a move of every
    logged-in user from one store to another (``scalecore migrate``).
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    #: Seconds a session lives after it was last saved or touched; set by every adapter.
    ttl: float

    @abc.abstractmethod
    def create(self, data: Mapping[str, JSONValue] | None = None) -> Session:
        """Store a new session holding ``data`` under a fresh id and return it."""

    @abc.abstractmethod
    def load(self, session_id: str) -> Session | None:
        """Return the live session with this id, or ``None`` if unknown, expired or malformed."""

    @abc.abstractmethod
    def save(self, session: Session) -> None:
        """Write the session's changes and restart its TTL.

        Only the keys changed through ``session`` are written; keys another request changed
        meanwhile are kept (the session's own data is updated to the merged result). Saving
        a session that has expired or been deleted meanwhile raises ``NotFound``.
        """

    @abc.abstractmethod
    def delete(self, session_id: str) -> None:
        """Remove the session. Unknown or malformed ids are ignored (idempotent)."""

    @abc.abstractmethod
    def rotate(self, session: Session) -> Session:
        """Move the session, with its pending changes, to a fresh id; the old id stops working.

        Call on login and privilege changes so a session id planted before login is useless.
        Raises ``NotFound`` if the session no longer exists.
        """

    def purge_expired(self) -> int:
        """Delete expired sessions and return how many. Needs the ``PURGE`` capability."""
        from scalecore.capabilities import require

        require(self, Capability.PURGE, "purge_expired")
        raise AssertionError("an adapter declaring PURGE must override purge_expired")

    def export_sessions(self) -> Iterator[SessionRecord]:
        """Yield every live (unexpired) session with its data and expiry, in no set order.

        Streams: the store is read in batches, never whole. Sessions created, saved or
        deleted while the iteration runs may or may not be seen. Needs ``EXPORT``.
        """
        from scalecore.capabilities import require

        require(self, Capability.EXPORT, "export_sessions")
        raise AssertionError("an adapter declaring EXPORT must override export_sessions")

    def import_sessions(self, records: Iterable[SessionRecord]) -> int:
        """Store each record under its own id with its data and expiry, replacing any session
        stored under that id; return how many were written.

        Idempotent: importing the same records again leaves the same sessions. A record
        already expired is skipped (not counted); one with a malformed id or non-JSON data
        raises ``InvalidInput`` before it is written. Needs ``IMPORT``.
        """
        from scalecore.capabilities import require

        require(self, Capability.IMPORT, "import_sessions")
        raise AssertionError("an adapter declaring IMPORT must override import_sessions")

    def create_schema(self) -> bool:
        """Create what the backend must hold before first use (tables), where missing, and
        return ``True``; a backend with nothing to create returns ``False``. Idempotent,
        safe from several processes at once. Called by ``scalecore db init``, ``scalecore
        run`` and the library entry on a fresh deployment."""
        return False

    def ping(self) -> None:
        """Raise ``BackendUnavailable`` unless the backend answers."""

    def close(self) -> None:
        """Release connections. Idempotent."""
