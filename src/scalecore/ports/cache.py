"""Cache: a lossy key-value store with TTLs, where a failure is a miss, never an error."""

from __future__ import annotations

import abc
import enum
import threading
from collections.abc import Iterable, Mapping
from typing import ClassVar, Final, Literal

import attrs

from scalecore.capabilities import Capability
from scalecore.types import JSONValue

__all__ = ["NO_VALUE", "Cache", "CacheStats", "CasToken", "NoValue"]


class NoValue(enum.Enum):
    """The type of :data:`NO_VALUE`; a miss, distinct from a cached ``None``."""

    NO_VALUE = "NO_VALUE"

    def __bool__(self) -> Literal[False]:
        return False

    def __repr__(self) -> str:
        return "NO_VALUE"


#: Returned by ``get`` on a miss. A cached ``None`` is a hit and returns ``None``.
NO_VALUE: Final = NoValue.NO_VALUE

#: Opaque version of a cached value, from :meth:`Cache.gets`, for :meth:`Cache.cas`.
CasToken = int


@attrs.define
class CacheStats:
    """Counters of one cache, safe to bump from many threads. Read them as a snapshot."""

    hits: int = 0
    misses: int = 0
    stale: int = 0
    loads: int = 0
    errors: int = 0
    _lock: threading.Lock = attrs.field(factory=threading.Lock, repr=False, eq=False)

    def add(self, **deltas: int) -> None:
        """Increase the named counters, e.g. ``stats.add(hits=2, misses=1)``."""
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def snapshot(self) -> dict[str, int]:
        """The counters as a plain dict."""
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "stale": self.stale,
                "loads": self.loads,
                "errors": self.errors,
            }


class Cache(abc.ABC):
    """A lossy store of JSON values with per-entry TTLs.

    Keys are any non-empty text, normalised by :func:`scalecore.keys.normalise_cache_key`
    identically on every adapter. Values are JSON; anything else raises ``InvalidInput``.
    A TTL of ``None`` means "as long as the cache keeps it"; entries may vanish at any time.

    Failure: when the backend is down, data operations degrade (``get`` is a miss, ``set``
    is dropped, ``delete`` is best effort) and bump ``stats.errors``; the coordination
    operations ``add``, ``incr``, ``gets`` and ``cas`` raise ``BackendUnavailable`` because a
    silent answer would be a lie about who holds a lease.

    Capabilities: ``SHARED`` (one cache across processes and hosts).
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def __init__(self, *, name: str = "default") -> None:
        self.name = name
        self.stats = CacheStats()

    @abc.abstractmethod
    def get(self, key: str) -> JSONValue | NoValue:
        """Return the value under ``key``, or :data:`NO_VALUE` on a miss."""

    @abc.abstractmethod
    def get_many(self, keys: Iterable[str]) -> dict[str, JSONValue]:
        """Return the hits among ``keys`` (misses are absent from the result)."""

    @abc.abstractmethod
    def set(self, key: str, value: JSONValue, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds, replacing any entry."""

    def set_many(self, items: Mapping[str, JSONValue], ttl: float | None = None) -> None:
        """Store several entries with one TTL (adapters may batch the round-trips)."""
        for key, value in items.items():
            self.set(key, value, ttl)

    @abc.abstractmethod
    def add(self, key: str, value: JSONValue, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` is absent; return whether it was stored. Atomic."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the entry; a missing key is not an error (idempotent)."""

    @abc.abstractmethod
    def incr(self, key: str, delta: int = 1, ttl: float | None = None) -> int:
        """Atomically add ``delta`` to the integer under ``key`` (0 if absent) and return it.

        The TTL applies when the counter is created. Used for fencing tokens.
        """

    @abc.abstractmethod
    def gets(self, key: str) -> tuple[JSONValue, CasToken] | NoValue:
        """Return the value and a token that changes whenever the entry is written."""

    @abc.abstractmethod
    def cas(self, key: str, value: JSONValue, token: CasToken, ttl: float | None = None) -> bool:
        """Write ``value`` only if the entry is unchanged since :meth:`gets` gave ``token``."""

    @abc.abstractmethod
    def delete_if(self, key: str, token: CasToken) -> bool:
        """Delete the entry only if unchanged since ``token``; return whether it was deleted.

        This is the owner-checked release of a lease: a holder whose lease expired and was
        taken over cannot delete its successor's.
        """

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
