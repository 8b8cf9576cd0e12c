"""The shared argument checks: bool is never a number, seconds are finite, JSON round-trips."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalecore.errors import ConfigError, InvalidInput
from scalecore.validate import (
    check_int,
    check_json,
    check_optional_seconds,
    check_seconds,
    is_finite_number,
    is_instance,
    is_int,
    is_number,
)

NOT_NUMBERS = [True, False, None, "1", b"1", [1], {"a": 1}, 1j, object()]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_predicates_refuse_bools_and_non_numbers(value: object) -> None:
    assert not is_int(value)
    assert not is_number(value)
    assert not is_finite_number(value)


@given(st.integers())
def test_every_int_is_an_int_a_number_and_finite(value: int) -> None:
    assert is_int(value)
    assert is_number(value)
    assert is_finite_number(value)


def test_an_int_beyond_float_range_is_finite() -> None:
    assert is_finite_number(10**400)


@given(st.floats())
def test_floats_are_numbers_never_ints_and_finite_exactly_when_math_says(value: float) -> None:
    assert is_number(value)
    assert not is_int(value)
    assert is_finite_number(value) == math.isfinite(value)


@given(st.integers(), st.integers(-50, 50), st.integers(-50, 50))
def test_check_int_accepts_exactly_the_ints_within_the_bounds(
    value: int, low: int, high: int
) -> None:
    if low <= value <= high:
        assert check_int(value, "n", minimum=low, maximum=high) == value
    else:
        with pytest.raises(InvalidInput, match=rf"^n must be an integer from {low} to {high}"):
            check_int(value, "n", minimum=low, maximum=high)


@pytest.mark.parametrize(
    ("bounds", "wanted"),
    [
        ({}, "must be an integer, got True"),
        ({"minimum": 1}, "must be an integer >= 1, got True"),
        ({"maximum": 9}, "must be an integer <= 9, got True"),
        ({"minimum": 1, "maximum": 9}, "must be an integer from 1 to 9, got True"),
    ],
)
def test_check_int_says_what_it_wanted_and_what_it_got(bounds: dict[str, int], wanted: str) -> None:
    with pytest.raises(InvalidInput) as info:
        check_int(True, "limit", **bounds)
    assert str(info.value) == f"limit {wanted}"


def test_a_config_error_names_its_key() -> None:
    with pytest.raises(ConfigError) as info:
        check_int(0, "cache.max_entries", minimum=1, error=ConfigError)
    assert info.value.key == "cache.max_entries"
    assert str(info.value) == "cache.max_entries: must be an integer >= 1, got 0"
    assert not isinstance(info.value, InvalidInput)


@given(st.floats() | st.integers())
def test_check_seconds_accepts_exactly_finite_positive_numbers(value: float) -> None:
    if math.isfinite(value) and value > 0:
        result = check_seconds(value, "ttl")
        assert result == value
        assert isinstance(result, float)
    else:
        with pytest.raises(InvalidInput, match=r"^ttl must be a number of seconds > 0, got "):
            check_seconds(value, "ttl")


@pytest.mark.parametrize("value", [*NOT_NUMBERS, math.nan, math.inf, -math.inf, -1, 0, 0.0])
def test_check_seconds_refuses(value: object) -> None:
    with pytest.raises(InvalidInput):
        check_seconds(value, "ttl")


def test_check_seconds_zero_and_a_maximum() -> None:
    assert check_seconds(0, "wait", allow_zero=True) == 0.0
    with pytest.raises(InvalidInput, match=r"^wait must be a number of seconds >= 0, got -1$"):
        check_seconds(-1, "wait", allow_zero=True)
    assert check_seconds(3600, "timeout", maximum=3600) == 3600.0
    with pytest.raises(ConfigError) as info:
        check_seconds(3601, "timeout", maximum=3600, error=ConfigError)
    assert str(info.value) == "timeout: must be a number of seconds > 0 and <= 3600, got 3601"


def test_check_optional_seconds_passes_none_through() -> None:
    assert check_optional_seconds(None, "ttl") is None
    assert check_optional_seconds(2, "ttl") == 2.0
    with pytest.raises(InvalidInput, match=r"^ttl must be None or a number of seconds > 0, got 0$"):
        check_optional_seconds(0, "ttl")


@given(json_values)
def test_json_values_pass_and_round_trip(value: Any) -> None:
    check_json(value, "value")
    assert json.loads(json.dumps(value, allow_nan=False)) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": [1, {2, 3}]}, "value['a'][1] is a set, which is not JSON"),
        ((1, 2), "value is a tuple, which is not JSON"),
        ([b"x"], "value[0] is a bytes, which is not JSON"),
        ({"a": {1: "x"}}, "value['a'] has a int key; JSON object keys are strings"),
        ([1.0, math.nan], "value[1] is nan; JSON has no NaN or infinity"),
        ({"x": -math.inf}, "value['x'] is -inf; JSON has no NaN or infinity"),
    ],
)
def test_check_json_names_the_path_to_what_is_not_json(value: object, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        check_json(value, "value")
    assert str(info.value) == message


def test_check_json_never_quotes_a_stored_string() -> None:
    with pytest.raises(InvalidInput) as info:
        check_json({"token": "secret-value", "bad": object()}, "session data")
    assert "secret-value" not in str(info.value)


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def test_check_json_depth_bound() -> None:
    check_json(_nested(99), "payload", max_depth=100)  # 100 levels of lists
    with pytest.raises(InvalidInput, match=r"^payload is nested more than 100 levels deep$"):
        check_json(_nested(100), "payload", max_depth=100)


def test_an_unbounded_walk_does_not_overflow_the_stack() -> None:
    check_json(_nested(100_000), "value")


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        (True, bool, True),
        (1, bool, False),
        (True, int, False),
        (2, int, True),
        (False, str, False),
        ("x", str, True),
        (1.5, float, True),
        (True, float, False),
        (1, float, False),
    ],
)
def test_is_instance_counts_a_bool_only_as_a_bool(
    value: object, kind: type, expected: bool
) -> None:
    assert is_instance(value, kind) is expected
