"""Order-independent checksums of rows, for comparing two copies of a data set.

A :class:`Digest` accumulates rows in any order and compares equal to another digest of the
same multiset of rows, whatever order or grouping either side read them in. That is what a
migration needs: the source is read shard by shard in one layout, the target in another,
and both sides must still agree row for row.

Each row is encoded canonically (:func:`encode_row`: the type and value of every field,
so ``("ab", "c")`` and ``("a", "bc")`` differ), hashed with BLAKE2b to
128 bits, and the hashes are *added* modulo 2**128. Addition, unlike XOR, does not cancel
a row that appears twice. The digest also counts rows, so a difference is reported as
"rows missing" or "rows differ" without a second pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import attrs

__all__ = ["MODULUS", "Digest", "encode_row", "row_hash"]

#: Checksums are sums modulo this (128 bits).
MODULUS = 1 << 128
_Field = None | bool | int | float | str | bytes


_PLAIN = frozenset({type(None), bool, int, float, str, bytes})


def encode_row(values: Sequence[_Field]) -> bytes:
    """The canonical bytes of a row of plain values: the ``repr`` of the tuple.

    For these types ``repr`` is exact and unambiguous: types are part of it (``1``, ``1.0``,
    ``'1'`` and ``True`` all differ), floats round-trip exactly, text is quoted and
    escaped, so ``("ab", "c")`` and ``("a", "bc")`` differ. It is also computed in C, which
    matters at millions of rows. Raises ``TypeError`` for any other type: callers
    normalise driver values (decimals, datetimes) first.
    """
    row = tuple(values)
    if not _PLAIN.issuperset(map(type, row)):
        odd = next(value for value in row if type(value) not in _PLAIN)
        raise TypeError(f"cannot encode a {type(odd).__name__} in a row checksum")
    return repr(row).encode("utf-8", "surrogatepass")


def row_hash(values: Sequence[_Field]) -> int:
    """A 128-bit hash of the row's canonical encoding."""
    return int.from_bytes(hashlib.blake2b(encode_row(values), digest_size=16).digest(), "big")


@attrs.define
class Digest:
    """Count and order-independent sum of row hashes. Mutable; not thread-safe."""

    count: int = 0
    total: int = 0

    def add(self, values: Sequence[_Field]) -> None:
        """Account for one row."""
        self.add_hash(row_hash(values))

    def add_hash(self, value: int) -> None:
        """Account for one row given by its :func:`row_hash`."""
        self.count += 1
        self.total = (self.total + value) % MODULUS

    def update(self, rows: Iterable[Sequence[_Field]]) -> None:
        for row in rows:
            self.add(row)

    def merge(self, other: Digest) -> None:
        """Add ``other``'s rows to this digest."""
        self.count += other.count
        self.total = (self.total + other.total) % MODULUS

    def remove(self, other: Digest) -> None:
        """Take ``other``'s rows (all accounted for in this digest) out of it."""
        self.count -= other.count
        self.total = (self.total - other.total) % MODULUS

    @property
    def hexdigest(self) -> str:
        """The sum as 32 hex digits (for reports and journals)."""
        return f"{self.total:032x}"

    def __str__(self) -> str:
        return f"{self.count} rows, checksum {self.hexdigest[:12]}"
