"""Sessions in a dict of this process: for one server, development and tests.

Backend: "memory"
Install extra: none
Options: ttl (seconds a session lives after its last save; default 1209600 = 14 days);
    clock (injected).
Differs from the port: sessions live in this process only (not SHARED, not DURABLE): a
    restart logs everyone out, and a second server sees none of them. Expired sessions are
    dropped when loaded, by purge_expired (PURGE), and by a sweep at most once a minute
    during create, so memory stays bounded even if nobody schedules the purge.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import ClassVar

import attrs

from adapters.sessions import (
    DEFAULT_TTL,
    check_record,
    decode_data,
    encode_data,
    merge_changes,
)
from scalecore.capabilities import Capability
from scalecore.clock import Clock, SystemClock
from scalecore.errors import ConfigError, NotFound
from scalecore.ports.sessions import (
    Session,
    SessionRecord,
    SessionStore,
    is_valid_session_id,
    new_session_id,
)
from scalecore.types import JSONObject, JSONValue
from scalecore.validate import check_json, check_seconds

__all__ = ["MemorySessionStore"]

#: Seconds between sweeps of expired sessions piggy-backed on create.
_SWEEP_INTERVAL = 60.0


@attrs.define
class _Entry:
    # JSON text, not live objects: what a caller holds can never alias what is stored, and
    # the data read back is exactly what the SQL and memcached stores would return.
    data: str
    expires_at: float


class MemorySessionStore(SessionStore):
    """Sessions in a dict guarded by one lock; every operation is atomic and thread-safe."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.PURGE, Capability.EXPORT, Capability.IMPORT}
    )

    def __init__(self, *, ttl: float = DEFAULT_TTL, clock: Clock | None = None) -> None:
        self.ttl = check_seconds(ttl, "ttl", error=ConfigError)
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigError(f"must be a Clock, not {type(clock).__name__}", key="clock")
        self._clock: Clock = clock or SystemClock()
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._next_sweep = self._clock.now() + _SWEEP_INTERVAL

    def __repr__(self) -> str:
        return f"<MemorySessionStore ttl={self.ttl:.0f}s sessions={len(self._entries)}>"

    def create(self, data: Mapping[str, JSONValue] | None = None) -> Session:
        text = encode_data(data if data is not None else {})
        with self._lock:
            now = self._clock.now()
            if now >= self._next_sweep:
                self._sweep(now)
                self._next_sweep = now + _SWEEP_INTERVAL
            session_id = new_session_id()
            while session_id in self._entries:  # pragma: no cover - 256 random bits
                session_id = new_session_id()
            expires_at = now + self.ttl
            self._entries[session_id] = _Entry(text, expires_at)
        return Session(session_id, _decode(text), expires_at)

    def load(self, session_id: str) -> Session | None:
        if not is_valid_session_id(session_id):
            return None
        with self._lock:
            entry = self._live_entry(session_id, self._clock.now())
            if entry is None:
                return None
            text, expires_at = entry.data, entry.expires_at
        return Session(session_id, _decode(text), expires_at)

    def save(self, session: Session) -> None:
        changed, removed = session.changes
        check_json(changed, "session data")
        with self._lock:
            now = self._clock.now()
            entry = self._live_entry(session.id, now) if is_valid_session_id(session.id) else None
            if entry is None:
                raise NotFound("the session expired or was deleted")
            merged = merge_changes(_decode(entry.data), changed, removed)
            entry.data = encode_data(merged)
            entry.expires_at = now + self.ttl
            expires_at = entry.expires_at
        session.mark_saved(merged, expires_at)

    def delete(self, session_id: str) -> None:
        if not is_valid_session_id(session_id):
            return
        with self._lock:
            self._entries.pop(session_id, None)

    def rotate(self, session: Session) -> Session:
        changed, removed = session.changes
        check_json(changed, "session data")
        with self._lock:
            now = self._clock.now()
            entry = self._live_entry(session.id, now) if is_valid_session_id(session.id) else None
            if entry is None:
                raise NotFound("the session expired or was deleted")
            merged = merge_changes(_decode(entry.data), changed, removed)
            text = encode_data(merged)
            new_id = new_session_id()
            expires_at = now + self.ttl
            self._entries[new_id] = _Entry(text, expires_at)
            del self._entries[session.id]
        return Session(new_id, _decode(text), expires_at)

    def purge_expired(self) -> int:
        with self._lock:
            return self._sweep(self._clock.now())

    def export_sessions(self) -> Iterator[SessionRecord]:
        """A snapshot of the live sessions, taken under the lock."""
        with self._lock:
            now = self._clock.now()
            live = [
                (key, entry.data, entry.expires_at)
                for key, entry in self._entries.items()
                if entry.expires_at > now
            ]
        for session_id, text, expires_at in live:
            yield SessionRecord(session_id, _decode(text), expires_at)

    def import_sessions(self, records: Iterable[SessionRecord]) -> int:
        written = 0
        for record in records:
            text = check_record(record)
            with self._lock:
                if record.expires_at <= self._clock.now():
                    continue
                self._entries[record.id] = _Entry(text, float(record.expires_at))
            written += 1
        return written

    def _live_entry(self, session_id: str, now: float) -> _Entry | None:
        entry = self._entries.get(session_id)
        if entry is not None and entry.expires_at <= now:
            del self._entries[session_id]
            return None
        return entry

    def _sweep(self, now: float) -> int:
        expired = [key for key, entry in self._entries.items() if entry.expires_at <= now]
        for key in expired:
            del self._entries[key]
        return len(expired)

    def ping(self) -> None:
        """Always answers: the store is this process."""

    def close(self) -> None:
        """Nothing to release; the sessions stay until the store is garbage."""


def _decode(text: str) -> JSONObject:
    data = decode_data(text)
    # Only this module writes the text, always from a JSON object.
    assert data is not None
    return data
