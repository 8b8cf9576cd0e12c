"""LWW-element-set: merge laws, convergence under any delivery, the tie rule, JSON form."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalecore.crdt import Bias, LWWElementSet, merge_all
from scalecore.errors import InvalidInput

# Few elements and timestamps, so adds, removes and ties of one element collide often.
elements = st.sampled_from(["a", "b", "c", "d"])
stamps = st.integers(0, 6)
Op = tuple[str, str, int]
ops = st.tuples(st.sampled_from(["add", "remove"]), elements, stamps)
biases = st.sampled_from(["add", "remove"])


def apply(start: LWWElementSet[str], operations: list[Op]) -> LWWElementSet[str]:
    state = start
    for kind, element, ts in operations:
        state = state.add(element, ts) if kind == "add" else state.remove(element, ts)
    return state


@st.composite
def lww_sets(draw: st.DrawFn, bias: Bias = "add") -> LWWElementSet[str]:
    return apply(LWWElementSet(bias=bias), draw(st.lists(ops, max_size=12)))


def model_contains(operations: list[Op], element: str, bias: Bias) -> bool:
    """The definition, computed from scratch: latest add vs latest remove."""
    adds = [ts for kind, e, ts in operations if kind == "add" and e == element]
    removes = [ts for kind, e, ts in operations if kind == "remove" and e == element]
    if not adds:
        return False
    if not removes:
        return True
    return max(adds) > max(removes) or (max(adds) == max(removes) and bias == "add")


@given(lww_sets(), lww_sets())
def test_merge_is_commutative(a: LWWElementSet[str], b: LWWElementSet[str]) -> None:
    assert a.merge(b) == b.merge(a)


@given(lww_sets(), lww_sets(), lww_sets())
def test_merge_is_associative(
    a: LWWElementSet[str], b: LWWElementSet[str], c: LWWElementSet[str]
) -> None:
    assert a.merge(b).merge(c) == a.merge(b.merge(c))


@given(lww_sets(), lww_sets())
def test_merge_is_idempotent(a: LWWElementSet[str], b: LWWElementSet[str]) -> None:
    assert a.merge(a) == a
    assert a.merge(b).merge(b) == a.merge(b)


@given(operations=st.lists(ops, max_size=30), bias=biases, data=st.data())
@settings(max_examples=200)
def test_replicas_converge_whatever_the_delivery(
    operations: list[Op], bias: Bias, data: st.DataObject
) -> None:
    reference = apply(LWWElementSet(bias=bias), operations)
    # Three replicas each get every operation at least once, in their own order, some
    # twice; then they gossip in an arbitrary order.
    replicas = []
    for _ in range(3):
        extra = data.draw(st.lists(st.sampled_from(operations), max_size=5)) if operations else []
        delivery = data.draw(st.permutations([*operations, *extra]))
        replicas.append(apply(LWWElementSet(bias=bias), delivery))
    order = data.draw(st.permutations(replicas))
    merged = merge_all(order)
    assert merged == reference
    assert merged.elements() == reference.elements()
    for element in "abcd":
        assert merged.contains(element) == model_contains(operations, element, bias)


@given(operations=st.lists(ops, max_size=30), bias=biases)
def test_membership_matches_the_definition(operations: list[Op], bias: Bias) -> None:
    state = apply(LWWElementSet(bias=bias), operations)
    for element in "abcd":
        assert (element in state) == model_contains(operations, element, bias)
    assert len(state) == len(state.elements()) == len(set(state))


def test_ties_go_to_the_bias() -> None:
    add_wins = LWWElementSet[str]().add("x", 5).remove("x", 5)
    assert add_wins.contains("x")
    remove_wins = LWWElementSet[str](bias="remove").add("x", 5).remove("x", 5)
    assert not remove_wins.contains("x")
    # a newer operation always beats an older one, whatever the bias
    assert not LWWElementSet[str]().add("x", 5).remove("x", 6).contains("x")
    assert LWWElementSet[str](bias="remove").remove("x", 5).add("x", 6).contains("x")


def test_a_remove_before_its_add_arrives_still_wins_when_newer() -> None:
    replica = LWWElementSet[str]().remove("x", 10)
    assert not replica.contains("x")
    assert not replica.add("x", 3).contains("x")
    assert replica.add("x", 11).contains("x")


def test_sets_are_immutable_values() -> None:
    empty = LWWElementSet[str]()
    one = empty.add("a", 1)
    assert empty.elements() == frozenset()
    assert one.elements() == {"a"}
    assert one.add("a", 0) is one  # an older add changes nothing
    assert hash(one) == hash(LWWElementSet[str]().add("a", 1))
    assert one != empty
    assert one != "a"


def test_merging_different_biases_is_refused() -> None:
    with pytest.raises(InvalidInput):
        LWWElementSet[str]().merge(LWWElementSet(bias="remove"))
    with pytest.raises(InvalidInput):
        LWWElementSet[str]().merge({"a": 1})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        merge_all([])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "1", None, True])
def test_bad_timestamps_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidInput):
        LWWElementSet[str]().add("a", bad)
    with pytest.raises(InvalidInput):
        LWWElementSet[str]().remove("a", bad)


def test_unknown_bias_is_refused() -> None:
    with pytest.raises(InvalidInput):
        LWWElementSet(bias="neither")  # type: ignore[arg-type]


@given(lww_sets(), biases)
def test_json_round_trip(state: LWWElementSet[str], bias: Bias) -> None:
    for value in (state, LWWElementSet(bias=bias).merge(LWWElementSet(bias=bias))):
        text = json.dumps(value.to_dict())
        assert LWWElementSet.from_dict(json.loads(text)) == value


def test_json_form_is_deterministic_and_keeps_scalars() -> None:
    state = LWWElementSet[Any]().add(3, 1).add("b", 2.5).add(None, 0).remove("b", 7)
    same = LWWElementSet[Any]().remove("b", 7).add(None, 0).add("b", 2.5).add(3, 1)
    assert state.to_dict() == same.to_dict()
    assert state.to_dict() == {
        "bias": "add",
        "adds": [["b", 2.5], [3, 1], [None, 0]],  # sorted by JSON text: '"b"' < "3" < "null"
        "removes": [["b", 7]],
    }
    assert LWWElementSet.from_dict(json.loads(json.dumps(state.to_dict()))) == state


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"bias": "sideways"},
        {"adds": "a"},
        {"adds": [["a"]]},
        {"adds": [[["nested"], 1]]},
        {"adds": [["a", "1"]]},
        {"removes": [["a", float("nan")]]},
        {"extra": 1},
    ],
)
def test_from_dict_refuses_malformed_data(bad: Any) -> None:
    with pytest.raises(InvalidInput):
        LWWElementSet.from_dict(bad)


def test_from_dict_keeps_the_latest_of_duplicates() -> None:
    state = LWWElementSet.from_dict({"adds": [["a", 1], ["a", 5], ["a", 3]], "removes": []})
    assert state == LWWElementSet[str]().add("a", 5)


def test_only_json_scalars_serialise() -> None:
    with pytest.raises(InvalidInput):
        LWWElementSet[Any]().add(("tuple",), 1).to_dict()
