"""The Cache contract: every adapter keeps the promises of ``scalecore.ports.cache.Cache``.

Each entry of :data:`CACHE_FACTORIES` turns a pytest request into a :class:`CacheHarness`:

* ``make()`` builds a new cache instance over the same backing store (a second process's
  view: a SHARED adapter's instances see each other's writes), isolated from other tests;
* ``advance(seconds)`` moves that backend's time (a ManualClock for in-process adapters; a
  real server's entry sleeps, so TTL tests are few and use TTLs of 1-2 s);
* ``clock`` is the clock a ``CachedLoader`` over that cache should use.

The suite is written against the port and the declared capabilities only. ``get_or_compute``
(``scalecore.stampede``) runs through it too, since its leases rest on the adapter's
``add``/``incr``/``gets``/``cas``/``delete_if``.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from adapters.cache.memcached import MemcachedCache
from adapters.cache.memory import MemoryCache
from adapters.cache.twotier import TwoTierCache
from scalecore.capabilities import Capability
from scalecore.clock import Clock, ManualClock, SystemClock
from scalecore.errors import ConfigError, InvalidInput, InvalidKey
from scalecore.keys import MAX_CACHE_KEY_BYTES
from scalecore.ports.cache import NO_VALUE, Cache
from scalecore.stampede import CachedLoader
from scalecore.types import JSONValue

# -- harness -------------------------------------------------------------------------------


@attrs.frozen
class CacheHarness:
    """How the suite builds caches of one adapter and moves their time."""

    make: Callable[[], Cache]
    advance: Callable[[float], None]
    clock: Clock


def _memory(request: pytest.FixtureRequest) -> CacheHarness:
    clock = ManualClock()
    return CacheHarness(make=lambda: MemoryCache(clock=clock), advance=clock.advance, clock=clock)


def _server_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Options for a cache on the shared test memcached servers, private to this test.

    A unique namespace keeps tests (and runs) apart; ``default_ttl`` makes everything a
    test leaves behind expire on its own, since memcached cannot delete by prefix.
    """
    servers: list[str] = request.getfixturevalue("memcached_servers")
    return {
        "servers": servers,
        "namespace": f"t{uuid.uuid4().hex[:16]}:",
        "default_ttl": 600,
        "clock": SystemClock(),
    }


def _memcached(request: pytest.FixtureRequest) -> CacheHarness:
    options = _server_options(request)
    return CacheHarness(
        make=lambda: MemcachedCache(**options), advance=time.sleep, clock=options["clock"]
    )


def _twotier(request: pytest.FixtureRequest) -> CacheHarness:
    options = _server_options(request)
    return CacheHarness(
        make=lambda: TwoTierCache(**options), advance=time.sleep, clock=options["clock"]
    )


#: adapter id -> harness factory. Real-server adapters add entries here.
CACHE_FACTORIES: dict[str, Callable[[pytest.FixtureRequest], CacheHarness]] = {
    "memory": _memory,
    "memcached": _memcached,
    "twotier": _twotier,
}
#: Entries that talk to a real server.
INTEGRATION = frozenset({"memcached", "twotier"})


@pytest.fixture(
    params=[
        pytest.param(name, marks=[pytest.mark.integration] if name in INTEGRATION else [])
        for name in CACHE_FACTORIES
    ]
)
def harness(request: pytest.FixtureRequest) -> CacheHarness:
    """The harness of one cache adapter (the test runs once per adapter)."""
    return CACHE_FACTORIES[request.param](request)


@pytest.fixture
def make_cache(harness: CacheHarness) -> Iterator[Callable[[], Cache]]:
    """Build another instance over the same backing store; all are closed after the test."""
    made: list[Cache] = []

    def make() -> Cache:
        cache = harness.make()
        made.append(cache)
        return cache

    yield make
    for cache in made:
        cache.close()


@pytest.fixture
def cache(make_cache: Callable[[], Cache]) -> Cache:
    """A fresh cache of the adapter under test."""
    return make_cache()


@pytest.fixture
def advance(harness: CacheHarness) -> Callable[[float], None]:
    """Move the adapter's time forward by that many seconds."""
    return harness.advance


@pytest.fixture
def clock(harness: CacheHarness) -> Clock:
    """The clock a CachedLoader over this adapter should use."""
    return harness.clock


# Hypothesis reuses one function-scoped cache across examples; every example writes the
# keys it reads, so no example depends on another's leftovers.
FIXTURE_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

AWKWARD_KEYS = [
    "plain",
    "with space",
    "tab\tand\nnewline",
    "\x00nul\x7f",
    "ünïcödé ключ 键",
    "🙂",
    "#starts-with-hash",
    "k" * (MAX_CACHE_KEY_BYTES + 1),
    "x" * 10_000,
    "a" * 64,  # looks like a digest
]


def _key() -> str:
    return f"k-{uuid.uuid4().hex}"


# -- get / set / delete ----------------------------------------------------------------------


def test_a_missing_key_is_no_value(cache: Cache) -> None:
    assert cache.get(_key()) is NO_VALUE
    assert cache.gets(_key()) is NO_VALUE
    assert cache.get_many([_key(), _key()]) == {}


@FIXTURE_SETTINGS
@given(value=json_values)
def test_a_set_value_comes_back_equal(cache: Cache, value: JSONValue) -> None:
    cache.set("round-trip", value)
    assert cache.get("round-trip") == value


def test_a_cached_none_is_a_hit_not_a_miss(cache: Cache) -> None:
    cache.set("none", None)
    assert cache.get("none") is None
    assert cache.get("none") is not NO_VALUE
    assert cache.get_many(["none"]) == {"none": None}
    found = cache.gets("none")
    assert found is not NO_VALUE
    assert found[0] is None
    assert cache.add("none", "other") is False


def test_set_overwrites(cache: Cache) -> None:
    cache.set("k", "one")
    cache.set("k", {"two": [2]})
    assert cache.get("k") == {"two": [2]}


def test_delete_removes_and_is_idempotent(cache: Cache) -> None:
    cache.set("k", 1)
    cache.delete("k")
    assert cache.get("k") is NO_VALUE
    cache.delete("k")
    cache.delete("never-set")
    assert cache.get("k") is NO_VALUE


def test_values_are_copies_never_shared_with_the_caller(cache: Cache) -> None:
    value: dict[str, Any] = {"list": [1, 2]}
    cache.set("k", value)
    value["list"].append(3)
    got = cache.get("k")
    assert got == {"list": [1, 2]}
    assert isinstance(got, dict)
    got["list"] = "changed"
    assert cache.get("k") == {"list": [1, 2]}


def test_get_many_returns_the_hits_under_the_callers_keys(cache: Cache) -> None:
    cache.set("a b", 1)
    cache.set("ü", None)
    found = cache.get_many(["a b", "missing", "ü", "a b"])
    assert found == {"a b": 1, "ü": None}


def test_set_many_stores_every_item(cache: Cache) -> None:
    cache.set_many({"one": 1, "two": [2], "three": None})
    assert cache.get_many(["one", "two", "three"]) == {"one": 1, "two": [2], "three": None}


# -- add / incr / gets / cas / delete_if -----------------------------------------------------


def test_add_stores_only_when_absent(cache: Cache) -> None:
    assert cache.add("k", "first") is True
    assert cache.add("k", "second") is False
    assert cache.get("k") == "first"
    cache.delete("k")
    assert cache.add("k", "third") is True
    assert cache.get("k") == "third"


def test_concurrent_add_has_exactly_one_winner(cache: Cache) -> None:
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def contend(n: int) -> None:
        barrier.wait()
        wins.append(cache.add("lease", {"owner": n}))

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False] * 7 + [True]


def test_incr_counts_from_zero_and_reads_back_as_an_int(cache: Cache) -> None:
    assert cache.incr("n") == 1
    assert cache.incr("n") == 2
    assert cache.incr("n", 5) == 7
    assert cache.get("n") == 7
    cache.set("m", 10)
    assert cache.incr("m") == 11


def test_incr_refuses_a_value_that_is_not_an_integer(cache: Cache) -> None:
    cache.set("text", "abc")
    with pytest.raises(InvalidInput):
        cache.incr("text")
    assert cache.get("text") == "abc"


@pytest.mark.parametrize("delta", [1.5, "1", True, None])
def test_incr_refuses_a_delta_that_is_not_an_integer(cache: Cache, delta: Any) -> None:
    cache.set("n", 1)
    with pytest.raises(InvalidInput):
        cache.incr("n", delta)
    assert cache.get("n") == 1


def test_concurrent_incr_gives_unique_values(cache: Cache) -> None:
    results: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def bump() -> None:
        barrier.wait()
        mine = [cache.incr("fence") for _ in range(40)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(1, 321))


def test_cas_writes_only_with_the_current_token(cache: Cache) -> None:
    cache.set("k", "v1")
    found = cache.gets("k")
    assert found is not NO_VALUE
    value, token = found
    assert value == "v1"
    assert cache.cas("k", "v2", token) is True
    assert cache.get("k") == "v2"
    assert cache.cas("k", "v3", token) is False  # the cas itself changed the token
    assert cache.get("k") == "v2"


def test_every_write_changes_the_token(cache: Cache) -> None:
    cache.set("k", "same")
    first = cache.gets("k")
    assert first is not NO_VALUE
    cache.set("k", "same")  # an identical value is still a new write
    assert cache.cas("k", "x", first[1]) is False
    second = cache.gets("k")
    assert second is not NO_VALUE
    cache.delete("k")
    cache.set("k", "x")  # deleted and re-created: an old token must not match (ABA)
    assert cache.cas("k", "y", second[1]) is False
    cache.incr("n")
    counter = cache.gets("n")
    assert counter is not NO_VALUE
    cache.incr("n")
    assert cache.delete_if("n", counter[1]) is False
    assert cache.get("n") == 2


def test_cas_on_a_missing_key_fails(cache: Cache) -> None:
    cache.set("k", 1)
    found = cache.gets("k")
    assert found is not NO_VALUE
    cache.delete("k")
    assert cache.cas("k", 2, found[1]) is False
    assert cache.get("k") is NO_VALUE


def test_delete_if_deletes_only_the_unchanged_entry(cache: Cache) -> None:
    cache.add("lease", {"owner": "a"})
    mine = cache.gets("lease")
    assert mine is not NO_VALUE
    cache.set("lease", {"owner": "b"})  # taken over by a successor
    assert cache.delete_if("lease", mine[1]) is False
    assert cache.get("lease") == {"owner": "b"}
    theirs = cache.gets("lease")
    assert theirs is not NO_VALUE
    assert cache.delete_if("lease", theirs[1]) is True
    assert cache.get("lease") is NO_VALUE
    assert cache.delete_if("lease", theirs[1]) is False


# -- refusals --------------------------------------------------------------------------------


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


NOT_JSON = [
    pytest.param(object(), id="object"),
    pytest.param({1, 2}, id="set"),
    pytest.param(b"bytes", id="bytes"),
    pytest.param((1, 2), id="tuple"),
    pytest.param(float("nan"), id="nan"),
    pytest.param(math.inf, id="inf"),
    pytest.param({1: "int key"}, id="int-key"),
    pytest.param({"deep": [1, {"x": object()}]}, id="nested"),
    pytest.param(_nested(100_000), id="too-deep"),
]


@pytest.mark.parametrize("value", NOT_JSON)
def test_values_that_are_not_json_are_refused_and_nothing_is_stored(
    cache: Cache, value: Any
) -> None:
    cache.set("k", "before")
    cache.set("m", "before")
    found = cache.gets("k")
    assert found is not NO_VALUE
    with pytest.raises(InvalidInput):
        cache.set("k", value)
    with pytest.raises(InvalidInput):
        cache.add("absent", value)
    with pytest.raises(InvalidInput):
        cache.cas("k", value, found[1])
    with pytest.raises(InvalidInput):
        cache.set_many({"m": "after", "n": value})
    assert cache.get_many(["k", "m", "n", "absent"]) == {"k": "before", "m": "before"}


@pytest.mark.parametrize("ttl", [0, -1, math.nan, math.inf, "5", True])
def test_ttls_that_are_not_positive_seconds_are_refused(cache: Cache, ttl: Any) -> None:
    # memcached reads 0 as "never expire": a 0 must not mean that on one backend only.
    with pytest.raises(InvalidInput):
        cache.set("k", 1, ttl)
    with pytest.raises(InvalidInput):
        cache.add("k", 1, ttl)
    assert cache.get("k") is NO_VALUE


@pytest.mark.parametrize("key", ["", None, 5, b"bytes"])
def test_keys_that_are_not_text_are_refused(cache: Cache, key: Any) -> None:
    with pytest.raises(InvalidKey):
        cache.get(key)
    with pytest.raises(InvalidKey):
        cache.set(key, 1)


# -- keys ------------------------------------------------------------------------------------


def test_awkward_keys_work_and_stay_apart(cache: Cache) -> None:
    for index, key in enumerate(AWKWARD_KEYS):
        cache.set(key, index)
    for index, key in enumerate(AWKWARD_KEYS):
        assert cache.get(key) == index
        assert cache.add(key, "again") is False
    assert cache.get_many(AWKWARD_KEYS) == {key: i for i, key in enumerate(AWKWARD_KEYS)}
    for key in AWKWARD_KEYS:
        cache.delete(key)
        assert cache.get(key) is NO_VALUE


@FIXTURE_SETTINGS
@given(
    first=st.text(min_size=1) | st.text(min_size=190, max_size=400),
    second=st.text(min_size=1) | st.text(min_size=190, max_size=400),
)
def test_any_two_different_keys_never_share_an_entry(cache: Cache, first: str, second: str) -> None:
    cache.set(first, "first")
    cache.set(second, "second")
    if first == second:
        assert cache.get(first) == "second"
    else:
        assert cache.get(first) == "first"
        assert cache.get(second) == "second"


# -- TTLs ------------------------------------------------------------------------------------


def test_entries_expire_after_their_ttl(cache: Cache, advance: Callable[[float], None]) -> None:
    cache.set("set", "v", ttl=2)
    assert cache.add("added", "v", ttl=2) is True
    assert cache.incr("counted", 1, ttl=2) == 1
    cache.set("kept", "v")
    cache.set("longer", "v", ttl=60)
    assert cache.get_many(["set", "added", "counted"]) == {"set": "v", "added": "v", "counted": 1}
    token = cache.gets("set")
    assert token is not NO_VALUE

    advance(3)

    for key in ("set", "added", "counted"):
        assert cache.get(key) is NO_VALUE
        assert cache.gets(key) is NO_VALUE
    assert cache.get_many(["set", "added", "counted", "kept", "longer"]) == {
        "kept": "v",
        "longer": "v",
    }
    assert cache.cas("set", "late", token[1]) is False
    assert cache.delete_if("set", token[1]) is False
    assert cache.add("added", "again") is True
    assert cache.incr("counted") == 1


# -- counters and capabilities ---------------------------------------------------------------


def test_hit_and_miss_counters_move(cache: Cache) -> None:
    before = cache.stats.snapshot()
    cache.set("k", None)
    cache.get("k")
    cache.get("absent")
    cache.get_many(["k", "absent", "also-absent"])
    after = cache.stats.snapshot()
    assert after["hits"] - before["hits"] == 2
    assert after["misses"] - before["misses"] == 3


def test_only_cache_capabilities_are_declared(cache: Cache) -> None:
    assert cache.capabilities <= {Capability.SHARED}


def test_two_instances_share_entries_iff_shared_is_declared(
    make_cache: Callable[[], Cache],
) -> None:
    first, second = make_cache(), make_cache()
    key = _key()
    first.set(key, "written by the first")
    assert second.add(f"{key}-added", 1) is True
    if Capability.SHARED in first.capabilities:
        assert second.get(key) == "written by the first"
        assert first.get(f"{key}-added") == 1
        assert first.incr(f"{key}-n") == 1
        assert second.incr(f"{key}-n") == 2
    else:
        assert second.get(key) is NO_VALUE
        assert first.get(f"{key}-added") is NO_VALUE
        assert first.incr(f"{key}-n") == 1
        assert second.incr(f"{key}-n") == 1


def test_ping_and_close_succeed_on_a_working_cache(make_cache: Callable[[], Cache]) -> None:
    cache = make_cache()
    cache.ping()
    cache.close()
    cache.close()  # idempotent


def test_create_schema_is_idempotent_and_the_cache_works_after_it(
    make_cache: Callable[[], Cache],
) -> None:
    """``create_schema()`` says whether the backend keeps tables, the same each time, and
    leaves a working cache (``db init`` and the library entry call it on every start)."""
    cache = make_cache()
    first = cache.create_schema()
    assert isinstance(first, bool)
    assert cache.create_schema() is first
    cache.ping()


# -- stateful: the cache behaves like a dict (no TTLs, nothing evicted at this size) ---------

MODEL_KEYS = st.sampled_from(["a", "b c", "\x01", "ü", "#h", "z" * 300])
MODEL_VALUES = st.none() | st.integers(-5, 5) | st.text(max_size=5) | st.lists(st.booleans())


def test_the_cache_behaves_like_a_dict(make_cache: Callable[[], Cache]) -> None:
    class CacheAgainstDict(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.cache = make_cache()
            # A fresh prefix per run, so runs against a shared server never meet.
            self.prefix = uuid.uuid4().hex + ":"
            self.model: dict[str, JSONValue] = {}

        @rule(key=MODEL_KEYS, value=MODEL_VALUES)
        def set(self, key: str, value: JSONValue) -> None:
            self.cache.set(self.prefix + key, value)
            self.model[key] = value

        @rule(key=MODEL_KEYS)
        def get(self, key: str) -> None:
            expected = self.model.get(key, NO_VALUE)
            assert self.cache.get(self.prefix + key) == expected

        @rule(key=MODEL_KEYS)
        def delete(self, key: str) -> None:
            self.cache.delete(self.prefix + key)
            self.model.pop(key, None)

        @rule(key=MODEL_KEYS, value=MODEL_VALUES)
        def add(self, key: str, value: JSONValue) -> None:
            stored = self.cache.add(self.prefix + key, value)
            assert stored == (key not in self.model)
            if stored:
                self.model[key] = value

        @rule(key=MODEL_KEYS, value=MODEL_VALUES)
        def gets_then_cas(self, key: str, value: JSONValue) -> None:
            found = self.cache.gets(self.prefix + key)
            if key not in self.model:
                assert found is NO_VALUE
                return
            assert found is not NO_VALUE
            assert found[0] == self.model[key]
            assert self.cache.cas(self.prefix + key, value, found[1]) is True
            self.model[key] = value
            assert self.cache.cas(self.prefix + key, "stale", found[1]) is False

        @invariant()
        def get_many_agrees(self) -> None:
            keys = [self.prefix + key for key in self.model]
            found = self.cache.get_many(keys)
            assert found == {self.prefix + key: value for key, value in self.model.items()}

    run_state_machine_as_test(
        CacheAgainstDict,
        settings=settings(max_examples=25, stateful_step_count=20, deadline=None),
    )


# -- get_or_compute over every adapter -------------------------------------------------------


def _loader_over(cache: Cache, clock: Clock, **options: Any) -> CachedLoader:
    options.setdefault("jitter", 0)
    return CachedLoader(cache, clock=clock, **options)


def _fail() -> JSONValue:
    raise AssertionError("the loader must not be called")


def test_get_or_compute_loads_once_for_many_threads_on_a_miss(cache: Cache, clock: Clock) -> None:
    loader = _loader_over(cache, clock, ttl=30)
    calls: list[int] = []
    results: list[JSONValue] = []
    barrier = threading.Barrier(20)

    def load() -> JSONValue:
        calls.append(1)
        time.sleep(0.1)  # keep the call in flight while the other threads arrive
        return {"profile": 42}

    def ask() -> None:
        barrier.wait()
        results.append(loader.get_or_compute("profile:42", load))

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert results == [{"profile": 42}] * 20
    assert loader.stats.loads == 1
    assert loader.get_or_compute("profile:42", _fail) == {"profile": 42}


def test_get_or_compute_loads_once_across_instances_iff_shared(
    make_cache: Callable[[], Cache], clock: Clock
) -> None:
    first = _loader_over(make_cache(), clock, ttl=30)
    second = _loader_over(make_cache(), clock, ttl=30, poll_interval=0.01)
    calls: list[int] = []
    results: list[JSONValue] = []
    barrier = threading.Barrier(10)

    def load() -> JSONValue:
        calls.append(1)
        time.sleep(0.15)
        return "value"

    def ask(loader: CachedLoader) -> None:
        barrier.wait()
        results.append(loader.get_or_compute("shared-key", load))

    threads = [threading.Thread(target=ask, args=(loader,)) for loader in [first, second] * 5]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["value"] * 10
    shared = Capability.SHARED in first.cache.capabilities
    assert len(calls) == (1 if shared else 2)


def test_get_or_compute_serves_stale_while_one_caller_refreshes(
    make_cache: Callable[[], Cache], clock: Clock, advance: Callable[[float], None]
) -> None:
    cache = make_cache()
    loader = _loader_over(cache, clock, ttl=30, soft_ttl=1)
    assert loader.get_or_compute("feed", lambda: "v1") == "v1"
    advance(1.5)

    refreshing, release = threading.Event(), threading.Event()
    refreshed: list[JSONValue] = []

    def slow_refresh() -> JSONValue:
        refreshing.set()
        release.wait(10)
        return "v2"

    refresher = threading.Thread(
        target=lambda: refreshed.append(loader.get_or_compute("feed", slow_refresh))
    )
    refresher.start()
    try:
        assert refreshing.wait(10)
        assert loader.get_or_compute("feed", _fail) == "v1"
        if Capability.SHARED in cache.capabilities:
            other_process = _loader_over(make_cache(), clock, ttl=30, soft_ttl=1)
            assert other_process.get_or_compute("feed", _fail) == "v1"
    finally:
        release.set()
        refresher.join()
    assert refreshed == ["v2"]
    assert loader.get_or_compute("feed", _fail) == "v2"
    assert loader.stats.loads == 2
    assert loader.stats.stale == 1


# -- MemoryCache's own options and limits (not part of the port contract) --------------------


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"max_entries": 0}, "max_entries"),
        ({"max_entries": 2.5}, "max_entries"),
        ({"max_entries": True}, "max_entries"),
        ({"default_ttl": 0}, "default_ttl"),
        ({"default_ttl": -3}, "default_ttl"),
        ({"default_ttl": "60"}, "default_ttl"),
        ({"namespace": "has space"}, "namespace"),
        ({"namespace": "ü"}, "namespace"),
        ({"namespace": "n" * 65}, "namespace"),
        ({"namespace": 7}, "namespace"),
        ({"name": ""}, "name"),
        ({"clock": "now"}, "clock"),
    ],
)
def test_memory_cache_refuses_bad_options_naming_them(options: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigError) as raised:
        MemoryCache(**options)
    assert raised.value.key == option


def test_memory_cache_evicts_the_least_recently_used_entry() -> None:
    cache = MemoryCache(max_entries=3, clock=ManualClock())
    for key in "abc":
        cache.set(key, key)
    cache.get("a")  # now b is the least recently used
    cache.set("d", "d")
    assert cache.get("b") is NO_VALUE
    assert cache.get_many(["a", "c", "d"]) == {"a": "a", "c": "c", "d": "d"}
    assert len(cache) == 3


def test_memory_cache_drops_expired_entries_before_evicting_live_ones() -> None:
    clock = ManualClock()
    cache = MemoryCache(max_entries=3, clock=clock)
    cache.set("short", 1, ttl=1)
    cache.set("live-1", 1)
    cache.set("live-2", 2)
    cache.get("short")  # recently used, but about to expire
    clock.advance(2)
    cache.set("live-3", 3)
    assert cache.get_many(["live-1", "live-2", "live-3"]) == {
        "live-1": 1,
        "live-2": 2,
        "live-3": 3,
    }


def test_memory_cache_expiry_bookkeeping_stays_bounded() -> None:
    clock = ManualClock()
    cache = MemoryCache(max_entries=10, clock=clock)
    for round_ in range(2_000):
        cache.set(f"k{round_ % 5}", round_, ttl=3600)
    assert len(cache._expiries) <= 2 * len(cache) + 64


def test_memory_cache_default_ttl_applies_when_no_ttl_is_given() -> None:
    clock = ManualClock()
    cache = MemoryCache(default_ttl=10, clock=clock)
    cache.set("default", 1)
    cache.set("explicit", 1, ttl=100)
    cache.incr("counter")
    clock.advance(9.9)
    assert cache.get_many(["default", "explicit", "counter"]) == {
        "default": 1,
        "explicit": 1,
        "counter": 1,
    }
    clock.advance(0.2)
    assert cache.get_many(["default", "explicit", "counter"]) == {"explicit": 1}


def test_memory_cache_incr_keeps_the_counters_expiry() -> None:
    clock = ManualClock()
    cache = MemoryCache(clock=clock)
    cache.incr("n", 1, ttl=10)
    clock.advance(9)
    assert cache.incr("n", 1, ttl=100) == 2
    clock.advance(1.5)
    assert cache.get("n") is NO_VALUE


def test_memory_cache_expires_exactly_at_the_ttl() -> None:
    clock = ManualClock()
    cache = MemoryCache(clock=clock)
    cache.set("k", 1, ttl=5)
    clock.advance(4.5)
    assert cache.get("k") == 1
    clock.advance(0.5)
    assert cache.get("k") is NO_VALUE


def test_memory_cache_namespaces_keys() -> None:
    cache = MemoryCache(namespace="app:v1:", clock=ManualClock())
    cache.set("k", 1)
    assert cache.get("k") == 1
    assert cache.namespace == "app:v1:"
