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

import json
import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Final

from adapters.cache import check_namespace, decode_value, encode_value
from adapters.memcached.cluster import (
    EXPIRE_NOW,
    CommandRefused,
    MemcachedCluster,
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
#: How many normalised keys each cache remembers; past that it forgets them all at once.
_SLOTS_KEPT: Final = 1 << 16

#: An item as read: its value (NO_VALUE if the bytes are not JSON) and its 32-bit flags.
Item = tuple[JSONValue | NoValue, int]


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
            serde=_SERDE,
        )
        self._clock: Clock = clock or SystemClock()
        # Normalised keys, remembered: the same keys are read again and again, and the check
        # (a regular expression, or a sha256 for long keys) costs more than a dict lookup.
        self._slots: dict[str, str] = {}

    def __repr__(self) -> str:
        servers = ",".join(self._cluster.addresses)
        return f"<MemcachedCache {self.name!r} servers={servers} namespace={self.namespace!r}>"

    # -- data operations: a failure is a miss or a dropped write -------------------------

    # get and get_many are the hot path (every cached read): they do what lookup and
    # lookup_many do without building the expiry of each hit, which only the two-tier
    # cache needs.

    def get(self, key: str) -> JSONValue | NoValue:
        item = self._fetch(key)
        return NO_VALUE if item is None else item[0]

    def get_many(self, keys: Iterable[str]) -> dict[str, JSONValue]:
        # The per-key steps are inlined: with 100 keys a call costs ~0.1 us per step per key.
        remembered = self._slots
        slots: dict[str, str] = {}
        for key in keys:
            slot = remembered.get(key) if type(key) is str else None
            slots[key] = self._slot(key) if slot is None else slot
        found, errors = self._fetch_many(slots.values())
        hits: dict[str, JSONValue] = {}
        for key, slot in slots.items():
            item = found.get(slot)
            if item is not None:
                value = item[0]
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
        item, token = self._gets(slot)
        if item is None or item[0] is NO_VALUE:
            return NO_VALUE
        return item[0], int(token)

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
        item = self._fetch(key)
        return None if item is None else (item[0], _expires_at(item))

    def lookup_many(self, keys: Iterable[str]) -> dict[str, tuple[JSONValue, float | None]]:
        """Like :meth:`get_many`, with each hit's expiry (Unix time, None if none)."""
        slots = {key: self._slot(key) for key in keys}
        found, errors = self._fetch_many(slots.values())
        hits: dict[str, tuple[JSONValue, float | None]] = {}
        for key, slot in slots.items():
            item = found.get(slot)
            if item is not None and item[0] is not NO_VALUE:
                hits[key] = (item[0], _expires_at(item))
        self.stats.add(hits=len(hits), misses=len(slots) - len(hits), errors=errors)
        return hits

    # -- internals -----------------------------------------------------------------------

    def _slot(self, key: str) -> str:
        if type(key) is not str:
            return normalise_cache_key(key, namespace=self.namespace)  # raises, or a str subclass
        slot = self._slots.get(key)
        if slot is None:
            slot = normalise_cache_key(key, namespace=self.namespace)
            if len(self._slots) >= _SLOTS_KEPT:
                self._slots.clear()
            self._slots[key] = slot
        return slot

    def _fetch(self, key: str) -> tuple[JSONValue, int] | None:
        """The value and flags of ``key``, or None on a miss; counted in ``stats``."""
        slot = self._slot(key)
        try:
            item: Item | None = self._cluster.call(
                self._cluster.server_for(slot), lambda client: client.get(slot)
            )
        except BackendUnavailable:
            self.stats.add(misses=1, errors=1)
            return None
        value = NO_VALUE if item is None else item[0]
        if value is NO_VALUE:
            self.stats.add(misses=1)
            return None
        assert item is not None
        self.stats.add(hits=1)
        return value, item[1]

    def _fetch_many(self, slots: Iterable[str]) -> tuple[dict[str, Item], int]:
        """The items found for ``slots`` (one request per server) and how many failed."""
        found: dict[str, Item] = {}
        errors = 0
        # Distinct keys have distinct slots (normalisation is one-to-one): no set needed.
        for server, batch in self._cluster.by_server(slots).items():
            try:
                items = self._cluster.call(server, operator.methodcaller("get_many", batch))
            except BackendUnavailable:
                errors += 1
                continue
            if found:
                found.update(items)
            else:
                found = items  # a fresh dict per call: the usual single server copies nothing
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

    def _gets(self, slot: str) -> tuple[Item | None, Any]:
        result: tuple[Item | None, Any] = self._cluster.call(
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
            item, token = self._gets(slot)
            if item is None:
                created = self._cluster.call(
                    self._cluster.server_for(slot),
                    lambda client: client.add(slot, initial, expire=expire, flags=flags),
                )
                if created:
                    return delta
                continue
            current = item[0]
            if not is_int(current):
                raise InvalidInput(f"cannot incr key {key!r}: its value is not an integer")
            # Keep the counter's own expiry (to the second): a TTL applies at creation only.
            expires_at = _expires_at(item)
            now = self._clock.now()
            keep = 0 if expires_at is None else memcached_expiry(max(expires_at - now, 1), now)
            result = current + delta
            if self._cas(slot, str(result).encode("ascii"), int(token), keep, item[1]):
                return result
        raise Conflict(f"incr of {key!r} lost {_INCR_ATTEMPTS} races in a row; try again")


def _encode(value: object) -> bytes:
    return encode_value(value).encode("utf-8")


_DECODER: Final = json.JSONDecoder()


def _decode(data: bytes) -> JSONValue | NoValue:
    """The value of an item's bytes, as ``json.loads`` reads them; NO_VALUE if not JSON.

    Values written here are compact UTF-8 JSON, which one ``raw_decode`` of the text reads
    in about half the time ``json.loads`` takes (it first guesses the bytes' encoding and
    scans for whitespace at both ends). Anything else (a BOM, UTF-16, surrounding blanks,
    not JSON at all) goes through ``json.loads`` itself, so both accept the same bytes.
    """
    try:
        text = data.decode("utf-8")
        value, end = _DECODER.raw_decode(text)
        if end == len(text):
            return value  # type: ignore[no-any-return]
    except (ValueError, RecursionError):
        pass
    try:
        return decode_value(data)
    except (ValueError, RecursionError):
        return NO_VALUE


class _JsonSerde:
    """pymemcache serde of this adapter: each item read becomes an :data:`Item`.

    Decoding inside pymemcache's read loop builds one plain tuple per item and nothing
    else. Stateless, hence safe for every pooled connection at once. Writes pass bytes.
    """

    def serialize(self, key: bytes, value: bytes) -> tuple[bytes, int]:
        return value, 0

    def deserialize(self, key: bytes, value: bytes, flags: int) -> Item:
        return _decode(value), flags


_SERDE: Final = _JsonSerde()


def _expires_at(item: tuple[object, int]) -> float | None:
    return float(item[1]) if item[1] else None


def _is_token(token: object) -> bool:
    return is_int(token) and token >= 0
