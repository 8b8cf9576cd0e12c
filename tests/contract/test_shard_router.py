"""ShardRouter contract, run against every router: modulo, jump hash, directory over jump.

The promise: a pure, process-independent function from key to ``0 .. shard_count - 1``
that spreads keys evenly. Strategy-specific behaviour (how much data a reshard moves,
pins) is tested after the shared suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalecore import routing
from scalecore.errors import ConfigError, InvalidInput
from scalecore.ports.sharding import ShardKey, ShardRouter
from scalecore.routing import (
    DirectoryRouter,
    JumpHashRouter,
    ModuloRouter,
    make_router,
    moved_fraction,
    stable_hash,
)

# Python expressions, so a subprocess can build exactly the same router.
ROUTER_SOURCE = {
    "modulo": "ModuloRouter(shards)",
    "jump": "JumpHashRouter(shards)",
    "directory": "DirectoryRouter(JumpHashRouter(shards), {'hot-user': 0, 7: shards - 1})",
}


def build(kind: str, shards: int) -> ShardRouter:
    namespace = {name: getattr(routing, name) for name in routing.__all__}
    router = eval(ROUTER_SOURCE[kind], {**namespace, "shards": shards})
    assert isinstance(router, ShardRouter)
    return router


@pytest.fixture(params=sorted(ROUTER_SOURCE))
def make(request: pytest.FixtureRequest) -> Callable[[int], ShardRouter]:
    """A factory: shard count -> a router of the parametrised kind."""
    kind: str = request.param
    return lambda shards: build(kind, shards)


SAMPLE_KEYS: list[ShardKey] = [
    *range(-5, 200),
    *(f"user-{i}" for i in range(200)),
    "",
    "ünïcødé ✓",
    "hot-user",
    "\ud800",  # a lone surrogate is still text that must route
    2**70,
]


def test_shard_count_is_what_was_configured(make: Callable[[int], ShardRouter]) -> None:
    for shards in (1, 2, 7, 64):
        assert make(shards).shard_count == shards


def test_every_key_lands_in_range(make: Callable[[int], ShardRouter]) -> None:
    for shards in (1, 2, 3, 10, 128):
        router = make(shards)
        for key in SAMPLE_KEYS:
            assert 0 <= router.shard_for(key) < shards


@given(key=st.one_of(st.integers(), st.text()), shards=st.integers(1, 1000))
@settings(max_examples=200)
def test_any_key_lands_in_range_and_is_deterministic(key: ShardKey, shards: int) -> None:
    for kind in ROUTER_SOURCE:
        first = build(kind, shards).shard_for(key)
        assert 0 <= first < shards
        assert build(kind, shards).shard_for(key) == first


def test_same_answer_in_another_process_with_another_hash_seed(
    make: Callable[[int], ShardRouter], request: pytest.FixtureRequest
) -> None:
    kind = request.node.callspec.params["make"]
    here = [make(13).shard_for(key) for key in SAMPLE_KEYS]
    code = (
        "import json, sys\n"
        "from scalecore import routing\n"
        "ns = {n: getattr(routing, n) for n in routing.__all__}\n"
        f"router = eval({ROUTER_SOURCE[kind]!r}, {{**ns, 'shards': 13}})\n"
        "keys = json.loads(sys.stdin.read())\n"
        "print(json.dumps([router.shard_for(k) for k in keys]))\n"
    )
    # JSON cannot carry a lone surrogate; send it escaped and let json restore it.
    payload = json.dumps(SAMPLE_KEYS, ensure_ascii=True)
    for seed in ("1", "4242"):
        result = subprocess.run(
            [sys.executable, "-c", code],
            input=payload,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert json.loads(result.stdout) == here


def _chi_square(counts: Counter[int], shards: int, total: int) -> float:
    expected = total / shards
    return sum((counts.get(s, 0) - expected) ** 2 / expected for s in range(shards))


@pytest.mark.parametrize("keys", ["text", "ints", "sparse_ints"])
def test_spreads_keys_evenly(make: Callable[[int], ShardRouter], keys: str) -> None:
    shards, total = 8, 10_000
    samples: dict[str, list[ShardKey]] = {
        "text": [f"user-{i}" for i in range(total)],
        "ints": list(range(total)),
        # spaced ids (a prime stride), as left behind by deletions or another id scheme
        "sparse_ints": [i * 7919 + 3 for i in range(total)],
    }
    sample = samples[keys]
    router = make(shards)
    counts = Counter(router.shard_for(k) for k in sample)
    # 7 degrees of freedom: chi-square exceeds 24.3 with probability 0.001 for a uniform
    # spread. The keys are fixed, so this is deterministic, not flaky.
    assert _chi_square(counts, shards, total) < 24.3, counts


def test_rejects_bad_shard_counts() -> None:
    for kind in ROUTER_SOURCE:
        for bad in (0, -1, True, 2.0, "3", None):
            with pytest.raises(ConfigError) as info:
                build(kind, bad)  # type: ignore[arg-type]
            assert info.value.key == "shards"


def test_rejects_keys_that_are_not_int_or_str(make: Callable[[int], ShardRouter]) -> None:
    router = make(4)
    for bad in (1.5, None, b"bytes", True, ("a",), object()):
        with pytest.raises(InvalidInput):
            router.shard_for(bad)  # type: ignore[arg-type]


# --- stable_hash -------------------------------------------------------------------------


def test_stable_hash_is_frozen() -> None:
    # Known answers: if these change, every sharded row in every deployment moves.
    assert stable_hash(0) == 8859566273657638067
    assert stable_hash(42) == 1027869399216032918
    assert stable_hash("42") == 6346437191378002299
    assert stable_hash(b"42") == 2346379258645023421
    assert stable_hash("alice") == 10594030175081054182
    assert stable_hash(-1) == 17771941656146502823


@given(st.integers())
def test_an_int_and_its_digits_as_text_hash_differently(number: int) -> None:
    assert stable_hash(number) != stable_hash(str(number))
    assert stable_hash(str(number)) != stable_hash(str(number).encode())


@given(st.one_of(st.integers(), st.text(), st.binary()))
def test_stable_hash_is_64_bit(key: int | str | bytes) -> None:
    assert 0 <= stable_hash(key) < 2**64


def test_stable_hash_refuses_other_types() -> None:
    for bad in (1.0, None, True, [1]):
        with pytest.raises(InvalidInput):
            stable_hash(bad)  # type: ignore[arg-type]


# --- jump hash vs modulo: what a reshard moves --------------------------------------------


def test_jump_hash_matches_the_published_algorithm() -> None:
    # Reference answers of the paper's C++ code, as used by other implementations.
    assert routing.jump_hash(256, 1024) == 520
    assert routing.jump_hash(2016238256797177309, 11) == 3
    assert routing.jump_hash(12345, 1) == 0


@given(shards=st.integers(1, 60), salt=st.text(max_size=8))
@settings(max_examples=25, deadline=None)
def test_jump_growth_moves_about_one_in_n_plus_one_and_only_to_the_new_shard(
    shards: int, salt: str
) -> None:
    keys = [f"{salt}/{i}" for i in range(10_000)]
    old, new = JumpHashRouter(shards), JumpHashRouter(shards + 1)
    moved = 0
    for key in keys:
        before, after = old.shard_for(key), new.shard_for(key)
        if before != after:
            assert after == shards, "a key moved between two old shards"
            moved += 1
    expected = 1 / (shards + 1)
    # five standard deviations of a binomial over 10k keys, plus slack
    sigma = (expected * (1 - expected) / len(keys)) ** 0.5
    assert abs(moved / len(keys) - expected) <= 5 * sigma + 0.002


def test_directory_over_jump_also_moves_only_to_the_new_shard() -> None:
    pins: dict[ShardKey, int] = {"hot-user": 0}
    old = DirectoryRouter(JumpHashRouter(4), pins)
    new = DirectoryRouter(JumpHashRouter(5), pins)
    for i in range(5_000):
        before, after = old.shard_for(f"u{i}"), new.shard_for(f"u{i}")
        assert after in (before, 4)
    assert new.shard_for("hot-user") == 0


def test_modulo_growth_moves_most_keys() -> None:
    # The contrast that motivates jump hash: user_id % N -> user_id % (N + 1) moves
    # N / (N + 1) of all keys, and between old shards too.
    keys = range(20_000)
    for shards in (2, 4, 8, 16):
        fraction = moved_fraction(ModuloRouter(shards), ModuloRouter(shards + 1), keys)
        assert fraction == pytest.approx(shards / (shards + 1), abs=0.01)
        jump = moved_fraction(JumpHashRouter(shards), JumpHashRouter(shards + 1), keys)
        assert jump == pytest.approx(1 / (shards + 1), abs=0.01)


def test_moved_fraction_of_no_keys_is_zero() -> None:
    assert moved_fraction(ModuloRouter(2), ModuloRouter(3), []) == 0.0
    assert moved_fraction(ModuloRouter(2), ModuloRouter(2), range(100)) == 0.0


def test_modulo_routes_ints_as_the_classic_remainder() -> None:
    router = ModuloRouter(10)
    assert [router.shard_for(k) for k in (0, 7, 13, 1_000_001, -1)] == [0, 7, 3, 1, 9]


# --- directory ------------------------------------------------------------------------------


def test_directory_honours_pins_and_delegates_the_rest() -> None:
    fallback = JumpHashRouter(8)
    pins: dict[ShardKey, int] = {"celebrity": 7, "other": 0, 1234: 5}
    router = DirectoryRouter(fallback, pins)
    assert router.shard_count == 8
    assert router.shard_for("celebrity") == 7
    assert router.shard_for("other") == 0
    assert router.shard_for(1234) == 5
    # exact, type-sensitive match: the text "1234" is another key
    assert router.shard_for("1234") == fallback.shard_for("1234")
    for i in range(1_000):
        assert router.shard_for(f"user-{i}") == fallback.shard_for(f"user-{i}")
    assert router.pins == pins


@pytest.mark.parametrize("shard", [-1, 8, 100, True, "1"])
def test_directory_refuses_pins_out_of_range(shard: object) -> None:
    with pytest.raises(ConfigError) as info:
        DirectoryRouter(JumpHashRouter(8), {"hot": shard})  # type: ignore[dict-item]
    assert info.value.key == "pins.hot"


def test_directory_refuses_bad_pin_keys_and_fallbacks() -> None:
    with pytest.raises(ConfigError):
        DirectoryRouter(JumpHashRouter(2), {1.5: 0})  # type: ignore[dict-item]
    with pytest.raises(ConfigError):
        DirectoryRouter("jump", {})  # type: ignore[arg-type]


def test_make_router_builds_each_strategy_from_config() -> None:
    assert isinstance(make_router("modulo", 3), ModuloRouter)
    assert isinstance(make_router("jump", 3), JumpHashRouter)
    directory = make_router("directory", 3, {"hot": 2})
    assert isinstance(directory, DirectoryRouter)
    assert directory.shard_for("hot") == 2
    with pytest.raises(ConfigError) as info:
        make_router("ring", 3)
    assert info.value.key == "strategy"
    with pytest.raises(ConfigError) as info:
        make_router("jump", 3, {"hot": 1})
    assert info.value.key == "pins"
