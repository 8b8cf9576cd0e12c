"""A cache on one or several memcached servers, shared by every process that points at them.

Backend: "memcached"
Install extra: memcached
Options: servers (required: a list of "host:port" strings; keys are spread over them by
    client-side rendezvous hashing); namespace (str, default ""): prefix of every key,
    printable ASCII without spaces, at most 64 characters; default_ttl (seconds > 0 or None,
    default None): the TTL of a write that passes ``ttl=None``; connect_timeout (seconds,
    default 0.5); timeout (seconds a request may block, default 0.5); max_pool_size
    (connections per server, default 64); dead_timeout (seconds a failed server is skipped,
    default 5); name and clock are supplied by the container.
Differs from the port: memcached counts time in whole seconds, so a TTL is rounded up to
    whole seconds and an entry lives between ``ceil(ttl) - 1`` and ``ceil(ttl)`` seconds
    (use TTLs of a few seconds or more); TTLs over 30 days become absolute Unix times
    computed from ``clock``, which must then be the wall clock. ``incr`` with a negative
    delta, or on a stored integer memcached cannot count with (negative, or 2**64 or more),
    is a compare-and-set loop that restarts the counter's TTL from its stored expiry to the
    second, and raises ``Conflict`` if it loses 32 races in a row; a counter incremented
    past 2**64 - 1 by memcached's own ``incr`` wraps around to 0. Values are limited by
    memcached's item size (1 MB by default): a larger ``set`` is dropped and counted in
    ``stats.errors``, a larger ``add`` or ``cas`` raises ``BackendUnavailable``.

Each value is stored as its JSON text; the item's 32-bit flags hold its expiry as a Unix
time in whole seconds (0: none), which the two-tier cache reads to never keep a local copy
longer than the shared one. A cas token is memcached's CAS unique, which the server changes
on every write (``incr`` included) and never reuses. ``delete_if`` is a single ``cas`` that
writes an already-expired item: the compare and the delete are one atomic step.

Failure (see ``adapters.memcached.cluster``): the data operations (``get``, ``get_many``,
``set``, ``set_many``, ``delete``) on a server that is down are a miss or a dropped write
and add 1 to ``stats.errors`` per failed request; ``add``, ``incr``, ``gets``, ``cas`` and
``delete_if`` raise ``BackendUnavailable``; ``ping`` raises it unless every server answers.
With several servers only the keys of the failed one are affected. ``get_many`` and
``set_many`` send one request per server.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Final

from adapters.cache import check_namespace, decode_value, encode_value
from adapters.memcached.cluster import (
    EXPIRE_NOW,
    CommandRefused,
    MemcachedCluster,
    Stored,
    memcached_expiry,
)
from scalecore.capabilities import Capability
from scalecore.clock import Clock, SystemClock
from scalecore.errors import BackendUnavailable, ConfigError, Conflict, InvalidInput
from scalecore.keys import normalise_cache_key
from scalecore.ports.cache import NO_VALUE, Cache, CasToken, NoValue
from scalecore.types import JSONValue
from scalecore.validate import check_int, check_optional_seconds, is_int

__all__ = ["MemcachedCache"]

#: How many compare-and-set rounds ``incr``'s slow path tries before giving up.
_INCR_ATTEMPTS: Final = 32
#: Item flags are 32 bits; an expiry past them is recorded as "none".
_MAX_FLAGS: Final = 2**32 - 1


class MemcachedCache(Cache):
    """A :class:`Cache` on memcached servers. Thread-safe. See the module docstring."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.SHARED})

    def __init__(
        self,
        *,
        servers: Sequence[str],
        namespace: str = "",
        default_ttl: float | None = None,
        connect_timeout: float = 0.5,
        timeout: float = 0.5,
        max_pool_size: int = 64,
        dead_timeout: float = 5.0,
        name: str = "default",
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"must be a non-empty string, not {name!r}", key="name")
        super().__init__(name=name)
        self.namespace = check_namespace(namespace)
        self.default_ttl = check_optional_seconds(default_ttl, "default_ttl", error=ConfigError)
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
        return f"<MemcachedCache {self.name!r} servers={servers} namespace={self.namespace!r}>"

    # -- data operations: a failure is a miss or a dropped write -------------------------

    # get and get_many are the hot path (every cached read): they do what lookup and
    # lookup_many do without building the expiry of each hit, which only the two-tier
    # cache needs.

    def get(self, key: str) -> JSONValue | NoValue:
        hit = self._fetch(key)
        return NO_VALUE if hit is None else hit[1]

    def get_many(self, keys: Iterable[str]) -> dict[str, JSONValue]:
        slots = {key: self._slot(key) for key in keys}
        found, errors = self._fetch_many(slots.values())
        hits: dict[str, JSONValue] = {}
        for key, slot in slots.items():
            stored = found.get(slot)
            if stored is not None:
                value = _decode(stored)
                if value is not NO_VALUE:
                    hits[key] = value
        self.stats.add(hits=len(hits), misses=len(slots) - len(hits), errors=errors)
        return hits

    def set(self, key: str, value: JSONValue, ttl: float | None = None) -> None:
        slot, data = self._slot(key), _encode(value)
        expire, flags = self._expiry(ttl)
        try:
            self._cluster.call(
                self._cluster.server_for(slot),
                lambda client: client.set(slot, data, expire=expire, flags=flags),
            )
        except BackendUnavailable:
            self.stats.add(errors=1)

    def set_many(self, items: Mapping[str, JSONValue], ttl: float | None = None) -> None:
        # Encode everything first: one bad value stores nothing.
        encoded = {self._slot(key): _encode(value) for key, value in items.items()}
        expire, flags = self._expiry(ttl)
        for server, slots in self._cluster.by_server(encoded).items():
            batch = {slot: encoded[slot] for slot in slots}
            try:
                self._cluster.call(
                    server, operator.methodcaller("set_many", batch, expire=expire, flags=flags)
                )
            except BackendUnavailable:
                self.stats.add(errors=1)

    def delete(self, key: str) -> None:
        slot = self._slot(key)
        try:
            self._cluster.call(self._cluster.server_for(slot), lambda client: client.delete(slot))
        except BackendUnavailable:
            self.stats.add(errors=1)

    # -- coordination operations: a failure raises BackendUnavailable --------------------

    def add(self, key: str, value: JSONValue, ttl: float | None = None) -> bool:
        slot, data = self._slot(key), _encode(value)
        expire, flags = self._expiry(ttl)
        return bool(
            self._cluster.call(
                self._cluster.server_for(slot),
                lambda client: client.add(slot, data, expire=expire, flags=flags),
            )
        )

    def incr(self, key: str, delta: int = 1, ttl: float | None = None) -> int:
        check_int(delta, "incr delta")
        slot = self._slot(key)
        expire, flags = self._expiry(ttl)
        server = self._cluster.server_for(slot)
        if delta < 0:  # memcached's decr stops at 0; counters here go negative
            return self._incr_by_cas(key, slot, delta, expire, flags)
        initial = str(delta).encode("ascii")
        for _ in range(_INCR_ATTEMPTS):
            try:
                counted = self._cluster.call(server, lambda client: client.incr(slot, delta))
            except CommandRefused:  # negative, too large, or not an integer at all
                return self._incr_by_cas(key, slot, delta, expire, flags)
            if counted is not None:
                return int(counted)
            # Absent: create it. If another caller created it first, count on theirs.
            created = self._cluster.call(
                server, lambda client: client.add(slot, initial, expire=expire, flags=flags)
            )
            if created:
                return delta
        raise Conflict(f"incr of {key!r} kept racing with deletes; try again")

    def gets(self, key: str) -> tuple[JSONValue, CasToken] | NoValue:
        slot = self._slot(key)
        stored, token = self._gets(slot)
        if stored is None:
            return NO_VALUE
        value = _decode(stored)
        return NO_VALUE if value is NO_VALUE else (value, int(token))

    def cas(self, key: str, value: JSONValue, token: CasToken, ttl: float | None = None) -> bool:
        slot, data = self._slot(key), _encode(value)
        expire, flags = self._expiry(ttl)
        if not _is_token(token):
            return False  # no entry ever had it
        return self._cas(slot, data, token, expire, flags)

    def delete_if(self, key: str, token: CasToken) -> bool:
        slot = self._slot(key)
        if not _is_token(token):
            return False
        # Overwrite with an item that is expired the moment it is stored: memcached compares
        # the token and "deletes" in one step, so a successor's entry is never removed.
        return self._cas(slot, b"null", token, EXPIRE_NOW, 0)

    # -- management ----------------------------------------------------------------------

    def ping(self) -> None:
        """Raise ``BackendUnavailable`` unless every server answers now."""
        self._cluster.ping()

    def close(self) -> None:
        """Close every pooled connection. Idempotent; a later request reconnects."""
        self._cluster.close()

    # -- for the two-tier cache ----------------------------------------------------------

    def lookup(self, key: str) -> tuple[JSONValue, float | None] | None:
        """Like :meth:`get`, with the entry's expiry (Unix time, None if none): or None."""
        hit = self._fetch(key)
        return None if hit is None else (hit[1], _expires_at(hit[0]))

    def lookup_many(self, keys: Iterable[str]) -> dict[str, tuple[JSONValue, float | None]]:
        """Like :meth:`get_many`, with each hit's expiry (Unix time, None if none)."""
        slots = {key: self._slot(key) for key in keys}
        found, errors = self._fetch_many(slots.values())
        hits: dict[str, tuple[JSONValue, float | None]] = {}
        for key, slot in slots.items():
            stored = found.get(slot)
            value = NO_VALUE if stored is None else _decode(stored)
            if value is not NO_VALUE:
                assert stored is not None
                hits[key] = (value, _expires_at(stored))
        self.stats.add(hits=len(hits), misses=len(slots) - len(hits), errors=errors)
        return hits

    # -- internals -----------------------------------------------------------------------

    def _slot(self, key: str) -> str:
        if type(key) is str:
            return _normalised(key, self.namespace)
        return normalise_cache_key(key, namespace=self.namespace)  # raises, or a str subclass

    def _fetch(self, key: str) -> tuple[Stored, JSONValue] | None:
        """The item of ``key`` and its value, or None on a miss; counted in ``stats``."""
        slot = self._slot(key)
        try:
            stored = self._cluster.call(
                self._cluster.server_for(slot), lambda client: client.get(slot)
            )
        except BackendUnavailable:
            self.stats.add(misses=1, errors=1)
            return None
        value = NO_VALUE if stored is None else _decode(stored)
        if stored is None or value is NO_VALUE:
            self.stats.add(misses=1)
            return None
        self.stats.add(hits=1)
        return stored, value

    def _fetch_many(self, slots: Iterable[str]) -> tuple[dict[str, Stored], int]:
        """The items found for ``slots`` (one request per server) and how many failed."""
        found: dict[str, Stored] = {}
        errors = 0
        # Distinct keys have distinct slots (normalisation is one-to-one): no set needed.
        for server, batch in self._cluster.by_server(slots).items():
            try:
                found.update(self._cluster.call(server, operator.methodcaller("get_many", batch)))
            except BackendUnavailable:
                errors += 1
        return found, errors

    def _expiry(self, ttl: float | None) -> tuple[int, int]:
        """memcached's ``exptime`` for ``ttl``, and the flags recording the expiry time."""
        seconds = check_optional_seconds(ttl, "ttl")
        if seconds is None:
            seconds = self.default_ttl
        if seconds is None:
            return 0, 0
        now = self._clock.now()
        # Rounded down, so a reader of the flags never believes the entry lives longer.
        expires_at = math.floor(now + seconds)
        flags = expires_at if 0 < expires_at <= _MAX_FLAGS else 0
        return memcached_expiry(seconds, now), flags

    def _gets(self, slot: str) -> tuple[Stored | None, Any]:
        result: tuple[Stored | None, Any] = self._cluster.call(
            self._cluster.server_for(slot), lambda client: client.gets(slot)
        )
        return result

    def _cas(self, slot: str, data: bytes, token: int, expire: int, flags: int) -> bool:
        # memcached answers None (no such entry), False (changed) or True (written).
        return bool(
            self._cluster.call(
                self._cluster.server_for(slot),
                lambda client: client.cas(slot, data, token, expire=expire, flags=flags),
            )
        )

    def _incr_by_cas(self, key: str, slot: str, delta: int, expire: int, flags: int) -> int:
        """``incr`` as read, add, compare-and-set: for what memcached's own cannot count."""
        initial = str(delta).encode("ascii")
        for _ in range(_INCR_ATTEMPTS):
            stored, token = self._gets(slot)
            if stored is None:
                created = self._cluster.call(
                    self._cluster.server_for(slot),
                    lambda client: client.add(slot, initial, expire=expire, flags=flags),
                )
                if created:
                    return delta
                continue
            current = _decode(stored)
            if not is_int(current):
                raise InvalidInput(f"cannot incr key {key!r}: its value is not an integer")
            # Keep the counter's own expiry (to the second): a TTL applies at creation only.
            expires_at = _expires_at(stored)
            now = self._clock.now()
            keep = 0 if expires_at is None else memcached_expiry(max(expires_at - now, 1), now)
            result = current + delta
            if self._cas(slot, str(result).encode("ascii"), int(token), keep, stored.flags):
                return result
        raise Conflict(f"incr of {key!r} lost {_INCR_ATTEMPTS} races in a row; try again")


def _encode(value: object) -> bytes:
    return encode_value(value).encode("utf-8")


@functools.lru_cache(maxsize=1 << 16)
def _normalised(key: str, namespace: str) -> str:
    """``normalise_cache_key``, remembered: the same keys are read again and again, and the
    check (a regular expression, or a sha256 for long keys) costs more than the lookup."""
    return normalise_cache_key(key, namespace=namespace)


def _decode(stored: Stored) -> JSONValue | NoValue:
    """The value of an item, or NO_VALUE for one that is not JSON (not written by us)."""
    try:
        return decode_value(stored.data)
    except (ValueError, RecursionError):
        return NO_VALUE


def _expires_at(stored: Stored) -> float | None:
    return float(stored.flags) if stored.flags else None


def _is_token(token: object) -> bool:
    return is_int(token) and token >= 0
