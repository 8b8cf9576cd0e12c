"""CachedLoader: soft/hard TTLs, leases, fencing, single flight and a cache that is down.

Two ``CachedLoader`` objects over one ``MemoryCache`` stand for two processes sharing a
cache server: each has its own single flight, so only the lease in the cache keeps them
from loading twice. Time is a ManualClock unless a test needs real threads to interleave.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.cache.memory import MemoryCache
from scalecore.clock import Clock, ManualClock
from scalecore.errors import BackendUnavailable, ConfigError, InvalidInput, InvalidKey
from scalecore.ports.cache import NO_VALUE, Cache, CasToken, NoValue
from scalecore.stampede import _FENCE_PREFIX, _LEASE_PREFIX, CachedLoader
from scalecore.types import JSONValue

# -- helpers ---------------------------------------------------------------------------------


def loader_over(cache: Cache, clock: Clock, **options: Any) -> CachedLoader:
    options.setdefault("jitter", 0)
    return CachedLoader(cache, clock=clock, **options)


def never() -> JSONValue:
    raise AssertionError("the loader must not be called")


class Blocking:
    """A loader that signals when it starts and returns ``value`` once released."""

    def __init__(self, value: JSONValue) -> None:
        self.value = value
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def __call__(self) -> JSONValue:
        self.calls += 1
        self.started.set()
        assert self.release.wait(10)
        return self.value


class InThread:
    """Run ``get_or_compute`` in a thread; ``result()`` joins and returns or re-raises."""

    def __init__(self, loader: CachedLoader, key: str, fn: Callable[[], JSONValue]) -> None:
        self.outcome: list[Any] = []
        self.thread = threading.Thread(target=self._run, args=(loader, key, fn))
        self.thread.start()

    def _run(self, loader: CachedLoader, key: str, fn: Callable[[], JSONValue]) -> None:
        try:
            self.outcome.append(("ok", loader.get_or_compute(key, fn)))
        except Exception as exc:
            self.outcome.append(("raised", exc))

    def result(self) -> JSONValue:
        self.thread.join(10)
        assert not self.thread.is_alive()
        kind, value = self.outcome[0]
        if kind == "raised":
            raise value
        return value  # type: ignore[no-any-return]


def lease_record(cache: Cache, key: str) -> JSONValue | NoValue:
    found = cache.gets(_LEASE_PREFIX + key)
    return NO_VALUE if found is NO_VALUE else found[0]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def cache(clock: ManualClock) -> MemoryCache:
    return MemoryCache(clock=clock)


# -- fresh, stale, gone ----------------------------------------------------------------------


def test_a_fresh_value_is_served_without_loading(cache: Cache, clock: ManualClock) -> None:
    loader = loader_over(cache, clock, ttl=60)
    assert loader.get_or_compute("k", lambda: {"n": 1}) == {"n": 1}
    assert loader.get_or_compute("k", never) == {"n": 1}
    assert loader.stats.snapshot() == {"hits": 1, "misses": 1, "stale": 0, "loads": 1, "errors": 0}
    assert cache.get("k") == {"v": {"n": 1}, "fresh_until": None, "fence": 1}


def test_fresh_until_soft_ttl_then_refreshed_by_the_caller(
    cache: Cache, clock: ManualClock
) -> None:
    loader = loader_over(cache, clock, ttl=10, soft_ttl=2)
    assert loader.get_or_compute("k", lambda: "v1") == "v1"
    clock.advance(1.9)
    assert loader.get_or_compute("k", never) == "v1"
    clock.advance(0.2)
    # Stale, and nobody else holds the lease: this caller refreshes inline.
    assert loader.get_or_compute("k", lambda: "v2") == "v2"
    assert loader.get_or_compute("k", never) == "v2"
    assert loader.stats.loads == 2
    assert lease_record(cache, "k") is NO_VALUE


def test_gone_after_the_hard_ttl(cache: Cache, clock: ManualClock) -> None:
    loader = loader_over(cache, clock, ttl=10, soft_ttl=2)
    loader.get_or_compute("k", lambda: "v1")
    clock.advance(10)
    assert cache.get("k") is NO_VALUE
    assert loader.get_or_compute("k", lambda: "v2") == "v2"
    assert loader.stats.misses == 2


def test_without_soft_ttl_a_value_is_fresh_until_the_hard_ttl(
    cache: Cache, clock: ManualClock
) -> None:
    loader = loader_over(cache, clock, ttl=10)
    loader.get_or_compute("k", lambda: "v1")
    clock.advance(9.5)
    assert loader.get_or_compute("k", never) == "v1"
    assert loader.stats.stale == 0


def test_without_ttl_a_value_stays_until_evicted(cache: Cache, clock: ManualClock) -> None:
    loader = loader_over(cache, clock, ttl=None)
    loader.get_or_compute("k", lambda: "v1")
    clock.advance(10**7)
    assert loader.get_or_compute("k", never) == "v1"


def test_other_processes_get_the_stale_value_while_one_refreshes(
    cache: Cache, clock: ManualClock
) -> None:
    first = loader_over(cache, clock, ttl=60, soft_ttl=5)
    second = loader_over(cache, clock, ttl=60, soft_ttl=5)
    first.get_or_compute("k", lambda: "old")
    clock.advance(6)
    refresh = Blocking("new")
    refreshing = InThread(first, "k", refresh)
    try:
        assert refresh.started.wait(10)
        assert first.get_or_compute("k", never) == "old"  # same process: single flight
        assert second.get_or_compute("k", never) == "old"  # other process: the lease
        assert second.get_or_compute("k", never) == "old"
    finally:
        refresh.release.set()
    assert refreshing.result() == "new"
    assert second.get_or_compute("k", never) == "new"
    assert first.stats.stale == 1
    assert second.stats.stale == 2
    assert second.stats.loads == 0


# -- leases ----------------------------------------------------------------------------------


class SteppingClock(ManualClock):
    """A ManualClock whose sleep also yields for real, so other threads run meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.slept = threading.Event()

    def sleep(self, seconds: float) -> None:
        self.slept.set()
        time.sleep(0.002)
        self.advance(seconds)


def test_a_miss_waits_for_the_lease_holder_in_another_process() -> None:
    clock = SteppingClock()
    cache = MemoryCache(clock=clock)
    holder = loader_over(cache, clock, ttl=60, lock_timeout=1000)
    waiter = loader_over(cache, clock, ttl=60, lock_timeout=1000, wait=100)
    load = Blocking("from-holder")
    holding = InThread(holder, "k", load)
    try:
        assert load.started.wait(10)
        assert lease_record(cache, "k") is not NO_VALUE
        waiting = InThread(waiter, "k", never)
        assert clock.slept.wait(10)  # the waiter is polling
    finally:
        load.release.set()
    assert holding.result() == "from-holder"
    assert waiting.result() == "from-holder"
    assert waiter.stats.loads == 0
    assert waiter.stats.misses == 1


def test_a_waiter_loads_itself_after_wait_and_the_slow_holder_cannot_clobber_it(
    cache: Cache, clock: ManualClock
) -> None:
    holder = loader_over(cache, clock, ttl=60, lock_timeout=30)
    waiter = loader_over(cache, clock, ttl=60, lock_timeout=30, wait=2)
    load = Blocking("from-holder")
    holding = InThread(holder, "k", load)
    try:
        assert load.started.wait(10)
        assert waiter.get_or_compute("k", lambda: "from-waiter") == "from-waiter"
        assert clock.now() - 1_700_000_000.0 == pytest.approx(2)  # waited, bounded
    finally:
        load.release.set()
    assert holding.result() == "from-holder"  # its caller still gets what it loaded
    assert cache.get("k") == {"v": "from-waiter", "fresh_until": None, "fence": 2}
    assert lease_record(cache, "k") is NO_VALUE


def test_a_waiter_takes_the_lease_when_the_holder_gives_up(
    cache: Cache, clock: ManualClock
) -> None:
    cache.add(_LEASE_PREFIX + "k", {"owner": "crashed", "fence": 0}, ttl=3)
    loader = loader_over(cache, clock, ttl=60, lock_timeout=30, wait=100, poll_interval=1)
    assert loader.get_or_compute("k", lambda: "mine") == "mine"
    assert clock.now() - 1_700_000_000.0 == pytest.approx(3)  # until the lease expired
    assert loader.stats.loads == 1


def test_a_stalled_holder_past_its_lease_does_not_overwrite_the_newer_value(
    cache: Cache, clock: ManualClock
) -> None:
    stalled = loader_over(cache, clock, ttl=60, lock_timeout=10)
    newer = loader_over(cache, clock, ttl=60, lock_timeout=10)
    load = Blocking("old")
    stalling = InThread(stalled, "k", load)
    try:
        assert load.started.wait(10)
        clock.advance(11)  # the stalled holder's lease expires
        assert newer.get_or_compute("k", lambda: "new") == "new"
    finally:
        load.release.set()
    assert stalling.result() == "old"
    assert cache.get("k") == {"v": "new", "fresh_until": None, "fence": 2}
    assert newer.get_or_compute("k", never) == "new"


def test_a_stalled_refresh_does_not_overwrite_a_newer_refresh(
    cache: Cache, clock: ManualClock
) -> None:
    stalled = loader_over(cache, clock, ttl=600, soft_ttl=5, lock_timeout=10)
    newer = loader_over(cache, clock, ttl=600, soft_ttl=5, lock_timeout=10)
    stalled.get_or_compute("k", lambda: "v1")
    clock.advance(6)
    load = Blocking("v2-late")
    stalling = InThread(stalled, "k", load)
    try:
        assert load.started.wait(10)
        clock.advance(11)
        assert newer.get_or_compute("k", lambda: "v3") == "v3"
    finally:
        load.release.set()
    assert stalling.result() == "v2-late"
    stored = cache.get("k")
    assert isinstance(stored, dict)
    assert stored["v"] == "v3"


def test_release_never_deletes_a_successors_lease(cache: Cache, clock: ManualClock) -> None:
    first = loader_over(cache, clock, ttl=60, lock_timeout=10)
    second = loader_over(cache, clock, ttl=60, lock_timeout=10)
    first_load, second_load = Blocking("first"), Blocking("second")
    first_call = InThread(first, "k", first_load)
    try:
        assert first_load.started.wait(10)
        clock.advance(11)
        second_call = InThread(second, "k", second_load)
        try:
            assert second_load.started.wait(10)
            successor = lease_record(cache, "k")
            first_load.release.set()
            assert first_call.result() == "first"
            assert lease_record(cache, "k") == successor  # still the successor's
            assert isinstance(successor, dict)
            assert successor["fence"] == 2
        finally:
            second_load.release.set()
        assert second_call.result() == "second"
    finally:
        first_load.release.set()
    assert lease_record(cache, "k") is NO_VALUE
    stored = cache.get("k")
    assert isinstance(stored, dict)
    assert stored["v"] == "second"  # the higher fence wins, whoever wrote first


def test_an_evicted_fence_counter_is_moved_past_the_stored_fence(
    cache: Cache, clock: ManualClock
) -> None:
    loader = loader_over(cache, clock, ttl=600, soft_ttl=5)
    for n in range(3):
        loader.invalidate("k")
        loader.get_or_compute("k", functools.partial(int, n))
    stored = cache.get("k")
    assert isinstance(stored, dict)
    assert stored["fence"] == 6
    cache.delete(_FENCE_PREFIX + "k")  # evicted, while the entry survives
    clock.advance(6)
    assert loader.get_or_compute("k", lambda: "refreshed") == "refreshed"
    stored = cache.get("k")
    assert isinstance(stored, dict)
    assert stored["v"] == "refreshed"
    fence = stored["fence"]
    assert isinstance(fence, int)
    assert fence > 6


# -- failures of the loader ------------------------------------------------------------------


def test_a_loader_exception_propagates_is_not_cached_and_frees_the_lease(
    cache: Cache, clock: ManualClock
) -> None:
    loader = loader_over(cache, clock, ttl=60)

    def broken() -> JSONValue:
        raise ConnectionResetError("database went away")

    with pytest.raises(ConnectionResetError):
        loader.get_or_compute("k", broken)
    assert cache.get("k") is NO_VALUE
    assert lease_record(cache, "k") is NO_VALUE
    assert loader.get_or_compute("k", lambda: "recovered") == "recovered"


def test_a_failed_refresh_keeps_the_stale_value(cache: Cache, clock: ManualClock) -> None:
    loader = loader_over(cache, clock, ttl=60, soft_ttl=5)
    loader.get_or_compute("k", lambda: "old")
    clock.advance(6)

    def broken() -> JSONValue:
        raise TimeoutError("slow database")

    with pytest.raises(TimeoutError):
        loader.get_or_compute("k", broken)
    assert lease_record(cache, "k") is NO_VALUE
    other = loader_over(cache, clock, ttl=60, soft_ttl=5)
    assert other.get_or_compute("k", lambda: "new") == "new"  # the next caller refreshes


def test_single_flight_followers_share_the_loader_exception(
    cache: Cache, clock: ManualClock
) -> None:
    loader = loader_over(cache, clock, ttl=60)
    barrier = threading.Barrier(5)
    raised: list[BaseException] = []

    def broken() -> JSONValue:
        time.sleep(0.2)
        raise LookupError("no such user")

    def ask() -> None:
        barrier.wait()
        try:
            loader.get_or_compute("k", broken)
        except LookupError as exc:
            raised.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(raised) == 5
    assert loader.stats.loads == 1
    assert cache.get("k") is NO_VALUE


def test_a_result_that_is_not_json_is_refused_and_frees_the_lease(
    cache: Cache, clock: ManualClock
) -> None:
    loader = loader_over(cache, clock, ttl=60)
    with pytest.raises(InvalidInput):
        loader.get_or_compute("k", lambda: {1, 2})  # type: ignore[arg-type,return-value]
    assert lease_record(cache, "k") is NO_VALUE
    assert cache.get("k") is NO_VALUE


# -- races between reading and refreshing ---------------------------------------------------


class HookedCache(MemoryCache):
    """Runs ``hook`` once, right after the first ``get`` of ``key`` returns."""

    def __init__(self, key: str, **options: Any) -> None:
        super().__init__(**options)
        self.key = key
        self.hook: Callable[[], None] | None = None

    def get(self, key: str) -> JSONValue | NoValue:
        found = super().get(key)
        if key == self.key and self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return found


def test_a_value_refreshed_by_another_process_meanwhile_is_not_loaded_again(
    clock: ManualClock,
) -> None:
    cache = HookedCache("k", clock=clock)
    this, other = (loader_over(cache, clock, ttl=60, soft_ttl=5) for _ in range(2))
    this.get_or_compute("k", lambda: "old")
    clock.advance(6)
    cache.hook = lambda: other.get_or_compute("k", lambda: "new")  # it saw the stale value
    assert this.get_or_compute("k", never) == "new"
    assert this.stats.hits == 1
    assert other.stats.loads == 1


def test_a_value_invalidated_meanwhile_is_loaded_not_served_stale(clock: ManualClock) -> None:
    cache = HookedCache("k", clock=clock)
    this, other = (loader_over(cache, clock, ttl=60, soft_ttl=5) for _ in range(2))
    this.get_or_compute("k", lambda: "old")
    clock.advance(6)
    cache.hook = lambda: other.invalidate("k")
    assert this.get_or_compute("k", lambda: "reloaded") == "reloaded"


def test_a_value_stored_by_another_process_meanwhile_is_served(clock: ManualClock) -> None:
    cache = HookedCache("k", clock=clock)
    this, other = (loader_over(cache, clock, ttl=60) for _ in range(2))
    cache.hook = lambda: other.get_or_compute("k", lambda: "theirs")  # it saw a miss
    assert this.get_or_compute("k", never) == "theirs"
    assert this.stats.hits == 1


@pytest.mark.parametrize("raw", ["plain", 7, None, {"v": 1}, {"v": 1, "fence": "2"}, [1]])
def test_an_entry_that_is_not_an_envelope_is_a_miss_and_is_replaced(
    cache: Cache, clock: ManualClock, raw: JSONValue
) -> None:
    cache.set("k", raw)
    cache.set("bad-time", {"v": 1, "fence": 1, "fresh_until": "soon"})
    loader = loader_over(cache, clock, ttl=60)
    assert loader.get_or_compute("k", lambda: "loaded") == "loaded"
    assert loader.get_or_compute("k", never) == "loaded"
    assert loader.get_or_compute("bad-time", lambda: "loaded") == "loaded"


# -- the cache is down -----------------------------------------------------------------------


class DownCache(Cache):
    """A cache whose server is unreachable: data operations miss, coordination raises."""

    def get(self, key: str) -> JSONValue | NoValue:
        self.stats.add(misses=1, errors=1)
        return NO_VALUE

    def get_many(self, keys: Iterable[str]) -> dict[str, JSONValue]:
        self.stats.add(errors=1)
        return {}

    def set(self, key: str, value: JSONValue, ttl: float | None = None) -> None:
        self.stats.add(errors=1)

    def set_many(self, items: Mapping[str, JSONValue], ttl: float | None = None) -> None:
        self.stats.add(errors=1)

    def delete(self, key: str) -> None:
        self.stats.add(errors=1)

    def add(self, key: str, value: JSONValue, ttl: float | None = None) -> bool:
        raise BackendUnavailable("cache is down")

    def incr(self, key: str, delta: int = 1, ttl: float | None = None) -> int:
        raise BackendUnavailable("cache is down")

    def gets(self, key: str) -> tuple[JSONValue, CasToken] | NoValue:
        raise BackendUnavailable("cache is down")

    def cas(self, key: str, value: JSONValue, token: CasToken, ttl: float | None = None) -> bool:
        raise BackendUnavailable("cache is down")

    def delete_if(self, key: str, token: CasToken) -> bool:
        raise BackendUnavailable("cache is down")


def test_a_cache_that_is_down_means_loading_never_an_error(clock: ManualClock) -> None:
    loader = loader_over(DownCache(), clock, ttl=60, soft_ttl=5)
    assert loader.get_or_compute("k", lambda: "v1") == "v1"
    assert loader.get_or_compute("k", lambda: "v2") == "v2"  # nothing was kept
    loader.invalidate("k")
    assert loader.stats.loads == 2
    assert loader.stats.errors >= 2


def test_a_cache_that_is_down_still_loads_once_per_key_in_this_process(
    clock: ManualClock,
) -> None:
    loader = loader_over(DownCache(), clock, ttl=60)
    barrier = threading.Barrier(10)
    results: list[JSONValue] = []

    def slow() -> JSONValue:
        time.sleep(0.2)
        return "value"

    def ask() -> None:
        barrier.wait()
        results.append(loader.get_or_compute("k", slow))

    threads = [threading.Thread(target=ask) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == ["value"] * 10
    assert loader.stats.loads == 1


class RaisingCache(DownCache):
    """An adapter that breaks the port: even its data operations raise when down."""

    def get(self, key: str) -> JSONValue | NoValue:
        raise BackendUnavailable("cache is down")

    def set(self, key: str, value: JSONValue, ttl: float | None = None) -> None:
        raise BackendUnavailable("cache is down")

    def delete(self, key: str) -> None:
        raise BackendUnavailable("cache is down")


def test_even_an_adapter_that_raises_on_data_operations_is_survived(
    clock: ManualClock,
) -> None:
    loader = loader_over(RaisingCache(), clock, ttl=60)
    assert loader.get_or_compute("k", lambda: "v") == "v"
    loader.invalidate("k")
    assert loader.stats.errors >= 3


class NoCoordinationCache(MemoryCache):
    """Data operations work; the coordination operations fail (one server of several down)."""

    def add(self, key: str, value: JSONValue, ttl: float | None = None) -> bool:
        raise BackendUnavailable("lease server is down")

    def incr(self, key: str, delta: int = 1, ttl: float | None = None) -> int:
        raise BackendUnavailable("lease server is down")

    def gets(self, key: str) -> tuple[JSONValue, CasToken] | NoValue:
        raise BackendUnavailable("lease server is down")


def test_without_coordination_values_are_still_stored_best_effort(clock: ManualClock) -> None:
    cache = NoCoordinationCache(clock=clock)
    loader = loader_over(cache, clock, ttl=60, soft_ttl=5)
    assert loader.get_or_compute("k", lambda: "v1") == "v1"
    assert loader.get_or_compute("k", never) == "v1"
    clock.advance(6)
    assert loader.get_or_compute("k", lambda: "v2") == "v2"  # stale: refreshed unfenced
    assert loader.get_or_compute("k", never) == "v2"
    loader.invalidate("k")
    assert cache.get("k") is NO_VALUE


# -- invalidation ----------------------------------------------------------------------------


def test_invalidate_makes_the_next_call_load(cache: Cache, clock: ManualClock) -> None:
    loader = loader_over(cache, clock, ttl=60)
    loader.invalidate("never-cached")
    loader.get_or_compute("k", lambda: "v1")
    loader.invalidate("k")
    loader.invalidate("k")
    assert loader.get_or_compute("k", lambda: "v2") == "v2"
    assert loader.get_or_compute("k", never) == "v2"


def test_a_load_that_began_before_invalidate_is_not_stored(
    cache: Cache, clock: ManualClock
) -> None:
    loader = loader_over(cache, clock, ttl=60)
    other_process = loader_over(cache, clock, ttl=60)
    load = Blocking("computed-before-the-change")
    loading = InThread(loader, "k", load)
    try:
        assert load.started.wait(10)
        other_process.invalidate("k")
    finally:
        load.release.set()
    assert loading.result() == "computed-before-the-change"
    assert other_process.get_or_compute("k", lambda: "after") == "after"


# -- background refresh ----------------------------------------------------------------------


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown(wait=True)


def test_background_refresh_serves_stale_to_every_caller(
    cache: Cache, clock: ManualClock, executor: ThreadPoolExecutor
) -> None:
    loader = loader_over(cache, clock, ttl=60, soft_ttl=5, executor=executor)
    loader.get_or_compute("k", lambda: "old")
    clock.advance(6)
    load = Blocking("new")
    assert loader.get_or_compute("k", load) == "old"
    assert loader.get_or_compute("k", never) == "old"  # one refresh queued, not two
    assert load.started.wait(10)
    load.release.set()
    executor.shutdown(wait=True)
    assert loader.get_or_compute("k", never) == "new"
    assert load.calls == 1
    assert loader.stats.stale == 2


def test_a_failed_background_refresh_is_logged_and_counted(
    cache: Cache,
    clock: ManualClock,
    executor: ThreadPoolExecutor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    loader = loader_over(cache, clock, ttl=60, soft_ttl=5, executor=executor)
    loader.get_or_compute("k", lambda: "old")
    clock.advance(6)

    def broken() -> JSONValue:
        raise RuntimeError("refresh failed")

    with caplog.at_level(logging.WARNING, logger="scalecore.stampede"):
        assert loader.get_or_compute("k", broken) == "old"
        executor.shutdown(wait=True)
    assert loader.stats.errors == 1
    assert "background refresh" in caplog.text
    assert lease_record(cache, "k") is NO_VALUE
    assert loader.get_or_compute("k", never) == "old"  # still stale, still served


def test_a_shut_down_executor_still_serves_stale(cache: Cache, clock: ManualClock) -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    pool.shutdown()
    loader = loader_over(cache, clock, ttl=60, soft_ttl=5, executor=pool)
    loader.get_or_compute("k", lambda: "old")
    clock.advance(6)
    assert loader.get_or_compute("k", never) == "old"
    assert loader.get_or_compute("k", never) == "old"


# -- jitter ----------------------------------------------------------------------------------


class RecordingCache(MemoryCache):
    """Remembers the TTL of every write of an envelope."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.ttls: list[float | None] = []

    def add(self, key: str, value: JSONValue, ttl: float | None = None) -> bool:
        if isinstance(value, dict) and "v" in value:
            self.ttls.append(ttl)
        return super().add(key, value, ttl)


@settings(max_examples=60, deadline=None)
@given(
    ttl=st.floats(1, 10_000),
    soft_share=st.floats(0.01, 1),
    jitter=st.floats(0, 0.99),
    seed=st.integers(0, 2**32),
)
def test_jitter_shortens_both_ttls_by_one_factor_within_bounds(
    ttl: float, soft_share: float, jitter: float, seed: int
) -> None:
    clock = ManualClock()
    cache = RecordingCache(clock=clock)
    soft_ttl = ttl * soft_share
    loader = CachedLoader(
        cache, clock=clock, ttl=ttl, soft_ttl=soft_ttl, jitter=jitter, rng=random.Random(seed)
    )
    loader.get_or_compute("k", lambda: "v")
    (hard,) = cache.ttls
    assert hard is not None
    stored = cache.get("k")
    assert isinstance(stored, dict)
    soft = float(stored["fresh_until"]) - clock.now()  # type: ignore[arg-type]
    assert ttl * (1 - jitter) - 1e-6 <= hard <= ttl + 1e-6
    assert soft_ttl * (1 - jitter) - 1e-3 <= soft <= soft_ttl + 1e-3
    assert soft == pytest.approx(soft_ttl * hard / ttl, abs=1e-3)


def test_jitter_spreads_expiries_and_zero_jitter_does_not(clock: ManualClock) -> None:
    spread, exact = RecordingCache(clock=clock), RecordingCache(clock=clock)
    jittered = CachedLoader(spread, clock=clock, ttl=100, jitter=0.2, rng=random.Random(7))
    plain = CachedLoader(exact, clock=clock, ttl=100, jitter=0)
    for n in range(20):
        jittered.get_or_compute(f"k{n}", lambda: 1)
        plain.get_or_compute(f"k{n}", lambda: 1)
    assert len(set(spread.ttls)) > 10
    assert all(80 <= ttl <= 100 for ttl in spread.ttls)  # type: ignore[operator]
    assert set(exact.ttls) == {100}


# -- arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        {"ttl": 0},
        {"ttl": -1},
        {"ttl": "60"},
        {"soft_ttl": 0},
        {"ttl": 10, "soft_ttl": 20},
        {"lock_timeout": 0},
        {"lock_timeout": float("inf")},
        {"wait": -1},
        {"jitter": 1},
        {"jitter": -0.1},
        {"jitter": float("nan")},
        {"ttl": True},
    ],
)
def test_bad_arguments_are_refused_before_loading(
    cache: Cache, clock: ManualClock, arguments: dict[str, Any]
) -> None:
    loader = loader_over(cache, clock)
    with pytest.raises(InvalidInput):
        loader.get_or_compute("k", never, **arguments)


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"ttl": 0}, "ttl"),
        ({"ttl": 10, "soft_ttl": 20}, "soft_ttl"),
        ({"lock_timeout": -1}, "lock_timeout"),
        ({"wait": -1}, "wait"),
        ({"jitter": 2}, "jitter"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"clock": "now"}, "clock"),
    ],
)
def test_bad_options_are_config_errors_naming_the_option(
    cache: Cache, options: dict[str, Any], option: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        CachedLoader(cache, **options)
    assert raised.value.key == option


@pytest.mark.parametrize("key", ["", "\x00lease\x00k", "\x00anything", None])
def test_empty_non_text_and_reserved_keys_are_refused(
    cache: Cache, clock: ManualClock, key: Any
) -> None:
    loader = loader_over(cache, clock)
    with pytest.raises(InvalidKey):
        loader.get_or_compute(key, never)
    with pytest.raises(InvalidKey):
        loader.invalidate(key)


def test_per_call_arguments_override_the_configured_ones(cache: Cache, clock: ManualClock) -> None:
    loader = loader_over(cache, clock, ttl=10)
    loader.get_or_compute("short", lambda: 1)
    loader.get_or_compute("long", lambda: 1, ttl=100)
    loader.get_or_compute("forever", lambda: 1, ttl=None)
    clock.advance(50)
    assert cache.get("short") is NO_VALUE
    assert loader.get_or_compute("long", never) == 1
    assert loader.get_or_compute("forever", never) == 1
