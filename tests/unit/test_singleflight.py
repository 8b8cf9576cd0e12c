"""SingleFlight: one call per key for concurrent callers, then the key is free again."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalecore.singleflight import SKIPPED, SingleFlight


class Gate:
    """Holds the leader's call until ``expected`` callers have asked, plus a short margin.

    A follower registers just before it calls ``do``; the margin covers the few
    instructions between registering and waiting inside ``do``.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.arrived = 0
        self.lock = threading.Lock()
        self.all_arrived = threading.Event()

    def arrive(self) -> None:
        with self.lock:
            self.arrived += 1
            if self.arrived == self.expected:
                self.all_arrived.set()

    def hold(self) -> None:
        assert self.all_arrived.wait(10)
        time.sleep(0.05)


def run_threads(count: int, target: Callable[[], Any]) -> None:
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()


def test_concurrent_callers_share_one_call() -> None:
    flight: SingleFlight[str] = SingleFlight()
    gate = Gate(10)
    calls: list[int] = []
    results: list[object] = []

    def fn() -> dict[str, int]:
        calls.append(1)
        gate.hold()
        return {"answer": 42}

    def caller() -> None:
        gate.arrive()
        results.append(flight.do("key", fn))

    run_threads(10, caller)
    assert len(calls) == 1
    assert len(results) == 10
    assert all(result is results[0] for result in results)  # the very same object
    assert len(flight) == 0
    assert flight._calls == {}


def test_followers_get_the_leaders_exception() -> None:
    flight: SingleFlight[str] = SingleFlight()
    gate = Gate(6)
    calls: list[int] = []
    raised: list[BaseException] = []

    def fn() -> int:
        calls.append(1)
        gate.hold()
        raise KeyError("boom")

    def caller() -> None:
        gate.arrive()
        try:
            flight.do("key", fn)
        except KeyError as exc:
            raised.append(exc)

    run_threads(6, caller)
    assert len(calls) == 1
    assert len(raised) == 6
    assert all(exc is raised[0] for exc in raised)
    assert flight._calls == {}


def test_the_key_is_free_again_after_the_call() -> None:
    flight: SingleFlight[str] = SingleFlight()
    counter = iter(range(100))
    assert flight.do("key", lambda: next(counter)) == 0
    assert flight.do("key", lambda: next(counter)) == 1
    with pytest.raises(ValueError, match="once"):
        flight.do("key", _raise(ValueError("once")))
    assert flight.do("key", lambda: next(counter)) == 2  # a failure is not remembered
    assert len(flight) == 0


def _raise(exc: Exception) -> Callable[[], int]:
    def fn() -> int:
        raise exc

    return fn


def test_different_keys_do_not_wait_for_each_other() -> None:
    flight: SingleFlight[str] = SingleFlight()
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        assert release.wait(10)
        return "slow"

    thread = threading.Thread(target=lambda: flight.do("a", slow))
    thread.start()
    try:
        assert started.wait(10)
        assert "a" in flight
        assert flight.do("b", lambda: "fast") == "fast"
        assert "b" not in flight
    finally:
        release.set()
        thread.join(10)
    assert len(flight) == 0


def test_try_do_skips_while_a_call_is_in_flight_and_never_waits() -> None:
    flight: SingleFlight[str] = SingleFlight()
    started, release = threading.Event(), threading.Event()
    results: list[object] = []

    def slow() -> str:
        started.set()
        assert release.wait(10)
        return "slow"

    thread = threading.Thread(target=lambda: results.append(flight.try_do("k", slow)))
    thread.start()
    try:
        assert started.wait(10)
        assert flight.try_do("k", lambda: "other") is SKIPPED
    finally:
        release.set()
        thread.join(10)
    assert results == ["slow"]
    assert flight.try_do("k", lambda: "free") == "free"
    assert not SKIPPED
    assert len(flight) == 0


def test_do_joins_a_call_started_by_try_do() -> None:
    flight: SingleFlight[str] = SingleFlight()
    gate = Gate(1)
    calls: list[int] = []
    results: list[object] = []

    def fn() -> str:
        calls.append(1)
        gate.hold()
        return "shared"

    leader = threading.Thread(target=lambda: results.append(flight.try_do("k", fn)))
    leader.start()
    while "k" not in flight:
        time.sleep(0.001)

    def follower() -> None:
        gate.arrive()
        results.append(flight.do("k", fn))

    run_threads(1, follower)
    leader.join(10)
    assert calls == [1]
    assert results == ["shared", "shared"]


def test_a_reentrant_call_for_the_same_key_is_refused_not_deadlocked() -> None:
    flight: SingleFlight[str] = SingleFlight()
    with pytest.raises(RuntimeError, match="re-entrant"):
        flight.do("k", lambda: flight.do("k", lambda: 1))
    assert flight.do("k", lambda: flight.do("other", lambda: 2)) == 2
    assert len(flight) == 0


def test_followers_retry_when_the_leader_is_interrupted() -> None:
    flight: SingleFlight[str] = SingleFlight()
    gate = Gate(1)
    interrupted: list[bool] = []
    results: list[object] = []

    def interrupted_call() -> str:
        gate.hold()
        raise KeyboardInterrupt

    def leader() -> None:
        try:
            flight.do("k", interrupted_call)
        except KeyboardInterrupt:
            interrupted.append(True)

    leading = threading.Thread(target=leader)
    leading.start()
    while "k" not in flight:
        time.sleep(0.001)

    def follower() -> None:
        gate.arrive()
        results.append(flight.do("k", lambda: "retried"))

    run_threads(1, follower)
    leading.join(10)
    assert interrupted == [True]
    assert results == ["retried"]
    assert len(flight) == 0


@settings(max_examples=20, deadline=None)
@given(plan=st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), min_size=1, max_size=12))
def test_no_per_key_state_outlives_the_calls(plan: list[tuple[str, bool]]) -> None:
    flight: SingleFlight[str] = SingleFlight()
    outcomes: list[object] = []
    lock = threading.Lock()

    def make(key: str, fails: bool) -> Callable[[], None]:
        def call() -> None:
            def fn() -> str:
                time.sleep(0.001)
                if fails:
                    raise ValueError(key)
                return key

            try:
                result: object = flight.do(key, fn)
            except ValueError as exc:
                result = exc
            with lock:
                outcomes.append(result)

        return call

    threads = [threading.Thread(target=make(key, fails)) for key, fails in plan]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(outcomes) == len(plan)
    assert flight._calls == {}
    assert len(flight) == 0
