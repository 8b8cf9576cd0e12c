"""An in-process LRU cache with per-entry TTLs, for one process or for tests.

Backend: "memory"
Install extra: none
Options: max_entries (int >= 1, default 10_000): entries kept before the least recently
    used is evicted; default_ttl (seconds > 0 or None, default None): the TTL of a write
    that passes ``ttl=None``; namespace (str, default ""): prefix of every key, printable
    ASCII without spaces, at most 64 characters; name and clock are supplied by the container.
Differs from the port: not SHARED (every process has its own cache, so in a multi-node
    deployment each server caches and coordinates leases alone); ``ttl=None`` means
    ``default_ttl`` when one is set. Never unavailable: nothing degrades or counts errors.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import ClassVar

import attrs

from adapters.cache import check_namespace, decode_value, encode_value
from scalecore.capabilities import Capability
from scalecore.clock import Clock, SystemClock
from scalecore.errors import ConfigError, InvalidInput
from scalecore.keys import normalise_cache_key
from scalecore.ports.cache import NO_VALUE, Cache, CasToken, NoValue
from scalecore.types import JSONValue
from scalecore.validate import check_int, check_optional_seconds, is_int

__all__ = ["MemoryCache"]


@attrs.frozen
class _Entry:
    text: str  # JSON: a caller never holds an object the cache also holds
    expires_at: float | None
    version: int  # the cas token; unique per write across the whole cache


class MemoryCache(Cache):
    """A bounded, thread-safe LRU of JSON text with TTLs. See the module docstring."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        default_ttl: float | None = None,
        name: str = "default",
        clock: Clock | None = None,
        namespace: str = "",
    ) -> None:
        check_int(max_entries, "max_entries", minimum=1, error=ConfigError)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"must be a non-empty string, not {name!r}", key="name")
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigError(f"must be a Clock, not {type(clock).__name__}", key="clock")
        super().__init__(name=name)
        self.max_entries = max_entries
        self.default_ttl = check_optional_seconds(default_ttl, "default_ttl", error=ConfigError)
        self.namespace = check_namespace(namespace)
        self._clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        # (expires_at, version, key) of every entry written with a TTL, so expired entries
        # are dropped on writes without scanning; stale rows are skipped by version.
        self._expiries: list[tuple[float, int, str]] = []
        self._versions = itertools.count(1)

    # -- reads ---------------------------------------------------------------------------

    def get(self, key: str) -> JSONValue | NoValue:
        slot = self._slot(key)
        with self._lock:
            entry = self._live(slot)
        if entry is None:
            self.stats.add(misses=1)
            return NO_VALUE
        self.stats.add(hits=1)
        return decode_value(entry.text)

    def get_many(self, keys: Iterable[str]) -> dict[str, JSONValue]:
        slots = {key: self._slot(key) for key in keys}
        found: dict[str, str] = {}
        with self._lock:
            for key, slot in slots.items():
                entry = self._live(slot)
                if entry is not None:
                    found[key] = entry.text
        self.stats.add(hits=len(found), misses=len(slots) - len(found))
        return {key: decode_value(text) for key, text in found.items()}

    def gets(self, key: str) -> tuple[JSONValue, CasToken] | NoValue:
        slot = self._slot(key)
        with self._lock:
            entry = self._live(slot)
        if entry is None:
            return NO_VALUE
        return decode_value(entry.text), entry.version

    # -- writes --------------------------------------------------------------------------

    def set(self, key: str, value: JSONValue, ttl: float | None = None) -> None:
        slot, text, expires_at = self._slot(key), encode_value(value), self._expiry(ttl)
        with self._lock:
            self._store(slot, text, expires_at)

    def set_many(self, items: Mapping[str, JSONValue], ttl: float | None = None) -> None:
        # Encode everything first: one bad value stores nothing.
        encoded = [(self._slot(key), encode_value(value)) for key, value in items.items()]
        expires_at = self._expiry(ttl)
        with self._lock:
            for slot, text in encoded:
                self._store(slot, text, expires_at)

    def add(self, key: str, value: JSONValue, ttl: float | None = None) -> bool:
        slot, text, expires_at = self._slot(key), encode_value(value), self._expiry(ttl)
        with self._lock:
            if self._live(slot) is not None:
                return False
            self._store(slot, text, expires_at)
            return True

    def delete(self, key: str) -> None:
        slot = self._slot(key)
        with self._lock:
            self._entries.pop(slot, None)

    def incr(self, key: str, delta: int = 1, ttl: float | None = None) -> int:
        check_int(delta, "incr delta")
        slot, expires_at = self._slot(key), self._expiry(ttl)
        with self._lock:
            entry = self._live(slot)
            current = 0
            if entry is not None:
                stored = decode_value(entry.text)
                if not is_int(stored):
                    raise InvalidInput(f"cannot incr key {key!r}: its value is not an integer")
                current = stored
                expires_at = entry.expires_at  # the TTL applies only when the counter is made
            result = current + delta
            self._store(slot, str(result), expires_at)
            return result

    def cas(self, key: str, value: JSONValue, token: CasToken, ttl: float | None = None) -> bool:
        slot, text, expires_at = self._slot(key), encode_value(value), self._expiry(ttl)
        with self._lock:
            entry = self._live(slot)
            if entry is None or entry.version != token:
                return False
            self._store(slot, text, expires_at)
            return True

    def delete_if(self, key: str, token: CasToken) -> bool:
        slot = self._slot(key)
        with self._lock:
            entry = self._live(slot)
            if entry is None or entry.version != token:
                return False
            del self._entries[slot]
            return True

    def close(self) -> None:
        """Nothing to release; the entries stay usable."""

    def __len__(self) -> int:
        """The number of entries held now, expired ones not yet dropped included."""
        with self._lock:
            return len(self._entries)

    # -- internals (callers of the underscore methods below hold self._lock) -------------

    def _slot(self, key: str) -> str:
        return normalise_cache_key(key, namespace=self.namespace)

    def _expiry(self, ttl: float | None) -> float | None:
        seconds = check_optional_seconds(ttl, "ttl")
        if seconds is None:
            seconds = self.default_ttl
        return None if seconds is None else self._clock.monotonic() + seconds

    def _live(self, slot: str) -> _Entry | None:
        """The unexpired entry in ``slot``, marked most recently used; drops an expired one."""
        entry = self._entries.get(slot)
        if entry is None:
            return None
        if entry.expires_at is not None and entry.expires_at <= self._clock.monotonic():
            del self._entries[slot]
            return None
        self._entries.move_to_end(slot)
        return entry

    def _store(self, slot: str, text: str, expires_at: float | None) -> None:
        version = next(self._versions)
        self._entries[slot] = _Entry(text, expires_at, version)
        self._entries.move_to_end(slot)
        if expires_at is not None:
            heapq.heappush(self._expiries, (expires_at, version, slot))
        self._drop_expired()
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def _drop_expired(self) -> None:
        now = self._clock.monotonic()
        while self._expiries and self._expiries[0][0] <= now:
            _, version, slot = heapq.heappop(self._expiries)
            entry = self._entries.get(slot)
            if entry is not None and entry.version == version:
                del self._entries[slot]
        # Rows of overwritten or evicted entries linger until they expire; rebuild the
        # heap from the live entries before it grows out of proportion to them.
        if len(self._expiries) > 2 * len(self._entries) + 64:
            self._expiries = [
                (entry.expires_at, entry.version, slot)
                for slot, entry in self._entries.items()
                if entry.expires_at is not None
            ]
            heapq.heapify(self._expiries)
