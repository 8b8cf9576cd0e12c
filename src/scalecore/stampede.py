"""Stampede-safe get-or-compute over any :class:`~scalecore.ports.cache.Cache`.

When a hot entry expires or the cache is wiped, every request that wanted it would run the
expensive loader at once and the database behind it falls over (the thundering herd).
:class:`CachedLoader` prevents that at three levels:

* **single flight**: within one process, concurrent callers for a key share one loader call;
* **lease**: across processes sharing a cache, one caller per key holds a lease (an entry
  written with ``add``, so only one writer wins it) and computes; the others wait for its
  value for a bounded time;
* **stale-while-revalidate**: an entry has a soft TTL after which it is stale but still
  served; one caller refreshes it while everyone else gets the stale value at once.

Each stored entry is a JSON envelope ``{"v": value, "fresh_until": t, "fence": n}``. ``n`` is
a fencing token from ``incr``, strictly increasing per key. A writer stores its value only if
no envelope with a higher fence is stored, so a lease holder that stalled past its lease,
while a newer holder refreshed the entry, cannot overwrite the newer value with an older one.
An invalidation stores a marker ``{"fence": n}`` (no ``"v"``) that reads as a miss and turns
away any write that began before it.

Failure: the cache degrades, never the caller. Data operations already turn an outage into a
miss; when the coordination operations (``add``, ``incr``, ``gets``, ``cas``) raise
``BackendUnavailable``, the caller computes the value itself, still under single flight, and
stores it with a plain best-effort ``set``. ``get_or_compute`` raises only what the loader
raises, or ``InvalidInput`` for bad arguments or a loader result that is not JSON.

Keys beginning with a NUL character are reserved for the leases and fence counters.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Final

import attrs

from scalecore.clock import Clock, SystemClock
from scalecore.errors import BackendUnavailable, ConfigError, InvalidInput, InvalidKey
from scalecore.keys import normalise_cache_key
from scalecore.ports.cache import NO_VALUE, Cache, CacheStats
from scalecore.singleflight import SKIPPED, SingleFlight
from scalecore.types import JSONValue
from scalecore.validate import check_seconds, is_finite_number, is_int

__all__ = ["DEFAULT", "CachedLoader", "Default"]

_log = logging.getLogger(__name__)

#: How many times a writer re-reads and retries after losing a compare-and-set race.
_CAS_ATTEMPTS: Final = 5
_LEASE_PREFIX: Final = "\x00lease\x00"
_FENCE_PREFIX: Final = "\x00fence\x00"


class Default(enum.Enum):
    """The type of :data:`DEFAULT`."""

    DEFAULT = "DEFAULT"

    def __repr__(self) -> str:
        return "DEFAULT"


#: "Use the loader's configured value" for an argument of ``get_or_compute`` that may be None.
DEFAULT: Final = Default.DEFAULT


class _Outcome(enum.Enum):
    HIT = "hits"  # a fresh value from the cache
    STALE = "stale"  # a stale value from the cache
    MISS = "misses"  # a value this caller (or its single-flight leader) had to wait for


@attrs.frozen
class _Envelope:
    fence: int
    has_value: bool  # False for an invalidation marker
    value: JSONValue = None
    fresh_until: float | None = None

    def is_fresh(self, now: float) -> bool:
        return self.fresh_until is None or now < self.fresh_until


@attrs.frozen
class _Lease:
    key: str
    owner: str
    fence: int


@attrs.frozen
class _Plan:
    """One call's timings, after jitter."""

    ttl: float | None
    soft_ttl: float | None
    lock_timeout: float
    wait: float


class CachedLoader:
    """Get-or-compute with single flight, leases, fencing and stale-while-revalidate.

    ``cache`` is any Cache adapter; on a SHARED one the lease and fencing work across
    processes and hosts, on a local one they only add to single flight. Options (each one
    also a per-call argument of :meth:`get_or_compute`):

    * ``ttl`` (seconds or None, default 300): hard TTL; the entry is gone after it;
    * ``soft_ttl`` (seconds or None, default None): the entry is fresh this long, then stale
      but served while one caller refreshes it; None: fresh until the hard TTL;
    * ``lock_timeout`` (seconds, default 10): TTL of a lease, so a crashed holder frees the
      key by itself; set it above the slowest expected load;
    * ``wait`` (seconds, default 5): how long a caller with nothing to serve waits for
      another process's load before loading itself;
    * ``jitter`` (fraction in [0, 1), default 0.1): both TTLs of a write are multiplied by
      one random factor in ``(1 - jitter, 1]``, so entries written together expire apart.

    Also: ``clock`` (SystemClock when None); ``poll_interval`` (seconds between checks while
    waiting, default 0.05); ``executor``: when given, stale entries are refreshed on it in
    the background and every caller gets the stale value at once (a failed background
    refresh is logged and counted in ``stats.errors``); without it the caller that takes
    the lease refreshes inline and gets the new value; ``flight``: a :class:`SingleFlight`
    to share with other loaders of the same cache in this process.

    ``stats`` counts, per call, exactly one of ``hits`` (fresh value served), ``stale``
    (stale value served) or ``misses`` (had to wait for or run a load); ``loads`` counts
    loader calls and ``errors`` coordination failures. Thread-safe.
    """

    def __init__(
        self,
        cache: Cache,
        *,
        clock: Clock | None = None,
        ttl: float | None = 300.0,
        soft_ttl: float | None = None,
        lock_timeout: float = 10.0,
        wait: float = 5.0,
        jitter: float = 0.1,
        poll_interval: float = 0.05,
        executor: Executor | None = None,
        flight: SingleFlight[str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        try:
            self._ttl, self._soft_ttl, self._lock_timeout, self._wait, self._jitter = _check(
                ttl, soft_ttl, lock_timeout, wait, jitter
            )
        except _BadOption as exc:
            raise ConfigError(exc.problem, key=exc.option) from None
        check_seconds(poll_interval, "poll_interval", error=ConfigError)
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigError(f"must be a Clock, not {type(clock).__name__}", key="clock")
        self.cache = cache
        self.stats = CacheStats()
        self._clock: Clock = clock or SystemClock()
        self._poll_interval = float(poll_interval)
        self._executor = executor
        self._flight: SingleFlight[str] = flight if flight is not None else SingleFlight()
        self._random = rng or random.Random()
        self._random_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: set[str] = set()  # keys with a background refresh queued or running

    # -- public --------------------------------------------------------------------------

    def get_or_compute(
        self,
        key: str,
        loader: Callable[[], JSONValue],
        *,
        ttl: float | Default | None = DEFAULT,
        soft_ttl: float | Default | None = DEFAULT,
        lock_timeout: float | None = None,
        wait: float | None = None,
        jitter: float | None = None,
    ) -> JSONValue:
        """Return the cached value of ``key``, calling ``loader()`` to produce it when needed.

        A fresh entry is returned as is. A stale one is returned at once to every caller but
        one per key, which refreshes it (inline, returning the new value, or on the executor).
        On a miss, one caller per key loads and stores the value; concurrent callers in this
        process share its result; callers in other processes wait up to ``wait`` seconds for
        it, then load themselves. Arguments left out take the loader's configured values.

        Raises what ``loader`` raised (to its single-flight followers too; nothing is
        cached, the lease is released); ``InvalidKey`` or ``InvalidInput`` for bad arguments
        or a result that is not JSON. Never raises because the cache is down.
        """
        _check_key(key)
        plan = self._plan(ttl, soft_ttl, lock_timeout, wait, jitter)
        envelope = self._read(key)
        if envelope is not None and envelope.has_value:
            if envelope.is_fresh(self._clock.now()):
                self.stats.add(hits=1)
                return envelope.value
            return self._serve_stale(key, envelope, loader, plan)
        value, outcome = self._flight.do(key, lambda: self._fill(key, loader, plan))
        self.stats.add(**{outcome.value: 1})
        return value

    def invalidate(self, key: str) -> None:
        """Make the next ``get_or_compute`` of ``key`` load afresh, in every process.

        Stores an invalidation marker with a new fence, so a load that started before this
        call cannot store its (possibly outdated) result afterwards. The marker lives for the
        configured ``ttl`` (at least ``lock_timeout``; until evicted if ``ttl`` is None).
        Best effort when the cache is down: then a plain delete. Idempotent.
        """
        _check_key(key)
        current = self._read(key)
        marker_ttl = None if self._ttl is None else max(self._ttl, self._lock_timeout)
        try:
            fence = self._next_fence(key, current.fence if current else 0, marker_ttl)
        except BackendUnavailable:
            self.stats.add(errors=1)
            self._best_effort(lambda: self.cache.delete(key))
            return
        self._best_effort(lambda: self.cache.set(key, {"fence": fence}, marker_ttl))

    # -- the three paths -----------------------------------------------------------------

    def _serve_stale(
        self, key: str, stale: _Envelope, loader: Callable[[], JSONValue], plan: _Plan
    ) -> JSONValue:
        if self._executor is not None:
            self._refresh_in_background(key, loader, plan)
            self.stats.add(stale=1)
            return stale.value
        result = self._flight.try_do(key, lambda: self._refresh(key, loader, plan))
        if result is SKIPPED:  # another thread of this process is refreshing it
            self.stats.add(stale=1)
            return stale.value
        value, outcome = result
        self.stats.add(**{outcome.value: 1})
        return value

    def _refresh(
        self, key: str, loader: Callable[[], JSONValue], plan: _Plan
    ) -> tuple[JSONValue, _Outcome]:
        """Refresh a stale entry if this caller wins the lease; else serve it stale."""
        current = self._read(key)
        if current is None or not current.has_value:  # expired or invalidated meanwhile
            return self._fill(key, loader, plan)
        if current.is_fresh(self._clock.now()):  # someone refreshed it meanwhile
            return current.value, _Outcome.HIT
        try:
            lease = self._acquire(key, plan, floor=current.fence)
        except BackendUnavailable:
            return self._load_unfenced(key, loader, plan), _Outcome.MISS
        if lease is None:
            return current.value, _Outcome.STALE
        return self._load_under(lease, key, loader, plan), _Outcome.MISS

    def _fill(
        self, key: str, loader: Callable[[], JSONValue], plan: _Plan
    ) -> tuple[JSONValue, _Outcome]:
        """Produce a missing value: load it under the lease, or wait for the holder's."""
        floor = 0
        waited = False
        deadline = self._clock.monotonic() + plan.wait
        while True:
            current = self._read(key)
            if current is not None:
                if current.has_value:
                    if waited:  # another process loaded it while this caller waited
                        return current.value, _Outcome.MISS
                    fresh = current.is_fresh(self._clock.now())
                    return current.value, _Outcome.HIT if fresh else _Outcome.STALE
                floor = max(floor, current.fence)
            try:
                lease = self._acquire(key, plan, floor=floor)
            except BackendUnavailable:
                return self._load_unfenced(key, loader, plan), _Outcome.MISS
            if lease is not None:
                return self._load_under(lease, key, loader, plan), _Outcome.MISS
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                break
            self._clock.sleep(min(self._poll_interval, remaining))
            waited = True
        # The holder is slow or gone: load without the lease. A fence still orders this
        # write against the holder's, so neither can overwrite a newer value.
        try:
            fence = self._next_fence(key, floor, self._fence_ttl(plan))
        except BackendUnavailable:
            return self._load_unfenced(key, loader, plan), _Outcome.MISS
        value = self._load(loader)
        self._publish(key, value, fence, plan)
        return value, _Outcome.MISS

    def _refresh_in_background(
        self, key: str, loader: Callable[[], JSONValue], plan: _Plan
    ) -> None:
        assert self._executor is not None
        with self._pending_lock:
            if key in self._pending:
                return
            self._pending.add(key)

        def refresh() -> None:
            try:
                self._flight.try_do(key, lambda: self._refresh(key, loader, plan))
            except Exception:
                self.stats.add(errors=1)
                # The key may carry user data; the exception says what failed.
                _log.warning("background refresh of a cached value failed", exc_info=True)
            finally:
                with self._pending_lock:
                    self._pending.discard(key)

        try:
            self._executor.submit(refresh)
        except RuntimeError:  # the executor is shut down: serve stale, refresh later
            with self._pending_lock:
                self._pending.discard(key)

    # -- loading and writing -------------------------------------------------------------

    def _load(self, loader: Callable[[], JSONValue]) -> JSONValue:
        self.stats.add(loads=1)
        return loader()

    def _load_under(
        self, lease: _Lease, key: str, loader: Callable[[], JSONValue], plan: _Plan
    ) -> JSONValue:
        try:
            value = self._load(loader)
            self._publish(key, value, lease.fence, plan)
            return value
        finally:
            self._release(lease)

    def _load_unfenced(self, key: str, loader: Callable[[], JSONValue], plan: _Plan) -> JSONValue:
        """The cache cannot coordinate: load under single flight only, store best effort."""
        self.stats.add(errors=1)
        value = self._load(loader)
        envelope = self._envelope(value, 0, plan)
        self._best_effort(lambda: self.cache.set(key, envelope, plan.ttl))
        return value

    def _publish(self, key: str, value: JSONValue, fence: int, plan: _Plan) -> bool:
        """Store ``value`` unless an envelope with a higher fence is stored; return whether."""
        envelope = self._envelope(value, fence, plan)
        try:
            for _ in range(_CAS_ATTEMPTS):
                current = self.cache.gets(key)
                if current is NO_VALUE:
                    if self.cache.add(key, envelope, plan.ttl):
                        return True
                    continue  # someone stored first: compare fences with theirs
                stored, token = current
                parsed = _parse(stored)
                if parsed is not None and parsed.fence > fence:
                    return False  # a newer holder (or an invalidation) won
                if self.cache.cas(key, envelope, token, plan.ttl):
                    return True
        except BackendUnavailable:
            self.stats.add(errors=1)
        return False

    def _envelope(self, value: JSONValue, fence: int, plan: _Plan) -> JSONValue:
        fresh_until = None if plan.soft_ttl is None else self._clock.now() + plan.soft_ttl
        return {"v": value, "fresh_until": fresh_until, "fence": fence}

    def _read(self, key: str) -> _Envelope | None:
        try:
            raw = self.cache.get(key)
        except BackendUnavailable:  # the port says get degrades; an adapter may not
            self.stats.add(errors=1)
            return None
        return None if raw is NO_VALUE else _parse(raw)

    def _best_effort(self, write: Callable[[], None]) -> None:
        try:
            write()
        except BackendUnavailable:
            self.stats.add(errors=1)

    # -- leases and fences ---------------------------------------------------------------

    def _acquire(self, key: str, plan: _Plan, *, floor: int) -> _Lease | None:
        """Take the key's lease, or return None if another caller holds it.

        Raises ``BackendUnavailable`` if the cache cannot coordinate.
        """
        lease_key = _LEASE_PREFIX + key
        if self.cache.gets(lease_key) is not NO_VALUE:
            return None  # held: do not burn a fence on a lease we cannot get
        fence = self._next_fence(key, floor, self._fence_ttl(plan))
        owner = uuid.uuid4().hex
        if self.cache.add(lease_key, {"owner": owner, "fence": fence}, plan.lock_timeout):
            return _Lease(lease_key, owner, fence)
        return None

    def _release(self, lease: _Lease) -> None:
        """Delete the lease only if it is still ours: never a successor's."""
        try:
            current = self.cache.gets(lease.key)
            if current is NO_VALUE:
                return
            record, token = current
            if isinstance(record, dict) and record.get("owner") == lease.owner:
                self.cache.delete_if(lease.key, token)
        except BackendUnavailable:  # the lease expires by itself after lock_timeout
            self.stats.add(errors=1)

    def _next_fence(self, key: str, floor: int, ttl: float | None) -> int:
        """A fencing token for ``key`` greater than every one issued before, and than ``floor``.

        ``floor`` is the fence of the stored envelope: should the counter have been evicted
        while the entry survived, the counter is moved past it.
        """
        fence_key = _FENCE_PREFIX + key
        fence = self.cache.incr(fence_key, 1, ttl)
        if fence <= floor:
            fence = self.cache.incr(fence_key, floor - fence + 1, ttl)
        return fence

    def _fence_ttl(self, plan: _Plan) -> float | None:
        # The counter must outlive the entries it orders; it is re-seeded if it does not.
        return None if plan.ttl is None else plan.ttl + plan.lock_timeout

    # -- arguments -----------------------------------------------------------------------

    def _plan(
        self,
        ttl: float | Default | None,
        soft_ttl: float | Default | None,
        lock_timeout: float | None,
        wait: float | None,
        jitter: float | None,
    ) -> _Plan:
        hard, soft, lock, wait_s, spread = _check(
            self._ttl if ttl is DEFAULT else ttl,
            self._soft_ttl if soft_ttl is DEFAULT else soft_ttl,
            self._lock_timeout if lock_timeout is None else lock_timeout,
            self._wait if wait is None else wait,
            self._jitter if jitter is None else jitter,
        )
        with self._random_lock:
            factor = 1.0 - spread * self._random.random()
        return _Plan(
            ttl=None if hard is None else hard * factor,
            soft_ttl=None if soft is None else soft * factor,
            lock_timeout=lock,
            wait=wait_s,
        )


class _BadOption(InvalidInput):
    """A timing argument is out of range; ``option`` names it, ``problem`` says how."""

    def __init__(self, option: str, problem: str) -> None:
        self.option = option
        self.problem = problem
        super().__init__(f"{option} {problem}")


def _seconds(option: str, value: object) -> float:
    if not is_finite_number(value):
        raise _BadOption(option, f"must be a number, not {value!r}")
    return float(value)


def _optional_seconds(option: str, value: object) -> float | None:
    return None if value is None else _seconds(option, value)


def _check(
    ttl: object, soft_ttl: object, lock_timeout: object, wait: object, jitter: object
) -> tuple[float | None, float | None, float, float, float]:
    """Validate one set of timings; raise ``InvalidInput`` naming the bad one."""
    hard = _optional_seconds("ttl", ttl)
    soft = _optional_seconds("soft_ttl", soft_ttl)
    lock = _seconds("lock_timeout", lock_timeout)
    wait_s = _seconds("wait", wait)
    spread = _seconds("jitter", jitter)
    if hard is not None and hard <= 0:
        raise _BadOption("ttl", f"must be None or seconds > 0, not {ttl!r}")
    if soft is not None and soft <= 0:
        raise _BadOption("soft_ttl", f"must be None or seconds > 0, not {soft_ttl!r}")
    if lock <= 0:
        raise _BadOption("lock_timeout", f"must be seconds > 0, not {lock_timeout!r}")
    if wait_s < 0:
        raise _BadOption("wait", f"must be seconds >= 0, not {wait!r}")
    if not 0 <= spread < 1:
        raise _BadOption("jitter", f"must be a fraction in [0, 1), not {jitter!r}")
    if hard is not None and soft is not None and soft > hard:
        raise _BadOption("soft_ttl", f"({soft_ttl!r}) must not exceed ttl ({ttl!r})")
    return hard, soft, lock, wait_s, spread


def _check_key(key: object) -> None:
    normalise_cache_key(key)  # raises InvalidKey for a non-string or empty key
    if isinstance(key, str) and key.startswith("\x00"):
        raise InvalidKey("cache keys beginning with NUL are reserved for leases and fences")


def _parse(raw: object) -> _Envelope | None:
    """The envelope stored as ``raw``, or None if it is not one (treated as a miss)."""
    if not isinstance(raw, dict):
        return None
    fence = raw.get("fence")
    fresh_until = raw.get("fresh_until")
    if not is_int(fence):
        return None
    if fresh_until is not None and not is_finite_number(fresh_until):
        return None
    if "v" not in raw:
        return _Envelope(fence=fence, has_value=False)
    return _Envelope(
        fence=fence,
        has_value=True,
        value=raw["v"],
        fresh_until=None if fresh_until is None else float(fresh_until),
    )
