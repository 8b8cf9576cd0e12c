"""Sessions on memcached: shared by every server of a fleet, gone when memcached restarts.

Backend: "memcached"
Install extra: memcached
Options: servers (required: a list of "host:port" strings; sessions are spread over them by
    client-side rendezvous hashing); ttl (seconds a session lives after its last save;
    default 1209600 = 14 days); namespace (prefix of every memcached key, printable ASCII
    without spaces, at most 64 characters; default "session:"); connect_timeout (seconds,
    default 0.5); timeout (seconds a request may block, default 0.5); max_pool_size
    (connections per server, default 64); dead_timeout (seconds a failed server is skipped,
    default 5); clock (injected).
Differs from the port: IMPORT but not EXPORT: memcached cannot list its items, so sessions
    can be moved onto it but not off it. Not DURABLE: a restarted (or evicting) memcached
    forgets its sessions and their users are logged out, so give memcached memory to spare
    (sessions are evicted least-recently-used first when it runs out). Not PURGE: memcached
    expires sessions itself. A server that is down is an error, not a miss: load, save,
    create, delete and rotate raise ``BackendUnavailable`` for the sessions it holds,
    because a session store that answered "no such session" would log everyone out silently,
    and a delete it dropped would leave a logged-out session alive when the server returned.
    Expiry compares the stored expiry with the local clock, so the servers' clocks must be
    synchronised (NTP); ``clock`` must be the wall clock for a ``ttl`` over 30 days.

A session is one memcached item holding JSON ``{"v": version, "exp": expires_at, "d": data}``
under ``namespace + sha256(session id)``: the id itself never reaches memcached, so a key
dump of the server cannot be replayed as cookies. memcached expires the item one second
after ``exp`` (TTLs round up to whole seconds); ``exp``, checked on every read, is the
exact limit. ``save`` and ``rotate`` merge their changes onto what is stored and write it
back with compare-and-set (``gets``/``cas``), re-reading and re-merging when another
request wrote first, so two requests that changed different keys both survive; after 32
lost races in a row they raise ``Conflict``. ``rotate`` adds the new item, then deletes the
old one only if it is unchanged (a ``cas`` to an already expired item), else undoes the
new one and merges again. Session ids never reach a log line or an error message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Final

import attrs

from adapters.memcached.cluster import EXPIRE_NOW, MemcachedCluster, Stored, memcached_expiry
from adapters.sessions import (
    DEFAULT_TTL,
    check_record,
    decode_data,
    encode_data,
    merge_changes,
)
from scalecore.capabilities import Capability
from scalecore.clock import Clock, SystemClock
from scalecore.errors import ConfigError, Conflict, InvalidInput, NotFound
from scalecore.ports.sessions import (
    Session,
    SessionRecord,
    SessionStore,
    is_valid_session_id,
    new_session_id,
)
from scalecore.types import JSONObject, JSONValue
from scalecore.validate import check_json, check_seconds, is_int, is_number

__all__ = ["MemcachedSessionStore"]

logger = logging.getLogger(__name__)

#: A save or rotate that keeps losing the compare-and-set race this many times raises.
MAX_SAVE_ATTEMPTS: Final = 32
_MAX_NAMESPACE: Final = 64
_NAMESPACE: Final = re.compile(r"[!-~]*")  # printable ASCII without spaces


@attrs.frozen
class _Record:
    version: int
    expires_at: float
    data: JSONObject

    def encode(self) -> bytes:
        record = {"v": self.version, "exp": self.expires_at, "d": self.data}
        try:
            text = json.dumps(record, separators=(",", ":"), allow_nan=False)
        except RecursionError:  # check_json walks any depth; json does not
            raise InvalidInput("session data is nested too deeply") from None
        return text.encode("utf-8")


class MemcachedSessionStore(SessionStore):
    """Sessions on memcached; safe for many threads, processes and hosts at once."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.SHARED, Capability.IMPORT}
    )

    def __init__(
        self,
        *,
        servers: Sequence[str],
        ttl: float = DEFAULT_TTL,
        namespace: str = "session:",
        connect_timeout: float = 0.5,
        timeout: float = 0.5,
        max_pool_size: int = 64,
        dead_timeout: float = 5.0,
        clock: Clock | None = None,
    ) -> None:
        self.ttl = check_seconds(ttl, "ttl", error=ConfigError)
        if (
            not isinstance(namespace, str)
            or len(namespace) > _MAX_NAMESPACE
            or not _NAMESPACE.fullmatch(namespace)
        ):
            raise ConfigError(
                f"must be printable ASCII without spaces, at most {_MAX_NAMESPACE} "
                f"characters, not {namespace!r}",
                key="namespace",
            )
        self.namespace = namespace
        self._cluster = MemcachedCluster(
            servers=servers,
            connect_timeout=connect_timeout,
            timeout=timeout,
            max_pool_size=max_pool_size,
            dead_timeout=dead_timeout,
            clock=clock,
        )
        self._clock: Clock = clock or SystemClock()

    def __repr__(self) -> str:
        servers = ",".join(self._cluster.addresses)
        return f"<MemcachedSessionStore servers={servers} ttl={self.ttl:.0f}s>"

    def create(self, data: Mapping[str, JSONValue] | None = None) -> Session:
        stored = decode_data(encode_data(data if data is not None else {}))
        assert stored is not None  # encode_data always writes an object
        for _attempt in range(3):
            session_id = new_session_id()
            record = self._record(stored, version=1)
            if self._add(self._slot(session_id), record):
                return Session(session_id, stored, record.expires_at)
        # Three collisions of 256 random bits: the random source is broken.
        raise Conflict("could not find an unused session id")

    def load(self, session_id: str) -> Session | None:
        if not is_valid_session_id(session_id):
            return None
        slot = self._slot(session_id)
        stored = self._cluster.call(self._cluster.server_for(slot), lambda c: c.get(slot))
        record = self._live(stored)
        if record is None:
            return None
        return Session(session_id, record.data, record.expires_at)

    def save(self, session: Session) -> None:
        changed, removed = session.changes
        check_json(changed, "session data")
        if not is_valid_session_id(session.id):
            raise NotFound("the session expired or was deleted")
        slot = self._slot(session.id)
        for _attempt in range(MAX_SAVE_ATTEMPTS):
            current, token = self._gets(slot)
            if current is None:
                raise NotFound("the session expired or was deleted")
            merged = merge_changes(current.data, changed, removed)
            record = self._record(merged, version=current.version + 1)
            written = self._cas(slot, record.encode(), token, self._expiry())
            if written is None:
                raise NotFound("the session expired or was deleted")
            if written:
                session.mark_saved(merged, record.expires_at)
                return
        raise Conflict("the session kept changing under this save; try again")

    def delete(self, session_id: str) -> None:
        if not is_valid_session_id(session_id):
            return
        slot = self._slot(session_id)
        self._cluster.call(self._cluster.server_for(slot), lambda c: c.delete(slot))

    def rotate(self, session: Session) -> Session:
        changed, removed = session.changes
        check_json(changed, "session data")
        if not is_valid_session_id(session.id):
            raise NotFound("the session expired or was deleted")
        old = self._slot(session.id)
        for _attempt in range(MAX_SAVE_ATTEMPTS):
            current, token = self._gets(old)
            if current is None:
                raise NotFound("the session expired or was deleted")
            merged = merge_changes(current.data, changed, removed)
            record = self._record(merged, version=1)
            new_id = new_session_id()
            new = self._slot(new_id)
            if not self._add(new, record):
                continue  # an id collision; draw again
            # The old session goes only if nobody wrote it since it was read: else the
            # new one would lack that write. Then undo the new one and merge again.
            killed = self._cas(old, b"null", token, EXPIRE_NOW)
            if killed:
                return Session(new_id, merged, record.expires_at)
            self._cluster.call(self._cluster.server_for(new), operator.methodcaller("delete", new))
            if killed is None:
                raise NotFound("the session expired or was deleted")
        raise Conflict("the session kept changing under this rotate; try again")

    def import_sessions(self, records: Iterable[SessionRecord]) -> int:
        """Write each record as version 1 with its own expiry (``set``: replaces)."""
        written = 0
        for record in records:
            text = check_record(record)
            now = self._clock.now()
            if record.expires_at <= now:
                continue
            data = decode_data(text)
            assert data is not None  # check_record encoded an object
            item = _Record(1, float(record.expires_at), data).encode()
            expire = memcached_expiry(record.expires_at - now + 1, now)
            slot = self._slot(record.id)
            self._cluster.call(
                self._cluster.server_for(slot),
                operator.methodcaller("set", slot, item, expire=expire, noreply=False),
            )
            written += 1
        return written

    def ping(self) -> None:
        """Raise ``BackendUnavailable`` unless every server answers now."""
        self._cluster.ping()

    def close(self) -> None:
        """Close every pooled connection. Idempotent; a later request reconnects."""
        self._cluster.close()

    # -- internals -----------------------------------------------------------------------

    def _slot(self, session_id: str) -> str:
        # Hashed: memcached never holds a usable id, not even in its key listings.
        return self.namespace + hashlib.sha256(session_id.encode("ascii")).hexdigest()

    def _record(self, data: JSONObject, *, version: int) -> _Record:
        return _Record(version, self._clock.now() + self.ttl, data)

    def _expiry(self) -> int:
        # One second past ``exp``: the stored expiry, checked on read, is the exact limit.
        return memcached_expiry(self.ttl + 1, self._clock.now())

    def _add(self, slot: str, record: _Record) -> bool:
        data, expire = record.encode(), self._expiry()
        return bool(
            self._cluster.call(
                self._cluster.server_for(slot), lambda c: c.add(slot, data, expire=expire)
            )
        )

    def _gets(self, slot: str) -> tuple[_Record | None, Any]:
        stored, token = self._cluster.call(self._cluster.server_for(slot), lambda c: c.gets(slot))
        return self._live(stored), token

    def _cas(self, slot: str, data: bytes, token: Any, expire: int) -> bool | None:
        """True if written, False if the item changed since ``token``, None if it is gone."""
        written: bool | None = self._cluster.call(
            self._cluster.server_for(slot),
            lambda c: c.cas(slot, data, token, expire=expire),
        )
        return written

    def _live(self, stored: Stored | None) -> _Record | None:
        """The record in an item, or None if absent, expired or unreadable."""
        if stored is None:
            return None
        record = _parse(stored.data)
        if record is None:
            logger.warning("a stored session is not a session record; treating it as missing")
            return None
        if record.expires_at <= self._clock.now():
            return None
        return record


def _parse(data: bytes) -> _Record | None:
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(raw, dict):
        return None
    version, expires_at, payload = raw.get("v"), raw.get("exp"), raw.get("d")
    if not is_int(version) or not is_number(expires_at) or not isinstance(payload, dict):
        return None
    return _Record(version, float(expires_at), payload)
