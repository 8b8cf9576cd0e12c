"""Copy and compare SQL tables between two sharded layouts, one table at a time.

A table is read on every physical shard in primary-key order, in pages (keyset
pagination: ``WHERE pk > :last ORDER BY pk LIMIT n``), and the shards' streams are merged
into one stream in key order. Source and target streams are then walked side by side (a
merge join), so every difference is found in one pass with memory bounded by a page per
shard, whatever the size of the table:

- a row only in the source, or different in the target, is upserted on the target shard
  the target's router assigns to the row's logical shard;
- a row only in the target (deleted in the source since an earlier pass), or on a target
  shard its logical shard does not map to, is deleted there.

The walk also sums an order-independent digest (:class:`scalecore.checksum.Digest`) of
every row it read on each side, per *bucket*: a 32nd of a logical shard, chosen by the last
character of the row's last key column (random bits of an id), so checksums locate a
change to a few rows, not to a whole logical shard. Buckets that needed no write are
verified by those sums. Buckets that were written are read back afterwards
(:func:`digest_table`, restricted to them by a filter on the id characters that the
database evaluates) and compared with the source: that read is independent of the copy
path. Reports aggregate buckets per logical shard (:func:`by_logical_shard`).

Running the walk again after a kill simply finds what is already there: a copy is
resumable and idempotent without any bookkeeping, and a second pass writes only what
changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import math
import operator
import re
import time
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any

import attrs
import sqlalchemy as sa

from scalecore.checksum import MODULUS, Digest, encode_row, row_hash
from scalecore.errors import ScalecoreError
from scalecore.ids import ID_LENGTH, LOGICAL_SHARDS, shard_of

__all__ = [
    "PAGE_ROWS",
    "Buckets",
    "Difference",
    "ShardSet",
    "SyncResult",
    "digest_table",
    "logical_shard",
    "sync_table",
]

#: Rows read per page and written per batch.
PAGE_ROWS = 2000
#: Substring of an id that fixes its logical shard up to the lowest bit (see ids.py: the
#: 16 shard bits sit in characters 10..13; characters 10..12 hold all but bit 0).
_PREFIX_START, _PREFIX_LENGTH = 10, 3
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_shard_cache: dict[str, int] = {}


class MigrationError(ScalecoreError):
    """The data cannot be copied as it is (a row the migration cannot place or order)."""


def logical_shard(some_id: object) -> int:
    """The logical shard an id carries (memoised on the characters that encode it)."""
    if isinstance(some_id, str) and len(some_id) == ID_LENGTH:
        cached = _shard_cache.get(some_id[10:14])
        if cached is not None:
            return cached
        shard = shard_of(some_id)
        _shard_cache[some_id[10:14]] = shard
        return shard
    return shard_of(some_id)


_DIGIT = {char: value for value, char in enumerate(_ALPHABET)}
#: Buckets per logical shard: the last character of a row's last key column (an id's
#: lowest five random bits), so a bucket holds about 1/32 of a logical shard's rows.
BUCKETS_PER_SHARD = 32


def bucket_of(key: tuple[Any, ...], sharded: bool) -> int:
    """The digest bucket of a row: ``logical shard * 32 + a digit of its last key column``
    (-1 for a table not sharded by id). Checksums are kept per bucket, so a later pass
    finds the few rows that changed without walking whole logical shards."""
    if not sharded:
        return -1
    last = key[-1]
    digit = _DIGIT.get(last[-1], 0) if isinstance(last, str) and last else 0
    return logical_shard(key[0]) * BUCKETS_PER_SHARD + digit


_SLOTS = LOGICAL_SHARDS * BUCKETS_PER_SHARD + 1  # slot 0: bucket -1
_LOW = (1 << 64) - 1
#: Buckets a :class:`Buckets` keeps in a dict before it switches to flat arrays.
_SPARSE_MAX = 2048


class Buckets(MutableMapping[int, Digest]):
    """Count and checksum per bucket (:func:`bucket_of`), held compactly: a small dict
    while few buckets are set, then three flat arrays indexed by bucket (3 MiB whatever
    the number of rows, where a Python object per bucket of a whole table took tens of
    MiB). A bucket with no rows and a zero checksum is absent: reading it gives
    ``KeyError`` (``get`` gives the default), setting it to ``Digest()`` removes it.
    Values read are fresh :class:`Digest` objects: change a bucket through this mapping
    (``add_hash``, ``merge``, item assignment), not through a value read from it."""

    __slots__ = ("_counts", "_high", "_low", "_sparse")

    def __init__(self, items: Mapping[int, Digest] | None = None) -> None:
        self._sparse: dict[int, tuple[int, int]] | None = {}
        self._counts = array("q")
        self._low = array("Q")
        self._high = array("Q")
        if items:
            self.update(items)

    def _dense(self) -> None:
        sparse = self._sparse
        if sparse is None:
            return
        self._counts = array("q", bytes(8 * _SLOTS))
        self._low = array("Q", bytes(8 * _SLOTS))
        self._high = array("Q", bytes(8 * _SLOTS))
        self._sparse = None
        for bucket, (count, total) in sparse.items():
            self._put(bucket, count, total)

    def _put(self, bucket: int, count: int, total: int) -> None:
        total %= MODULUS
        if self._sparse is not None:
            if count or total:
                self._sparse[bucket] = (count, total)
                if len(self._sparse) > _SPARSE_MAX:
                    self._dense()
            else:
                self._sparse.pop(bucket, None)
            return
        slot = bucket + 1
        self._counts[slot] = count
        self._low[slot] = total & _LOW
        self._high[slot] = total >> 64

    def _pair(self, bucket: int) -> tuple[int, int]:
        if self._sparse is not None:
            return self._sparse.get(bucket, (0, 0))
        slot = bucket + 1
        if not 0 <= slot < _SLOTS:
            return 0, 0
        return self._counts[slot], (self._high[slot] << 64) | self._low[slot]

    def add_hash(self, bucket: int, value: int) -> None:
        """Account for one row of ``bucket`` given by its row hash."""
        count, total = self._pair(bucket)
        self._put(bucket, count + 1, total + value)

    def merge(self, bucket: int, digest: Digest) -> None:
        """Add ``digest``'s rows to ``bucket``."""
        count, total = self._pair(bucket)
        self._put(bucket, count + digest.count, total + digest.total)

    def rows(self, buckets: Iterable[int] | None = None) -> int:
        """Rows counted in every bucket (or in ``buckets``)."""
        if buckets is None:
            if self._sparse is not None:
                return sum(count for count, _ in self._sparse.values())
            return sum(self._counts)
        return sum(self._pair(bucket)[0] for bucket in buckets)

    def negative(self) -> list[int]:
        """The buckets counting fewer than no rows (a record brought up to date by
        difference that was not the target's)."""
        if self._sparse is not None:
            return sorted(bucket for bucket, (count, _) in self._sparse.items() if count < 0)
        return [slot - 1 for slot, count in enumerate(self._counts) if count < 0]

    def without(self, buckets: Iterable[int] = (), shards: Iterable[int] = ()) -> Buckets:
        """A copy without ``buckets`` and without every bucket of the logical ``shards``."""
        copy = Buckets()
        if self._sparse is not None:
            copy._sparse = dict(self._sparse)
        else:
            copy._sparse = None
            copy._counts, copy._low, copy._high = (
                array("q", self._counts),
                array("Q", self._low),
                array("Q", self._high),
            )
        for bucket in buckets:
            copy._put(bucket, 0, 0)
        for shard in shards:
            first = shard * BUCKETS_PER_SHARD if shard >= 0 else -1
            for bucket in range(first, first + (BUCKETS_PER_SHARD if shard >= 0 else 1)):
                copy._put(bucket, 0, 0)
        return copy

    def copy_from(self, other: Buckets, buckets: Iterable[int]) -> None:
        """Set ``buckets`` as ``other`` holds them (absent there: absent here)."""
        for bucket in buckets:
            self._put(bucket, *other._pair(bucket))

    def __getitem__(self, bucket: int) -> Digest:
        count, total = self._pair(bucket)
        if not count and not total:
            raise KeyError(bucket)
        return Digest(count, total)

    def __setitem__(self, bucket: int, digest: Digest) -> None:
        self._put(bucket, digest.count, digest.total)

    def __delitem__(self, bucket: int) -> None:
        if bucket not in self:
            raise KeyError(bucket)
        self._put(bucket, 0, 0)

    def __contains__(self, bucket: object) -> bool:
        if not isinstance(bucket, int):
            return False
        count, total = self._pair(bucket)
        return bool(count or total)

    def __iter__(self) -> Iterator[int]:
        """The buckets set, in bucket order."""
        if self._sparse is not None:
            return iter(sorted(self._sparse))
        slots = zip(self._counts, self._low, self._high, strict=True)
        return (slot - 1 for slot, (count, low, high) in enumerate(slots) if count or low or high)

    def __len__(self) -> int:
        if self._sparse is not None:
            return len(self._sparse)
        return sum(1 for _ in self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self.items()) == dict(other.items())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Buckets({len(self)} set, {self.rows():,} rows)"


def logical_of(bucket: int) -> int:
    """The logical shard of a bucket (-1 stays -1)."""
    return -1 if bucket < 0 else bucket // BUCKETS_PER_SHARD


def _prefix(logical: int) -> str:
    return (
        _ALPHABET[(logical >> 11) & 31]
        + _ALPHABET[(logical >> 6) & 31]
        + _ALPHABET[(logical >> 1) & 31]
    )


@attrs.frozen
class ShardSet:
    """One side's physical shards of a table: how to read and write shard ``i``, and where
    a logical shard lives.

    ``read(i)`` and ``write(i)`` are context managers yielding a connection (``write``
    commits at the end of the block). ``place(logical)`` is the physical shard of a logical
    shard, or ``None`` when the table is not sharded by id (one shard: index 0). ``label``
    names the side in messages, never with a URL.
    """

    label: str
    count: int
    read: Callable[[int], contextlib.AbstractContextManager[sa.Connection]]
    write: Callable[[int], contextlib.AbstractContextManager[sa.Connection]]
    place: Callable[[int], int] | None


@attrs.define
class Difference:
    """One row that differs between the sides: ``kind`` is ``missing`` (not in the target),
    ``extra`` (only in the target), ``differs`` or ``misplaced`` (on the wrong shard)."""

    table: str
    logical_shard: int | None
    key: tuple[Any, ...]
    kind: str

    def __str__(self) -> str:
        where = "" if self.logical_shard is None else f" (logical shard {self.logical_shard})"
        key = ", ".join(str(part) for part in self.key)
        return f"{self.table} [{key}]{where}: {self.kind}"


@attrs.define
class SyncResult:
    """What one walk of a table found and did."""

    table: str
    read: int = 0
    written: int = 0
    deleted: int = 0
    source: Buckets = attrs.Factory(Buckets)
    target: Buckets = attrs.Factory(Buckets)
    dirty: set[int] = attrs.Factory(set)
    differences: list[Difference] = attrs.Factory(list)
    #: How many rows differ (``differences`` keeps only the first few).
    different: int = 0
    #: Size of the source rows read, in their canonical encoding.
    bytes: int = 0
    seconds: float = 0.0


# --------------------------------------------------------------------------- reading


def _normaliser(table: sa.Table) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """Turn a driver row into plain values of the column's Python type, so both dialects
    (SQLite keeps what it is given, PostgreSQL its declared type) yield identical rows."""
    kinds: list[Callable[[Any], Any] | None] = []
    for column in table.columns:
        if isinstance(column.type, sa.Boolean):
            kinds.append(bool)
        elif isinstance(column.type, sa.Float):
            kinds.append(float)
        elif isinstance(column.type, sa.Integer):
            kinds.append(int)
        else:
            kinds.append(None)

    typed = [(i, kind) for i, kind in enumerate(kinds) if kind is not None]

    def normalise(row: Sequence[Any]) -> tuple[Any, ...]:
        values = tuple(row)
        # Converting only what is off (rare) keeps this cheap: it runs for every row.
        for position, kind in typed:
            value = values[position]
            if value is not None and type(value) is not kind:
                return tuple(
                    v if k is None or v is None else k(v)
                    for k, v in zip(kinds, values, strict=True)
                )
        return values

    return normalise


def _key_columns(table: sa.Table) -> list[sa.Column[Any]]:
    return list(table.primary_key.columns)


def _scan(
    side: ShardSet,
    table: sa.Table,
    index: int,
    only: set[int] | None,
    sharded: bool,
    wanted: Sequence[tuple[Any, ...]] | None = None,
) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...], int]]:
    """Yield (key, row, shard index) of every row of ``table`` on shard ``index``, in key
    order, a page at a time; with ``only``, just the rows of those buckets; with
    ``wanted`` (at most :data:`PAGE_ROWS` primary keys), just those rows."""
    keys = _key_columns(table)
    normalise = _normaliser(table)
    positions = [list(table.columns).index(column) for column in keys]
    pick = operator.itemgetter(*positions)
    single = len(positions) == 1
    with side.read(index) as connection:
        if not sa.inspect(connection).has_table(table.name):
            return  # a target not initialised yet holds nothing
    if wanted is not None:
        if not wanted:
            return
        exact = set(wanted)
        with side.read(index) as connection:
            found = _lookup(connection, table, keys, exact)
        for raw in sorted((normalise(r) for r in found), key=pick):
            key = (pick(raw),) if single else pick(raw)
            if key in exact:
                yield key, raw, index
        return
    last: tuple[Any, ...] | None = None
    while True:
        with side.read(index) as connection:
            query = _page_query(table, keys, connection.dialect.name, only, sharded, last)
            rows = connection.execute(query).all()
        for raw in rows:
            row = normalise(raw)
            key = (pick(row),) if single else pick(row)
            if last is not None and not key > last:
                raise MigrationError(
                    f"{side.label} shard {index} returned {table.name} rows out of key order; "
                    "the database's collation must order ids as bytes do"
                )
            last = key
            if only is not None and sharded and bucket_of(key, sharded) not in only:
                continue
            yield key, row, index
        if len(rows) < PAGE_ROWS:
            return


def _lookup(
    connection: sa.Connection,
    table: sa.Table,
    keys: list[sa.Column[Any]],
    wanted: set[tuple[Any, ...]],
) -> Sequence[Sequence[Any]]:
    """The rows of ``table`` whose primary keys are in ``wanted`` (or a superset of them),
    every column in table order.

    One key column: an ``IN`` list. Several text key columns (the follow and feed
    tables): a join with the keys as a list (PostgreSQL: ``unnest`` of one array per
    column; SQLite: a ``VALUES`` list), which both databases answer with one primary-key
    index probe per key. (A list of row values is not answered from the index on either
    database, and one ``IN`` list per column matches every row of each listed first
    column: tens of rows read per row wanted.) The join is written as SQL text: compiling
    thousands of bound rows through SQLAlchemy's ``values()`` took longer than the query.
    """
    if len(keys) == 1:
        query = sa.select(*table.columns).where(keys[0].in_(sorted(key[0] for key in wanted)))
        return connection.execute(query).all()
    dialect = connection.dialect.name
    names = [column.name for column in table.columns]
    if (
        not all(isinstance(column.type, sa.String) for column in keys)
        or dialect not in ("postgresql", "sqlite")
        or not all(_IDENTIFIER.fullmatch(name) for name in (table.name, *names))
    ):
        query = sa.select(*table.columns).where(
            *(
                column.in_(sorted({key[position] for key in wanted}))
                for position, column in enumerate(keys)
            )
        )
        return connection.execute(query).all()
    columns = ", ".join(f"t.{name}" for name in names)
    joined = " AND ".join(f"t.{column.name} = w.k{n}" for n, column in enumerate(keys))
    listed = ", ".join(f"k{n}" for n in range(len(keys)))
    ordered = sorted(wanted)
    if dialect == "postgresql":
        arrays = ", ".join(f"CAST(%(k{n})s AS text[])" for n in range(len(keys)))
        statement = (
            f"SELECT {columns} FROM unnest({arrays}) AS w ({listed}) "  # noqa: S608
            f"JOIN {table.name} AS t ON {joined}"
        )
        parameters: Any = {f"k{n}": [key[n] for key in ordered] for n in range(len(keys))}
    else:
        row = "(" + ", ".join("?" for _ in keys) + ")"
        statement = (
            f"WITH w ({listed}) AS (VALUES {', '.join(row for _ in ordered)}) "  # noqa: S608
            f"SELECT {columns} FROM w JOIN {table.name} AS t ON {joined}"
        )
        parameters = tuple(part for key in ordered for part in key)
    return connection.exec_driver_sql(statement, parameters).all()


_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _page_query(
    table: sa.Table,
    keys: list[sa.Column[Any]],
    dialect: str,
    only: set[int] | None,
    sharded: bool,
    last: tuple[Any, ...] | None,
) -> sa.Select[Any]:
    """The next page of ``table`` after key ``last``, in key order.

    Ids sort the same way under every collation (fixed-width upper-case ASCII), so sharded
    tables use their primary key index as it is. Other text keys (the ledger's job names)
    are compared as bytes (``COLLATE "C"`` on PostgreSQL, SQLite's default), the order
    Python compares them in.
    """
    order: list[Any] = list(keys)
    if not sharded and dialect == "postgresql":
        order = [
            column.collate("C") if isinstance(column.type, sa.String) else column for column in keys
        ]
    query = sa.select(*table.columns).order_by(*order).limit(PAGE_ROWS)
    if only is not None and sharded:
        # The id characters that fix a bucket up to a pair of logical shards (Python
        # keeps the exact ones): a filter both dialects evaluate server-side.
        pairs = sorted(
            {_prefix(logical_of(bucket)) + _ALPHABET[bucket % BUCKETS_PER_SHARD] for bucket in only}
        )
        selector = sa.func.substr(keys[0], _PREFIX_START + 1, _PREFIX_LENGTH).concat(
            sa.func.substr(keys[-1], ID_LENGTH, 1)
        )
        # Rendered inline (id characters only): a later pass may name tens of thousands
        # of buckets, more than a statement may bind on SQLite.
        query = query.where(
            selector.in_(sa.bindparam("buckets", pairs, expanding=True, literal_execute=True))
        )
    if last is not None:
        if len(order) == 1:
            query = query.where(order[0] > last[0])
        else:
            query = query.where(sa.tuple_(*order) > sa.tuple_(*last))
    return query


def _merged(
    side: ShardSet,
    table: sa.Table,
    only: set[int] | None,
    sharded: bool,
    wanted: Sequence[tuple[Any, ...]] | None = None,
) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...], int]]:
    streams = [_scan(side, table, index, only, sharded, wanted) for index in range(side.count)]
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=lambda item: item[0])


# --------------------------------------------------------------------------- writing


class _Writer:
    """Buffers upserts and deletes per target shard; flushes a batch at a time."""

    def __init__(self, side: ShardSet, table: sa.Table, result: SyncResult) -> None:
        self._side = side
        self._table = table
        self._result = result
        self._keys = _key_columns(table)
        self._names = [column.name for column in table.columns]
        self._upserts: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self._deletes: dict[int, list[tuple[Any, ...]]] = defaultdict(list)

    def upsert(self, index: int, row: tuple[Any, ...]) -> None:
        batch = self._upserts[index]
        batch.append(dict(zip(self._names, row, strict=True)))
        if len(batch) >= PAGE_ROWS:
            self._flush_upserts(index)

    def delete(self, index: int, key: tuple[Any, ...]) -> None:
        batch = self._deletes[index]
        batch.append(key)
        if len(batch) >= PAGE_ROWS:
            self._flush_deletes(index)

    def flush(self) -> None:
        for index in list(self._deletes):
            self._flush_deletes(index)
        for index in list(self._upserts):
            self._flush_upserts(index)

    def _flush_upserts(self, index: int) -> None:
        rows = self._upserts.pop(index, [])
        if not rows:
            return
        # Deletes first: a misplaced row's key must leave its old shard before it lands
        # (on another shard) and, within one shard, a delete never follows an upsert.
        self._flush_deletes(index)
        from adapters.photofeed.schema import upsert

        key_names = {column.name for column in self._keys}
        with self._side.write(index) as connection:
            insert = upsert(connection, self._table)
            updates = {name: insert.excluded[name] for name in self._names if name not in key_names}
            statement = insert.on_conflict_do_update(index_elements=self._keys, set_=updates)
            connection.execute(statement, rows)
        self._result.written += len(rows)

    def _flush_deletes(self, index: int) -> None:
        keys = self._deletes.pop(index, [])
        if not keys:
            return
        with self._side.write(index) as connection:
            if len(self._keys) == 1:
                condition = self._keys[0].in_([key[0] for key in keys])
            else:
                condition = sa.tuple_(*self._keys).in_(keys)
            connection.execute(self._table.delete().where(condition))
        self._result.deleted += len(keys)


# --------------------------------------------------------------------------- the walk


def sync_table(
    table: sa.Table,
    source: ShardSet,
    target: ShardSet,
    *,
    write: bool,
    only: set[int] | None = None,
    progress: Callable[[int], None] | None = None,
    max_differences: int = 0,
    wanted: Sequence[tuple[Any, ...]] | None = None,
) -> SyncResult:
    """Walk ``table`` on both sides (just the buckets in ``only``, or just the rows whose
    primary keys are in ``wanted``, at most :data:`PAGE_ROWS` of them, if given).

    With ``write``, make the target equal to the source; without, only compare (the
    differences, up to ``max_differences`` of them, are kept in the result). Digests of
    both sides as read are in the result either way. ``progress(n)`` is called with the
    number of source rows read since the last call.
    """
    began = time.monotonic()
    sharded = target.place is not None
    result = SyncResult(table.name)
    writer = _Writer(target, table, result) if write else None
    source_rows = _merged(source, table, only, sharded, wanted)
    target_rows = _merged(target, table, only, sharded, wanted)
    src = next(source_rows, None)
    tgt = next(target_rows, None)
    pending = 0

    def home(key: tuple[Any, ...]) -> tuple[int | None, int]:
        if target.place is None:
            return None, 0
        logical = logical_shard(key[0])
        return logical, target.place(logical)

    def note(kind: str, logical: int | None, key: tuple[Any, ...]) -> None:
        result.dirty.add(bucket_of(key, sharded))
        result.different += 1
        if len(result.differences) < max_differences:
            result.differences.append(Difference(table.name, logical, key, kind))

    while src is not None or tgt is not None:
        if tgt is None or (src is not None and src[0] < tgt[0]):
            assert src is not None
            key, row, _ = src
            logical, index = home(key)
            source_hash, size = _hash(row)
            result.bytes += size
            result.source.add_hash(bucket_of(key, sharded), source_hash)
            note("missing", logical, key)
            if writer is not None:
                writer.upsert(index, row)
            result.read += 1
            pending += 1
            src = next(source_rows, None)
        elif src is None or tgt[0] < src[0]:
            key, row, where = tgt
            logical, _ = home(key)
            result.target.add_hash(bucket_of(key, sharded), row_hash(row))
            note("extra", logical, key)
            if writer is not None:
                writer.delete(where, key)
            tgt = next(target_rows, None)
        else:
            key, row, _ = src
            logical, index = home(key)
            source_hash, size = _hash(row)
            result.bytes += size
            result.source.add_hash(bucket_of(key, sharded), source_hash)
            # Every copy of this key in the target: one on the right shard, equal, is kept.
            kept = False
            while tgt is not None and tgt[0] == key:
                _, target_row, where = tgt
                target_hash = source_hash if target_row == row else row_hash(target_row)
                if where == index and target_row == row and not kept:
                    result.target.add_hash(bucket_of(key, sharded), target_hash)
                    kept = True
                else:
                    result.target.add_hash(bucket_of(key, sharded), target_hash)
                    note("misplaced" if where != index else "differs", logical, key)
                    if writer is not None and where != index:
                        writer.delete(where, key)
                tgt = next(target_rows, None)
            if not kept and writer is not None:
                writer.upsert(index, row)
            result.read += 1
            pending += 1
            src = next(source_rows, None)
        if progress is not None and pending >= PAGE_ROWS:
            progress(pending)
            pending = 0
    if writer is not None:
        writer.flush()
    if progress is not None and pending:
        progress(pending)
    result.seconds = time.monotonic() - began
    return result


def _hash(row: tuple[Any, ...]) -> tuple[int, int]:
    """The row's :func:`row_hash` and the size of its canonical encoding."""
    data = encode_row(row)
    return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "big"), len(data)


def _row_hash(row: tuple[Any, ...]) -> int:
    """:func:`scalecore.checksum.row_hash` of a row already normalised (plain types only),
    without re-checking its types: the same value, computed in C."""
    data = repr(row).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "big")


def digest_table(
    table: sa.Table,
    side: ShardSet,
    *,
    sharded: bool,
    only: set[int] | None = None,
    progress: Callable[[int], None] | None = None,
    placed: bool = False,
    wanted: Sequence[tuple[Any, ...]] | None = None,
) -> Buckets:
    """Count and checksum every row of ``table`` on ``side`` per bucket (:func:`bucket_of`;
    just the buckets in ``only``, if given); -1 collects a table not sharded by id.

    With ``placed`` (reading a target back), a row found on a shard its logical shard does
    not map to is hashed as a different row: the application would never find it there,
    so it must not pass for a copy.
    """
    digests = Buckets()
    pending = 0
    for index in range(side.count):
        for key, row, _ in _scan(side, table, index, only, sharded, wanted):
            bucket = bucket_of(key, sharded)
            misplaced = (
                placed
                and sharded
                and side.place is not None
                and side.place(logical_of(bucket)) != index
            )
            if misplaced:
                digests.add_hash(bucket, row_hash(("misplaced on shard", index, *row)))
                continue
            digests.add_hash(bucket, _row_hash(row))
            pending += 1
            if progress is not None and pending >= PAGE_ROWS:
                progress(pending)
                pending = 0
    if progress is not None and pending:
        progress(pending)
    return digests


def count_rows(table: sa.Table, side: ShardSet) -> list[int]:
    """Rows of ``table`` on each shard of ``side`` (0 where the table does not exist)."""
    counts = []
    for index in range(side.count):
        with side.read(index) as connection:
            if not sa.inspect(connection).has_table(table.name):
                counts.append(0)
                continue
            counts.append(
                int(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
            )
    return counts


def by_logical_shard(digests: Mapping[int, Digest]) -> dict[int, Digest]:
    """Bucket digests merged per logical shard (-1 stays -1)."""
    merged: dict[int, Digest] = defaultdict(Digest)
    for bucket, digest in digests.items():
        merged[logical_of(bucket)].merge(digest)
    return dict(merged)


def mismatched(source: Mapping[int, Digest], target: Mapping[int, Digest]) -> set[int]:
    """Keys (buckets or logical shards) whose digests differ between the sides (an absent
    key and an empty digest are equal)."""
    if isinstance(source, Buckets) and isinstance(target, Buckets):
        return {
            bucket
            for bucket in set(source) | set(target)
            if source._pair(bucket) != target._pair(bucket)
        }
    empty = Digest()
    return {
        logical
        for logical in set(source) | set(target)
        if source.get(logical, empty) != target.get(logical, empty)
    }


def rate(count: float, seconds: float) -> str:
    """``count / seconds`` for a report, or ``-`` when too quick to measure."""
    if seconds <= 0 or not math.isfinite(seconds):
        return "-"
    return f"{count / seconds:,.0f}"
