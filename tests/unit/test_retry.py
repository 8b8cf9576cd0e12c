"""RetryPolicy: how many deliveries, and how long between them."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalecore.errors import ConfigError, InvalidInput
from scalecore.retry import MAX_RETRY_DELAY, RetryPolicy

delays = st.lists(
    st.floats(min_value=0, max_value=MAX_RETRY_DELAY, allow_nan=False), min_size=1, max_size=6
).map(tuple)
attempts = st.integers(min_value=1, max_value=10_000)


def test_each_failed_delivery_waits_its_delay_and_the_last_delay_repeats() -> None:
    policy = RetryPolicy(5, (0.1, 0.5, 2.0))
    assert [policy.delay_for(attempt) for attempt in range(1, 7)] == [0.1, 0.5, 2.0, 2.0, 2.0, 2.0]


def test_the_delivery_numbered_max_attempts_is_the_last() -> None:
    policy = RetryPolicy(3, (1.0,))
    assert [policy.exhausted(attempt) for attempt in (1, 2, 3, 4)] == [False, False, True, True]
    assert RetryPolicy(1, (0.0,)).exhausted(1)


@given(max_attempts=st.integers(min_value=1, max_value=100), delays=delays, attempt=attempts)
def test_policy_properties(max_attempts: int, delays: tuple[float, ...], attempt: int) -> None:
    policy = RetryPolicy(max_attempts, delays)
    assert policy.delay_for(attempt) == delays[min(attempt, len(delays)) - 1]
    assert policy.exhausted(attempt) is (attempt >= max_attempts)
    # Once exhausted, always exhausted: a later attempt is never allowed again.
    assert not policy.exhausted(attempt) or policy.exhausted(attempt + 1)


@given(max_attempts=st.integers(min_value=1, max_value=100), delays=delays)
def test_from_options_accepts_config_lists(max_attempts: int, delays: tuple[float, ...]) -> None:
    policy = RetryPolicy.from_options(max_attempts=max_attempts, retry_delays=list(delays))
    assert policy == RetryPolicy(max_attempts, delays)
    assert all(isinstance(delay, float) for delay in policy.delays)


def test_integer_delays_become_floats() -> None:
    assert RetryPolicy.from_options(max_attempts=2, retry_delays=[1, 2]).delays == (1.0, 2.0)


@pytest.mark.parametrize("max_attempts", [0, -1, True, 2.0, "3", None])
def test_bad_max_attempts_are_refused(max_attempts: object) -> None:
    with pytest.raises(InvalidInput, match="max_attempts"):
        RetryPolicy(max_attempts, (1.0,))  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as caught:
        RetryPolicy.from_options(max_attempts=max_attempts, retry_delays=[1.0])
    assert caught.value.key == "max_attempts"


@pytest.mark.parametrize(
    "retry_delays",
    [
        [],
        [-0.1],
        [math.nan],
        [math.inf],
        [MAX_RETRY_DELAY + 1],
        [True],
        ["1"],
        [None],
        [0.1, "x"],
    ],
)
def test_bad_delays_are_refused(retry_delays: list[object]) -> None:
    with pytest.raises(InvalidInput, match="delays"):
        RetryPolicy(3, tuple(retry_delays))  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as caught:
        RetryPolicy.from_options(max_attempts=3, retry_delays=retry_delays)
    assert caught.value.key == "retry_delays"


@pytest.mark.parametrize("retry_delays", [1.0, "0.1", b"1", None, {0.1}])
def test_delays_must_be_a_list(retry_delays: object) -> None:
    with pytest.raises(ConfigError) as caught:
        RetryPolicy.from_options(max_attempts=3, retry_delays=retry_delays)
    assert caught.value.key == "retry_delays"


def test_the_constructor_wants_a_tuple() -> None:
    with pytest.raises(InvalidInput, match="tuple"):
        RetryPolicy(3, [1.0])  # type: ignore[arg-type]


@pytest.mark.parametrize("attempt", [0, -1, True, 1.0, "1"])
def test_attempts_count_from_one(attempt: object) -> None:
    policy = RetryPolicy(3, (1.0,))
    with pytest.raises(InvalidInput):
        policy.delay_for(attempt)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        policy.exhausted(attempt)  # type: ignore[arg-type]


def test_a_policy_is_an_immutable_value() -> None:
    policy = RetryPolicy(3, (1.0,))
    assert policy == RetryPolicy(3, (1.0,))
    assert hash(policy) == hash(RetryPolicy(3, (1.0,)))
    with pytest.raises(AttributeError):
        policy.max_attempts = 4  # type: ignore[misc]
