"""Order-independent row checksums (scalecore.checksum)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalecore.checksum import Digest, encode_row, row_hash

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
)
rows = st.lists(st.tuples(values, values, values), max_size=30)


@given(rows, st.randoms())
def test_the_order_rows_are_added_in_does_not_matter(data: list[tuple[object, ...]], rnd) -> None:
    first, second = Digest(), Digest()
    first.update(data)  # type: ignore[arg-type]
    shuffled = list(data)
    rnd.shuffle(shuffled)
    # Split in two groups and merge: the grouping does not matter either.
    left, right = Digest(), Digest()
    left.update(shuffled[: len(shuffled) // 2])  # type: ignore[arg-type]
    right.update(shuffled[len(shuffled) // 2 :])  # type: ignore[arg-type]
    left.merge(right)
    second.update(shuffled)  # type: ignore[arg-type]
    assert first == second == left
    assert first.count == len(data)


def test_a_duplicated_row_does_not_cancel_out() -> None:
    once, twice = Digest(), Digest()
    once.add(("a",))
    twice.add(("a",))
    twice.add(("a",))
    twice.add(("a",))
    assert once.total != twice.total


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((1,), (1.0,)),
        ((1,), ("1",)),
        ((1,), (True,)),
        ((0,), (False,)),
        (("ab", "c"), ("a", "bc")),
        ((None,), ("None",)),
        ((b"x",), ("x",)),
        ((0.1,), (0.1000000000000001,)),
    ],
)
def test_types_and_values_are_part_of_the_encoding(
    a: tuple[object, ...], b: tuple[object, ...]
) -> None:
    assert encode_row(a) != encode_row(b)  # type: ignore[arg-type]
    assert row_hash(a) != row_hash(b)  # type: ignore[arg-type]


def test_other_types_are_refused() -> None:
    import datetime as dt

    with pytest.raises(TypeError, match="datetime"):
        encode_row((dt.datetime.now(),))  # type: ignore[arg-type]


def test_a_changed_row_changes_the_digest_but_not_the_count() -> None:
    before, after = Digest(), Digest()
    before.update([("u1", 1.0), ("u2", 2.0)])
    after.update([("u1", 1.0), ("u2", 2.5)])
    assert before.count == after.count
    assert before != after
    assert str(before).startswith("2 rows, checksum ")
    assert len(before.hexdigest) == 32
