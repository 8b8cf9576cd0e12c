"""Shard-carrying, time-sortable ids: layout, ordering, parsing and generator monotonicity."""

from __future__ import annotations

import itertools
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalecore.clock import ManualClock
from scalecore.errors import InvalidInput
from scalecore.ids import (
    ID_LENGTH,
    LOGICAL_SHARDS,
    IdGenerator,
    IdParts,
    logical_shard_for,
    make_id,
    parse_id,
    shard_of,
)
from scalecore.routing import JumpHashRouter, ModuloRouter, stable_hash

timestamps = st.integers(0, 2**48 - 1)
shards = st.integers(0, LOGICAL_SHARDS - 1)
randoms = st.integers(0, 2**64 - 1)
parts = st.builds(IdParts, timestamps, shards, randoms)


class SteppingClock:
    """A clock tests can move both ways (ManualClock refuses to go backwards)."""

    def __init__(self, now: float) -> None:
        self.value = now

    def now(self) -> float:
        return self.value

    def monotonic(self) -> float:
        return self.value

    def sleep(self, seconds: float) -> None:
        self.value += seconds


@given(parts)
def test_make_and_parse_round_trip(p: IdParts) -> None:
    encoded = make_id(p.timestamp_ms, p.logical_shard, p.random)
    assert len(encoded) == ID_LENGTH == 26
    assert parse_id(encoded) == p
    assert shard_of(encoded) == p.logical_shard
    # one spelling per id
    assert make_id(*_fields(parse_id(encoded))) == encoded


def _fields(p: IdParts) -> tuple[int, int, int]:
    return p.timestamp_ms, p.logical_shard, p.random


@given(parts, parts)
def test_string_order_is_numeric_order_is_time_order(a: IdParts, b: IdParts) -> None:
    ida, idb = make_id(*_fields(a)), make_id(*_fields(b))
    assert (ida < idb) == (_fields(a) < _fields(b))
    if a.timestamp_ms < b.timestamp_ms:
        assert ida < idb


def test_layout_is_time_then_shard_then_random() -> None:
    value = int(
        "".join(
            f"{'0123456789ABCDEFGHJKMNPQRSTVWXYZ'.index(c):05b}"
            for c in make_id(0x123456789ABC, 0x0ABC, 0x1122334455667788)
        ),
        2,
    )
    assert value == (0x123456789ABC << 80) | (0x0ABC << 64) | 0x1122334455667788
    assert make_id(0, 0, 0) == "0" * 26
    assert make_id(2**48 - 1, LOGICAL_SHARDS - 1, 2**64 - 1) == "7ZZZZZZZZZ1ZZZZZZZZZZZZZZZ"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "0" * 25,
        "0" * 27,
        "8" + "0" * 25,  # over 128 bits
        "Z" * 26,
        "0" * 25 + "U",  # not in Crockford's alphabet
        "0" * 25 + "I",
        "0" * 25 + "a",  # only the canonical upper case
        "0" * 25 + "-",
        "0" * 25 + "\u0660",  # a non-ASCII digit
        "0000000000" + "20" + "0" * 14,  # logical shard 4096: beyond LOGICAL_SHARDS
        None,
        12345,
        b"0" * 26,
    ],
)
def test_parse_refuses_malformed_ids(bad: object) -> None:
    with pytest.raises(InvalidInput):
        parse_id(bad)
    with pytest.raises(InvalidInput):
        shard_of(bad)


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ((-1, 0, 0), "timestamp_ms"),
        ((2**48, 0, 0), "timestamp_ms"),
        ((0, LOGICAL_SHARDS, 0), "logical_shard"),
        ((0, -1, 0), "logical_shard"),
        ((0, 0, 2**64), "random"),
        ((0, True, 0), "logical_shard"),
    ],
)
def test_make_id_refuses_fields_out_of_range(fields: tuple[int, int, int], name: str) -> None:
    with pytest.raises(InvalidInput, match=name):
        make_id(*fields)


def test_logical_shard_for_is_stable_hash_modulo_4096() -> None:
    assert LOGICAL_SHARDS == 4096
    for key in ("alice", "bob", 42, "42", 0):
        assert logical_shard_for(key) == stable_hash(key) % 4096
    assert logical_shard_for(42) != logical_shard_for("42")
    for bad in (b"alice", 1.0, None, True):
        with pytest.raises(InvalidInput):
            logical_shard_for(bad)  # type: ignore[arg-type]


def test_generated_id_carries_clock_time_and_shard() -> None:
    clock = ManualClock(1_700_000_000.123)
    ids = IdGenerator(clock)
    made = ids.new(17)
    parsed = parse_id(made)
    assert parsed.timestamp_ms == 1_700_000_000_123
    assert parsed.logical_shard == 17
    assert shard_of(ids.new_for("alice")) == logical_shard_for("alice")


def test_generator_refuses_bad_shards() -> None:
    ids = IdGenerator(ManualClock())
    for bad in (-1, LOGICAL_SHARDS, True, "3", None):
        with pytest.raises(InvalidInput):
            ids.new(bad)  # type: ignore[arg-type]


def test_generator_refuses_a_clock_outside_the_48_bit_range() -> None:
    with pytest.raises(InvalidInput):
        IdGenerator(SteppingClock(-5.0)).new(0)
    with pytest.raises(InvalidInput):
        IdGenerator(SteppingClock(2**48 / 1000 + 10)).new(0)


def test_monotonic_within_one_millisecond() -> None:
    ids = IdGenerator(ManualClock())
    made = [ids.new(5) for _ in range(1000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    randoms = [parse_id(i).random for i in made]
    # ULID-style: the random part counts up by one inside one millisecond
    assert all(b == a + 1 for a, b in itertools.pairwise(randoms))


def test_new_millisecond_starts_from_fresh_randomness() -> None:
    clock = ManualClock()
    ids = IdGenerator(clock, randbits=lambda bits: 1000)
    first = parse_id(ids.new(5))
    clock.advance(0.001)
    second = parse_id(ids.new(5))
    assert second.timestamp_ms == first.timestamp_ms + 1
    assert first.random == second.random == 1000  # a fresh draw, not first.random + 1


def test_monotonic_when_the_clock_steps_back() -> None:
    clock = SteppingClock(1_700_000_000.0)
    ids = IdGenerator(clock)
    before = ids.new(9)
    clock.value -= 5  # NTP steps the clock back five seconds
    after = [ids.new(9) for _ in range(10)]
    assert [before, *after] == sorted([before, *after])
    # timestamps never go backwards, for any shard
    assert parse_id(ids.new(3)).timestamp_ms == parse_id(before).timestamp_ms
    clock.value += 10
    assert parse_id(ids.new(9)).timestamp_ms == 1_700_000_005_000


def test_random_overflow_moves_to_the_next_millisecond() -> None:
    ids = IdGenerator(ManualClock(1_700_000_000.0), randbits=lambda bits: 2**bits - 1)
    first, second = parse_id(ids.new(1)), parse_id(ids.new(1))
    assert first.random == 2**64 - 1
    assert second.timestamp_ms == first.timestamp_ms + 1
    assert make_id(*_fields(first)) < make_id(*_fields(second))


@given(
    steps=st.lists(st.tuples(st.integers(0, 3), st.integers(-2000, 2000)), min_size=1, max_size=60)
)
@settings(max_examples=100)
def test_generator_ordering_promise(steps: list[tuple[int, int]]) -> None:
    clock = SteppingClock(1_700_000_000.0)
    ids = IdGenerator(clock, randbits=lambda bits: 2**bits - 3)  # overflow comes quickly
    last_by_shard: dict[int, str] = {}
    last_ms = -1
    for shard, move_ms in steps:
        clock.value += move_ms / 1000
        made = ids.new(shard)
        parsed = parse_id(made)
        assert parsed.timestamp_ms >= last_ms  # time never goes backwards
        last_ms = parsed.timestamp_ms
        if shard in last_by_shard:
            assert made > last_by_shard[shard]  # strictly increasing per logical shard
        last_by_shard[shard] = made


def test_generator_is_thread_safe() -> None:
    ids = IdGenerator(ManualClock())
    results: list[list[str]] = [[] for _ in range(4)]
    barrier = threading.Barrier(4)

    def work(slot: int) -> None:
        barrier.wait()
        results[slot].extend(ids.new(7) for _ in range(2000))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [i for chunk in results for i in chunk]
    assert len(set(everything)) == len(everything) == 8000
    for chunk in results:
        assert chunk == sorted(chunk)


def test_an_id_alone_finds_its_physical_shard_and_growth_moves_whole_logical_shards() -> None:
    ids = IdGenerator(ManualClock())
    photos = {owner: [ids.new_for(owner) for _ in range(3)] for owner in ("ann", "bo", "cy")}
    router = JumpHashRouter(4)
    for owner, owned in photos.items():
        home = router.shard_for(logical_shard_for(owner))
        assert {router.shard_for(shard_of(p)) for p in owned} == {home}
    # Growing 4 -> 5 physical shards: every row of a logical shard moves together.
    grown = JumpHashRouter(5)
    for logical in range(LOGICAL_SHARDS):
        assert grown.shard_for(logical) in (router.shard_for(logical), 4)
    assert ModuloRouter(4).shard_for(shard_of(photos["ann"][0])) == logical_shard_for("ann") % 4
