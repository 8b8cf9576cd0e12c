"""A last-writer-wins element set: a replicated set that converges without coordination.

Each replica records, per element, the latest timestamp it has seen an ``add`` and the
latest it has seen a ``remove``. An element is in the set when its add is newer than its
remove. Merging two replicas keeps the larger timestamp of each, so merge is commutative,
associative and idempotent: replicas that have seen the same operations hold the same
set, whatever the order, duplication or grouping in which the operations arrived.

Timestamps are whatever totally ordered numbers the writers agree on (epoch seconds, a
hybrid logical clock, a Lamport counter); with wall clocks, clock skew decides races.

Ties (an add and a remove with the same timestamp) go to ``bias``: ``"add"`` (the
default) keeps the element, ``"remove"`` drops it. Replicas must use the same bias;
merging sets of different bias raises :class:`InvalidInput`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import Any, Generic, Literal, TypeVar, cast

from scalecore.errors import InvalidInput
from scalecore.types import JSONObject, JSONValue
from scalecore.validate import is_finite_number

__all__ = ["Bias", "LWWElementSet", "merge_all"]

T = TypeVar("T", bound=Hashable)

#: Which operation wins when an add and a remove carry the same timestamp.
Bias = Literal["add", "remove"]
_BIASES: tuple[Bias, ...] = ("add", "remove")


class LWWElementSet(Generic[T]):
    """An immutable LWW-element-set: ``add``, ``remove`` and ``merge`` return new sets.

    Immutability makes a set a plain value: safe to share between threads, to cache, and
    to compare with ``==`` (equal when the recorded timestamps and the bias are equal).
    Each update copies the set's two maps, ``O(n)``; the set is meant for the small
    replicated collections of a web service (likes, follow lists, feature flags).

    Elements must be hashable; :meth:`to_dict` additionally needs them to be JSON scalars
    (str, int, float, bool or None). Timestamps are finite ints or floats.
    """

    __slots__ = ("_adds", "_bias", "_removes")

    def __init__(
        self,
        adds: Mapping[T, float] | None = None,
        removes: Mapping[T, float] | None = None,
        *,
        bias: Bias = "add",
    ) -> None:
        """Build a set from per-element latest add and remove timestamps (empty by default).

        Raises :class:`InvalidInput` for an unknown ``bias`` or a non-finite timestamp.
        """
        if bias not in _BIASES:
            raise InvalidInput(f"bias must be 'add' or 'remove', got {bias!r}")
        self._bias: Bias = bias
        self._adds: dict[T, float] = {e: _check_ts(ts) for e, ts in (adds or {}).items()}
        self._removes: dict[T, float] = {e: _check_ts(ts) for e, ts in (removes or {}).items()}

    @property
    def bias(self) -> Bias:
        return self._bias

    def add(self, element: T, timestamp: float) -> LWWElementSet[T]:
        """Return a set that has also seen ``add(element)`` at ``timestamp``."""
        timestamp = _check_ts(timestamp)
        if self._adds.get(element, -math.inf) >= timestamp:
            return self
        return self._raw({**self._adds, element: timestamp}, self._removes, self._bias)

    def remove(self, element: T, timestamp: float) -> LWWElementSet[T]:
        """Return a set that has also seen ``remove(element)`` at ``timestamp``.

        The remove is recorded even if the element was never added here: an older add
        may still arrive from another replica, and must lose.
        """
        timestamp = _check_ts(timestamp)
        if self._removes.get(element, -math.inf) >= timestamp:
            return self
        return self._raw(self._adds, {**self._removes, element: timestamp}, self._bias)

    @classmethod
    def _raw(cls, adds: dict[T, float], removes: dict[T, float], bias: Bias) -> LWWElementSet[T]:
        # Inputs are already validated; the dicts are never mutated after construction,
        # so an unchanged one may be shared between sets.
        result: LWWElementSet[T] = object.__new__(cls)
        result._adds, result._removes, result._bias = adds, removes, bias
        return result

    def contains(self, element: T) -> bool:
        """Whether ``element`` is in the set (its add is newer than its remove, or tied
        with it under ``bias="add"``)."""
        added = self._adds.get(element)
        if added is None:
            return False
        removed = self._removes.get(element)
        if removed is None:
            return True
        return added > removed or (added == removed and self._bias == "add")

    def __contains__(self, element: object) -> bool:
        try:
            return self.contains(cast(T, element))
        except TypeError:  # unhashable
            return False

    def elements(self) -> frozenset[T]:
        """The elements currently in the set."""
        return frozenset(e for e in self._adds if self.contains(e))

    def __iter__(self) -> Iterator[T]:
        return iter(self.elements())

    def __len__(self) -> int:
        return sum(1 for e in self._adds if self.contains(e))

    def merge(self, other: LWWElementSet[T]) -> LWWElementSet[T]:
        """Return the join of both replicas: for each element, the latest add and remove.

        Commutative, associative and idempotent. Raises :class:`InvalidInput` if the two
        sets have different biases.
        """
        if not isinstance(other, LWWElementSet):
            raise InvalidInput(f"can only merge an LWWElementSet, not {type(other).__name__}")
        if other._bias != self._bias:
            raise InvalidInput(f"cannot merge bias {self._bias!r} with bias {other._bias!r}")
        return self._raw(
            _join(self._adds, other._adds), _join(self._removes, other._removes), self._bias
        )

    def to_dict(self) -> JSONObject:
        """A JSON-compatible form, deterministic for equal sets.

        ``{"bias": ..., "adds": [[element, ts], ...], "removes": [...]}``, each list sorted
        by the element's JSON text. Raises :class:`InvalidInput` if an element is not a
        JSON scalar.
        """
        return {
            "bias": self._bias,
            "adds": _pairs(self._adds),
            "removes": _pairs(self._removes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LWWElementSet[Any]:
        """Rebuild a set from :meth:`to_dict` output; raise :class:`InvalidInput` if malformed.

        An element listed twice keeps its latest timestamp, as a merge would.
        """
        if not isinstance(data, Mapping):
            raise InvalidInput("an LWWElementSet is serialised as a JSON object")
        unknown = set(data) - {"bias", "adds", "removes"}
        if unknown:
            raise InvalidInput(f"unknown keys in a serialised LWWElementSet: {sorted(unknown)}")
        bias = data.get("bias", "add")
        if bias not in _BIASES:
            raise InvalidInput(f"bias must be 'add' or 'remove', got {bias!r}")
        return LWWElementSet(
            _read_pairs(data.get("adds", []), "adds"),
            _read_pairs(data.get("removes", []), "removes"),
            bias=bias,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LWWElementSet):
            return NotImplemented
        return (self._bias, self._adds, self._removes) == (
            other._bias,
            other._adds,
            other._removes,
        )

    def __hash__(self) -> int:
        return hash((self._bias, frozenset(self._adds.items()), frozenset(self._removes.items())))

    def __repr__(self) -> str:
        return f"LWWElementSet({set(self.elements())!r}, bias={self._bias!r})"


def _check_ts(timestamp: object) -> float:
    if not is_finite_number(timestamp):
        raise InvalidInput(f"a timestamp must be a finite number, got {timestamp!r}")
    return timestamp


def _join(left: dict[T, float], right: dict[T, float]) -> dict[T, float]:
    joined = dict(left)
    for element, timestamp in right.items():
        if timestamp > joined.get(element, -math.inf):
            joined[element] = timestamp
    return joined


_SCALARS = (str, int, float, bool, type(None))


def _pairs(entries: Mapping[Any, float]) -> list[JSONValue]:
    pairs: list[tuple[str, JSONValue]] = []
    for element, timestamp in entries.items():
        if not isinstance(element, _SCALARS):
            raise InvalidInput(
                f"only JSON scalars serialise; cannot serialise a {type(element).__name__}"
            )
        pairs.append((json.dumps(element), [element, timestamp]))
    pairs.sort(key=lambda pair: pair[0])
    return [pair for _, pair in pairs]


def _read_pairs(raw: object, where: str) -> dict[Any, float]:
    if not isinstance(raw, list):
        raise InvalidInput(f"{where} must be a list of [element, timestamp] pairs")
    entries: dict[Any, float] = {}
    for pair in raw:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise InvalidInput(f"{where} must hold [element, timestamp] pairs, got {pair!r}")
        element, timestamp = pair
        if not isinstance(element, _SCALARS):
            raise InvalidInput(f"{where}: an element must be a JSON scalar, got {element!r}")
        timestamp = _check_ts(timestamp)
        if timestamp > entries.get(element, -math.inf):
            entries[element] = timestamp
    return entries


def merge_all(sets: Iterable[LWWElementSet[T]]) -> LWWElementSet[T]:
    """Merge any number of replicas; raise :class:`InvalidInput` if ``sets`` is empty."""
    iterator = iter(sets)
    try:
        result = next(iterator)
    except StopIteration:
        raise InvalidInput("merge_all needs at least one set") from None
    for other in iterator:
        result = result.merge(other)
    return result
