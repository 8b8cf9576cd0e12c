"""A two-tier cache: a small LRU in each process in front of memcached shared by all of them.

Backend: "twotier"
Install extra: memcached
Options: servers (required), namespace, default_ttl, connect_timeout, timeout,
    max_pool_size, dead_timeout: as for "memcached", they configure the shared tier;
    local_ttl (seconds > 0, default 5): the longest a process keeps its local copy of an
    entry; local_max_entries (int >= 1, default 10_000): entries the local tier holds
    before evicting the least recently used; name and clock are supplied by the container.
Differs from the port: a process may go on reading its local copy of an entry for up to
    ``local_ttl`` seconds after another process overwrote or deleted it (the staleness
    bound across processes); within one process every read sees that process's own writes.
    A local copy never outlives the shared entry's expiry, to memcached's one-second
    precision. Everything else is as for "memcached".

Reads try the local tier first, then memcached, and keep what memcached returned locally
for ``min(local_ttl, time the entry has left)``. Writes and deletes go to memcached, then to
the local tier. The coordination operations (``add``, ``incr``, ``gets``, ``cas``,
``delete_if``) go to memcached only, which alone can arbitrate between processes, and drop
the local copy of a key they change. A read that raced with a write of this process never
stores what it read locally, so it cannot hide that write.

``stats`` counts both tiers: a local hit is a hit, and ``misses`` and ``errors`` come from
memcached. When memcached is down, reads still hit local copies (for up to ``local_ttl``)
and writes still reach the local tier; failures degrade exactly as for "memcached".
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar, Final

from adapters.cache.memcached import MemcachedCache
from adapters.cache.memory import MemoryCache
from scalecore.capabilities import Capability
from scalecore.clock import Clock, SystemClock
from scalecore.errors import ConfigError
from scalecore.ports.cache import NO_VALUE, Cache, CasToken, NoValue
from scalecore.types import JSONValue
from scalecore.validate import check_int, check_optional_seconds, check_seconds

__all__ = ["TwoTierCache"]

#: Keys share this many write counters; a read-populate checks its key's counter only.
_STRIPES: Final = 64


class TwoTierCache(Cache):
    """Local :class:`MemoryCache` over a shared :class:`MemcachedCache`. Thread-safe."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.SHARED})

    def __init__(
        self,
        *,
        servers: Sequence[str],
        namespace: str = "",
        default_ttl: float | None = None,
        local_ttl: float = 5.0,
        local_max_entries: int = 10_000,
        connect_timeout: float = 0.5,
        timeout: float = 0.5,
        max_pool_size: int = 64,
        dead_timeout: float = 5.0,
        name: str = "default",
        clock: Clock | None = None,
    ) -> None:
        # Not optional: it is the staleness bound.
        checked_local_ttl = check_seconds(local_ttl, "local_ttl", error=ConfigError)
        check_int(local_max_entries, "local_max_entries", minimum=1, error=ConfigError)
        self._shared = MemcachedCache(
            servers=servers,
            namespace=namespace,
            default_ttl=default_ttl,
            connect_timeout=connect_timeout,
            timeout=timeout,
            max_pool_size=max_pool_size,
            dead_timeout=dead_timeout,
            name=name,
            clock=clock,
        )
        self._local = MemoryCache(max_entries=local_max_entries, name=name, clock=clock)
        super().__init__(name=name)
        self.stats = self._shared.stats  # one set of counters; local hits are added to it
        self.namespace = self._shared.namespace
        self.default_ttl = self._shared.default_ttl
        self.local_ttl = checked_local_ttl
        self._clock: Clock = clock or SystemClock()
        # A read stores what memcached returned locally only if no write of this process
        # touched the key meanwhile; writes bump their key's counter under the lock.
        self._lock = threading.Lock()
        self._writes = [0] * _STRIPES

    def __repr__(self) -> str:
        return f"<TwoTierCache local_ttl={self.local_ttl:g} over {self._shared!r}>"

    # -- reads: local first --------------------------------------------------------------

    def get(self, key: str) -> JSONValue | NoValue:
        value = self._local.get(key)
        if value is not NO_VALUE:
            self.stats.add(hits=1)
            return value
        seen = self._writes[_stripe(key)]
        found = self._shared.lookup(key)
        if found is None:
            return NO_VALUE
        self._remember({key: found}, {key: seen})
        return found[0]

    def get_many(self, keys: Iterable[str]) -> dict[str, JSONValue]:
        wanted = list(dict.fromkeys(keys))
        hits = self._local.get_many(wanted)
        if hits:
            self.stats.add(hits=len(hits))
        rest = [key for key in wanted if key not in hits]
        if not rest:
            return hits
        seen = {key: self._writes[_stripe(key)] for key in rest}
        found = self._shared.lookup_many(rest)
        self._remember(found, seen)
        hits.update((key, value) for key, (value, _) in found.items())
        return hits

    def gets(self, key: str) -> tuple[JSONValue, CasToken] | NoValue:
        return self._shared.gets(key)

    # -- writes: shared, then local ------------------------------------------------------

    def set(self, key: str, value: JSONValue, ttl: float | None = None) -> None:
        self._shared.set(key, value, ttl)  # refuses bad keys, values and TTLs first
        local_ttl = self._local_ttl(ttl)
        with self._lock:
            self._writes[_stripe(key)] += 1
            self._local.set(key, value, local_ttl)

    def set_many(self, items: Mapping[str, JSONValue], ttl: float | None = None) -> None:
        self._shared.set_many(items, ttl)
        local_ttl = self._local_ttl(ttl)
        with self._lock:
            for key in items:
                self._writes[_stripe(key)] += 1
            self._local.set_many(items, local_ttl)

    def delete(self, key: str) -> None:
        self._shared.delete(key)
        self._forget(key)

    # -- coordination: shared only -------------------------------------------------------

    def add(self, key: str, value: JSONValue, ttl: float | None = None) -> bool:
        stored = self._shared.add(key, value, ttl)
        if stored:
            self._forget(key)  # a local copy, if any, predates the entry just made
        return stored

    def incr(self, key: str, delta: int = 1, ttl: float | None = None) -> int:
        counted = self._shared.incr(key, delta, ttl)
        self._forget(key)
        return counted

    def cas(self, key: str, value: JSONValue, token: CasToken, ttl: float | None = None) -> bool:
        written = self._shared.cas(key, value, token, ttl)
        if written:
            self._forget(key)
        return written

    def delete_if(self, key: str, token: CasToken) -> bool:
        deleted = self._shared.delete_if(key, token)
        if deleted:
            self._forget(key)
        return deleted

    # -- management ----------------------------------------------------------------------

    def ping(self) -> None:
        """Raise ``BackendUnavailable`` unless every memcached server answers now."""
        self._shared.ping()

    def close(self) -> None:
        """Close memcached connections. Idempotent; the local tier stays usable."""
        self._shared.close()
        self._local.close()

    # -- internals -----------------------------------------------------------------------

    def _local_ttl(self, ttl: float | None) -> float:
        seconds = check_optional_seconds(ttl, "ttl")
        if seconds is None:
            seconds = self.default_ttl
        return self.local_ttl if seconds is None else min(seconds, self.local_ttl)

    def _remember(
        self, found: Mapping[str, tuple[JSONValue, float | None]], seen: Mapping[str, int]
    ) -> None:
        """Keep values read from memcached locally, unless a write of ours raced the read."""
        now = self._clock.now()
        with self._lock:
            for key, (value, expires_at) in found.items():
                if self._writes[_stripe(key)] != seen[key]:
                    continue
                ttl = self.local_ttl
                if expires_at is not None:
                    ttl = min(ttl, expires_at - now)
                if ttl > 0:
                    self._local.set(key, value, ttl)

    def _forget(self, key: str) -> None:
        with self._lock:
            self._writes[_stripe(key)] += 1
            self._local.delete(key)


def _stripe(key: str) -> int:
    return hash(key) % _STRIPES
