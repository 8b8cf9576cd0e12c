"""``scalecore migrate``: plan, refuse what cannot be done, copy, verify, report.

One run, in this order:

1. read both files as written (no environment overrides) and refuse, before connecting,
   what cannot work: a source that keeps nothing outside its own process (memory blobs,
   sessions or repositories), a target that would lose what it got, sessions on a store
   that cannot list them (unless ``--skip sessions``), two files naming the same place;
2. connect to every backend of both sides (a server that does not answer stops the run
   here, with nothing written);
3. refuse a target holding data that did not come from this source (the journal,
   :mod:`entrypoints.migrate.journal`, says where a target's rows came from);
4. create what the target config allows (databases, tables, bucket), note the source in
   the journal, then copy each store and verify it by reading the target back
   (:mod:`sqlsync`, :mod:`blobs`, :mod:`sessions`); a logical shard that differs after
   the copy (a live source changed it meanwhile) is copied again, up to
   :data:`MAX_ROUNDS` times;
5. report one row per store; the run succeeds only if every store verified.

``--dry-run`` stops after counting and a short timed sample; ``--verify`` only compares.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import sqlalchemy as sa

from adapters.sql.shards import Databases
from entrypoints.migrate import changelog, journal
from entrypoints.migrate.blobs import BlobResult, sync_blobs
from entrypoints.migrate.progress import Progress
from entrypoints.migrate.sessions import SessionResult, sync_sessions
from entrypoints.migrate.sides import Side, fingerprint, load_side, overlap
from entrypoints.migrate.sqlsync import (
    PAGE_ROWS,
    Buckets,
    ShardSet,
    bucket_of,
    by_logical_shard,
    count_rows,
    digest_table,
    logical_of,
    mismatched,
    sync_table,
)
from scalecore.capabilities import Capability
from scalecore.checksum import Digest
from scalecore.errors import ConfigError, ScalecoreError

__all__ = ["MAX_ROUNDS", "PARTS", "SQL_STORES", "Options", "Report", "ReportRow", "migrate"]

#: The photo feed's logical SQL stores, in copy order.
SQL_STORES = ("users", "photos", "follows", "feed")
#: Everything ``--skip`` may name ("database" is every SQL store).
PARTS = (*SQL_STORES, "database", "blobs", "sessions", "ledger")
#: Copy-then-verify rounds per store before a run gives up on a source that keeps changing.
MAX_ROUNDS = 3
#: Differences listed per store by ``--verify`` before "... and N more".
MAX_LISTED = 1000


class Refused(ConfigError):
    """The migration cannot start as asked; nothing was written."""


@attrs.frozen
class Options:
    """What ``scalecore migrate`` was asked to do: ``mode`` is copy, dry-run, verify or
    drop-change-log."""

    source: str
    target: str
    mode: str = "copy"
    skip: frozenset[str] = frozenset()
    #: Walk every logical shard, ignoring the checksums earlier runs recorded (repairs a
    #: target changed behind the migration's back, as ``--verify`` would report).
    full: bool = False


@attrs.define
class ReportRow:
    store: str
    read: int = 0
    written: int = 0
    verified: int = 0
    bytes: int = 0
    seconds: float = 0.0
    status: str = "verified"


@attrs.define
class Report:
    rows: list[ReportRow] = attrs.Factory(list)
    differences: list[str] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)
    estimate: float | None = None

    @property
    def ok(self) -> bool:
        return not self.differences and all(
            row.status in ("verified", "skipped", "counted", "dropped") for row in self.rows
        )

    def table(self) -> str:
        headers = ["store", "read", "written", "verified", "bytes", "seconds", "status"]
        cells = [
            [
                row.store,
                f"{row.read:,}",
                f"{row.written:,}",
                f"{row.verified:,}",
                _size(row.bytes),
                f"{row.seconds:.1f}",
                row.status,
            ]
            for row in self.rows
        ]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]

        def line(values: list[str]) -> str:
            first, *rest = values
            return "  ".join(
                [
                    first.ljust(widths[0]),
                    *(v.rjust(w) for v, w in zip(rest, widths[1:], strict=True)),
                ]
            ).rstrip()

        return "\n".join([line(headers), *(line(c) for c in cells)])


def _size(count: int) -> str:
    if count >= 10**6:
        return f"{count / 1e6:,.1f} MB"
    if count >= 10**3:
        return f"{count / 1e3:,.1f} kB"
    return f"{count} B"


# --------------------------------------------------------------------------- planning


def _refuse_impossible(source: Side, target: Side, skip: frozenset[str]) -> list[str]:
    """Raise :class:`Refused` for what cannot be migrated; return notes on what is skipped."""
    notes: list[str] = []
    sql_wanted = any(store not in skip for store in SQL_STORES)
    if sql_wanted:
        for side in (source, target):
            if not side.sql_repositories:
                verb = "holds" if side.role == "source" else "would hold"
                raise Refused(
                    f"the {side.role}'s [photofeed] repositories = 'memory' {verb} users, "
                    "photos and feeds only inside one process: migrate needs SQL on both sides"
                )
    if "blobs" not in skip:
        for side in (source, target):
            if Capability.DURABLE not in side.capabilities("blobs"):
                raise Refused(
                    f"the {side.role}'s blob store {side.backend('blobs')!r} keeps objects "
                    "only inside one process: nothing can be migrated "
                    + ("from" if side.role == "source" else "into")
                    + " it (use localfs or s3)"
                )
    if "sessions" not in skip:
        src, dst = source.capabilities("sessions"), target.capabilities("sessions")
        if source.backend("sessions") == "memory":
            raise Refused(
                "the source's session store 'memory' keeps sessions only inside one process: "
                "they cannot be migrated; pass --skip sessions (every user logs in again)"
            )
        if Capability.EXPORT not in src:
            raise Refused(
                f"the source's session store {source.backend('sessions')!r} cannot list its "
                "sessions (memcached cannot enumerate keys), so they cannot be copied; pass "
                "--skip sessions to move without them (every logged-in user must log in again "
                "on the new deployment)"
            )
        if Capability.IMPORT not in dst or target.backend("sessions") == "memory":
            raise Refused(
                f"the target's session store {target.backend('sessions')!r} cannot keep "
                "imported sessions; pass --skip sessions or use sql or memcached"
            )
    if "ledger" not in skip:
        for side in (source, target):
            if side.backend("ledger") != "sql":
                notes.append(
                    f"ledger: the {side.role}'s ledger {side.backend('ledger')!r} holds only "
                    "the claims of running processes; skipped"
                )
                skip = skip | {"ledger"}
                break
    for port in ("cache", "bus"):
        backend = source.backend(port)
        if port == "bus" and Capability.DURABLE in source.capabilities(port):
            notes.append(
                f"bus ({backend}): queued messages are not copied (unsent events are, in the "
                "outbox); let the workers drain the queues before the final pass"
            )
        else:
            notes.append(f"{port} ({backend}): holds nothing durable; skipped")
    problem = overlap(source, target)
    if problem:
        raise Refused(problem)
    return notes


def _ledger_skipped(source: Side, target: Side, skip: frozenset[str]) -> bool:
    return (
        "ledger" in skip or source.backend("ledger") != "sql" or target.backend("ledger") != "sql"
    )


def _store_shards(side: Side, name: str, *, primaries: bool = False) -> ShardSet:
    """The shards of store ``name``; a source is read from its replicas (if any) unless
    ``primaries``: a copy reads primaries, where its change log is (a lagging replica
    could hide a change the log already names, and the entry would be dropped)."""
    database = side.container.databases().store(name)
    count = getattr(database, "shard_count", None) or len(database)
    if side.role == "source" and not primaries:
        read: Callable[[int], Any] = lambda index: database.read(shard=index)  # noqa: E731
    else:  # the target is read back from its primaries
        read = lambda index: database.unit_of_work(shard=index)  # noqa: E731
    return ShardSet(
        label=f"the {side.role}'s {name} store",
        count=int(count),
        read=read,
        write=lambda index: database.unit_of_work(shard=index),
        place=database.shard_for,
    )


def _ledger_shards(side: Side, engines: list[sa.Engine]) -> ShardSet:
    from adapters.sql.engine import make_engine, translate_errors

    _, options = side.settings.port("ledger")
    engine = make_engine(options["url"], create_database=bool(options.get("create_database")))
    engines.append(engine)

    @contextlib.contextmanager
    def read(_index: int) -> Iterator[sa.Connection]:
        with translate_errors(), engine.connect() as connection:
            yield connection

    @contextlib.contextmanager
    def write(_index: int) -> Iterator[sa.Connection]:
        with translate_errors(), engine.begin() as connection:
            yield connection

    return ShardSet(f"the {side.role}'s ledger", 1, read, write, None)


def _connect(side: Side, skip: frozenset[str], ledger: bool) -> None:
    """Make every backend of ``side`` answer (or raise naming the part)."""
    from adapters.photofeed.schema import ping_all

    checks: list[tuple[str, Callable[[], object]]] = []
    if any(store not in skip for store in SQL_STORES):
        databases = side.container.databases()
        for name in SQL_STORES:
            if name not in skip:
                checks.append(
                    (f"the {name} store", functools.partial(ping_all, databases.store(name)))
                )
    if "blobs" not in skip:
        checks.append(("the blob store", lambda: side.container.blobs().ping()))
    if "sessions" not in skip:
        checks.append(("the session store", lambda: side.container.sessions().ping()))
    if ledger:
        checks.append(("the ledger", lambda: side.container.ledger().ping()))
    for what, check in checks:
        try:
            check()
        except ScalecoreError as exc:
            raise type(exc)(f"cannot reach {what} of the {side.role} ({side.path}): {exc}") from exc


def _foreign_data(source: Side, target: Side, skip: frozenset[str]) -> list[str]:
    """What the target holds that is not a copy from this source (empty if nothing)."""
    from adapters.photofeed.schema import METADATA

    recorded = journal.read_journal(target.container.databases())
    if recorded.get("source") == fingerprint(source):
        return []
    found: list[str] = []
    for name in SQL_STORES:
        if name in skip:
            continue
        side = _store_shards(target, name)
        for table in METADATA[name].tables.values():
            for index, count in enumerate(count_rows(table, side)):
                if count:
                    found.append(f"{count:,} rows in {table.name} (store {name}, shard {index})")
    if "blobs" not in skip and target.container.blobs().list(limit=1).items:
        found.append("objects in the blob store")
    if "sessions" not in skip and _holds_sessions(target):
        found.append("live sessions in the session store")
    if found and recorded.get("source_name"):
        found.append(f"its journal names another source, {recorded['source_name']!r}")
    return found


def _holds_sessions(side: Side) -> bool:
    """Whether ``side``'s session store lists any live session (False if it cannot list,
    or its table does not exist yet: the server itself answered the ping already)."""
    if Capability.EXPORT not in side.capabilities("sessions"):
        return False
    try:
        return next(iter(side.container.sessions().export_sessions()), None) is not None
    except ScalecoreError:
        return False


# --------------------------------------------------------------------------- copying


def _copy_store(
    name: str,
    tables: list[sa.Table],
    source: ShardSet,
    target: ShardSet,
    progress: Progress,
    report: Report,
    *,
    mode: str,
    records: Databases | None,
    full: bool = False,
) -> ReportRow:
    """Copy (or, in verify mode, compare) the tables of one store; ``records`` is where
    the journal keeps verified checksums (None: no journal, walk everything)."""
    row = ReportRow(name)
    began = time.monotonic()
    sharded = target.place is not None
    total = sum(sum(count_rows(table, source)) for table in tables)
    with progress.task(name, total) as task:
        for table in tables:
            if mode == "verify":
                _verify_table(table, source, target, row, report, task.advance, sharded)
            else:
                _copy_table(
                    table, source, target, row, report, progress, task.advance, records, full
                )
    row.seconds = time.monotonic() - began
    return row


def _copy_table(
    table: sa.Table,
    source: ShardSet,
    target: ShardSet,
    row: ReportRow,
    report: Report,
    progress: Progress,
    advance: Callable[[int], None],
    records: Databases | None,
    full: bool,
) -> None:
    """Walk and write the buckets of ``table`` that may differ, read them back, and walk
    again those that still differ (a live source), up to MAX_ROUNDS times.

    A first run walks everything. A later one copies only the rows the source's change
    log (:mod:`entrypoints.migrate.changelog`) names (:func:`_copy_keys`), or walks their
    buckets plus those an earlier run could not verify; without a usable log it checksums
    the whole source and walks the buckets whose checksum moved since the last verified
    copy (``records``).
    """
    sharded = target.place is not None
    only: set[int] | None = None
    recorded = journal.load_digests(records, table.name) if records is not None else Buckets()
    verified = Buckets()  # bucket -> source digest verified in the target
    log = _open_change_log(table, source, records, progress) if sharded else None
    tracked = journal.load_tracking(records, table.name) if log is not None and records else None
    trusted = log is not None and tracked is not None and tracked[0] == log.installs
    if trusted and not full and log is not None and tracked is not None and not log.everything:
        # Every write since the last complete walk is in the log: the other rows are as
        # that walk verified them.
        if log.keys is not None and not tracked[1] and records is not None:
            left = _copy_keys(table, source, target, row, progress, records, recorded, log.keys)
            _close_change_log(table, source, records, log, left)
            if left:
                row.status = "DIFFERS"
                report.differences.append(
                    f"{table.name}: {len({logical_of(k) for k in left})} logical shard(s) "
                    f"still differ after {MAX_ROUNDS} rounds (is the source still taking "
                    "writes?)"
                )
            return
        only = log.buckets | tracked[1]
        verified = recorded.without(only)
    elif recorded and not full:
        current = digest_table(table, source, sharded=sharded, progress=advance)
        only = mismatched(current, recorded)
        verified = current.without(only)
        del current
    if only is not None:
        unchanged = verified.rows()
        row.read += unchanged
        row.verified += unchanged
        if not only:
            _close_change_log(table, source, records, log, set())
            return
    if records is not None:
        journal.forget_digests(
            records, table.name, None if only is None else {logical_of(k) for k in only}
        )
    bad: set[int] = set()
    for round_ in range(1, MAX_ROUNDS + 1):
        result = sync_table(
            table,
            source,
            target,
            write=True,
            only=only,
            progress=advance if round_ == 1 and only is None else None,
        )
        if round_ == 1:
            row.read += result.read
            row.bytes += result.bytes
        row.written += result.written + result.deleted
        # The target as read back: buckets the walk found equal were read by the walk;
        # the ones it wrote are read again now, independently of the copy.
        landed = result.target.without(result.dirty)
        if result.dirty:
            everything = only is None and len(result.dirty) * 2 > len(result.source)
            check = None if everything else result.dirty
            back = digest_table(table, target, sharded=sharded, only=check, placed=True)
            landed.copy_from(back, back if check is None else check)
            del back
        scope = set(result.source) | set(landed)
        bad = mismatched(result.source, landed)
        good = scope - bad
        row.verified += landed.rows(good)
        verified.copy_from(result.source, good)
        if only is not None:  # walked and empty on both sides now
            verified.copy_from(result.source, only - scope)
        del landed, scope, good, result
        if not bad:
            break
        progress.say(
            f"{row.store}: {len({logical_of(k) for k in bad})} logical shard(s) of "
            f"{table.name} changed during the copy; copying them again"
        )
        only = bad
    if records is not None:
        dirty_shards = {logical_of(k) for k in bad}
        journal.save_digests(records, table.name, verified.without(shards=dirty_shards))
    _close_change_log(table, source, records, log, bad)
    if bad:
        row.status = "DIFFERS"
        report.differences.append(
            f"{table.name}: {len({logical_of(k) for k in bad})} logical shard(s) still differ "
            f"after {MAX_ROUNDS} rounds (is the source still taking writes?)"
        )


def _copy_keys(
    table: sa.Table,
    source: ShardSet,
    target: ShardSet,
    row: ReportRow,
    progress: Progress,
    records: Databases,
    recorded: Buckets,
    keys: list[tuple[Any, ...]],
) -> set[int]:
    """Copy the rows of ``keys`` (sorted), a batch at a time, read each batch back from
    the target and compare it with the source, again up to MAX_ROUNDS times for rows
    that changed meanwhile; return the buckets that still differ.

    The recorded digests of the buckets touched are brought up to date by difference
    (recorded - those rows as the target held them + those rows as read back), so they
    still describe the whole target bucket, which a later run without a log relies on.
    """
    bad: set[int] = set()
    touched: set[int] = set()
    for start in range(0, len(keys), PAGE_ROWS):
        todo = keys[start : start + PAGE_ROWS]
        before: dict[int, Digest] = {}
        after: dict[int, Digest] = {}
        for round_ in range(1, MAX_ROUNDS + 1):
            result = sync_table(table, source, target, write=True, wanted=todo)
            if round_ == 1:
                before = dict(result.target)
                row.bytes += result.bytes
            row.written += result.written + result.deleted
            back = digest_table(table, target, sharded=True, placed=True, wanted=todo)
            after.update({k: back.get(k, Digest()) for k in set(result.source) | set(back)})
            differ = mismatched(dict(result.source), back)
            if not differ:
                break
            if round_ == MAX_ROUNDS:
                bad |= differ
                break
            progress.say(
                f"{row.store}: {len(differ)} bucket(s) of {table.name} changed during the "
                "copy; copying them again"
            )
            todo = [key for key in todo if bucket_of(key, True) in differ]
        for bucket in set(before) | set(after):
            digest = recorded.get(bucket, Digest())
            digest.remove(before.get(bucket, Digest()))
            digest.merge(after.get(bucket, Digest()))
            recorded[bucket] = digest
            touched.add(logical_of(bucket))
    # A record that goes negative was not the target's (changed behind migrate's back):
    # forget it, like a bucket that still differs; a run without a log walks it again.
    unknown = {logical_of(k) for k in bad} | {
        logical_of(k) for k in recorded.negative() if logical_of(k) in touched
    }
    journal.forget_digests(records, table.name, unknown)
    kept = touched - unknown
    journal.save_digests(
        records,
        table.name,
        {k: recorded[k] for k in recorded if logical_of(k) in kept},
        shards=kept,
    )
    total = recorded.rows()
    if unknown:
        total -= recorded.rows(k for k in recorded if logical_of(k) in unknown)
    row.read += total
    row.verified += total
    return bad


def _open_change_log(
    table: sa.Table, source: ShardSet, records: Databases | None, progress: Progress
) -> changelog.Snapshot | None:
    """Install the change log of ``table`` on the source (if needed) and read it, before
    any row is read; None without a journal or when the source refuses the triggers."""
    if records is None:
        return None
    try:
        installs = changelog.install(table, source)
    except ScalecoreError as exc:
        progress.say(
            f"{table.name}: no change log on the source ({exc}); a later run checksums "
            "the whole table to find what changed"
        )
        return None
    return changelog.snapshot(table, source, installs)


def _close_change_log(
    table: sa.Table,
    source: ShardSet,
    records: Databases | None,
    log: changelog.Snapshot | None,
    pending: set[int],
) -> None:
    """Record that the walk covered the log (bar ``pending``), then drop what it read."""
    if log is None or records is None:
        return
    journal.save_tracking(records, table.name, log.installs, pending)
    changelog.forget(table, source, log)


def _verify_table(
    table: sa.Table,
    source: ShardSet,
    target: ShardSet,
    row: ReportRow,
    report: Report,
    advance: Callable[[int], None],
    sharded: bool,
) -> None:
    source_buckets = digest_table(table, source, sharded=sharded, progress=advance)
    target_buckets = digest_table(table, target, sharded=sharded, placed=True)
    row.read += source_buckets.rows()
    bad_buckets = mismatched(source_buckets, target_buckets)
    row.verified += target_buckets.rows() - target_buckets.rows(bad_buckets)
    if not bad_buckets:
        return
    source_sums = by_logical_shard(source_buckets)
    target_sums = by_logical_shard(target_buckets)
    bad = mismatched(source_sums, target_sums)
    row.status = "DIFFERS"
    for logical in sorted(bad):
        src, dst = source_sums.get(logical, Digest()), target_sums.get(logical, Digest())
        where = f"logical shard {logical}" if logical >= 0 else "table"
        report.differences.append(f"{table.name} {where}: source {src}, target {dst}")
    detail = sync_table(
        table,
        source,
        target,
        write=False,
        only=bad_buckets if sharded else None,
        max_differences=MAX_LISTED,
    )
    report.differences.extend(f"  {difference}" for difference in detail.differences)
    hidden = detail.different - len(detail.differences)
    if hidden > 0:
        report.differences.append(f"  ... and {hidden} more rows of {table.name}")


def _copy_row(store: str, result: BlobResult | SessionResult, report: Report) -> ReportRow:
    """The report row of a store copied object by object (blobs, sessions)."""
    row = ReportRow(
        store,
        read=result.read,
        written=result.written + result.deleted,
        verified=result.verified,
        bytes=result.bytes,
        seconds=result.seconds,
    )
    if result.differences:
        row.status = "DIFFERS"
        report.differences.extend(result.differences)
    return row


# --------------------------------------------------------------------------- dry run


def _dry_run(
    source: Side, target: Side, skip: frozenset[str], report: Report, ledger: bool
) -> None:
    """Count what would move and estimate how long it takes from a short timed sample."""
    from adapters.photofeed.schema import METADATA

    seconds = 0.0
    for name in SQL_STORES:
        if name in skip:
            continue
        side = _store_shards(source, name)
        started = time.monotonic()
        total = 0
        for table in METADATA[name].tables.values():
            counts = count_rows(table, side)
            total += sum(counts)
            per_shard = ", ".join(f"shard {i}: {c:,}" for i, c in enumerate(counts))
            report.notes.append(f"{name}/{table.name}: {sum(counts):,} rows ({per_shard})")
        report.rows.append(
            ReportRow(name, read=total, seconds=time.monotonic() - started, status="counted")
        )
        seconds += total / _sample_rate(source, target, name)
    if "blobs" not in skip:
        started = time.monotonic()
        objects = size = 0
        for info in source.container.blobs().iter_all():
            objects += 1
            size += info.size
        report.rows.append(
            ReportRow(
                "blobs",
                read=objects,
                bytes=size,
                seconds=time.monotonic() - started,
                status="counted",
            )
        )
        seconds += objects * _blob_sample(source) + size / 20e6
    if "sessions" not in skip:
        started = time.monotonic()
        sessions = sum(1 for _ in source.container.sessions().export_sessions())
        report.rows.append(
            ReportRow(
                "sessions", read=sessions, seconds=time.monotonic() - started, status="counted"
            )
        )
        seconds += sessions / 2000
    if ledger:
        from adapters.ledger.sql import ledger_table

        engines: list[sa.Engine] = []
        try:
            rows = sum(count_rows(ledger_table, _ledger_shards(source, engines)))
        finally:
            for engine in engines:
                engine.dispose()
        report.rows.append(ReportRow("ledger", read=rows, status="counted"))
    report.estimate = seconds


def _sample_rate(source: Side, target: Side, name: str) -> float:
    """Rows per second: a timed read of up to 2,000 source rows of the store's largest
    table, and a timed write of them into a temporary table on the target's first shard
    (dropped with the connection: nothing is written to the target's data)."""
    from adapters.photofeed.schema import METADATA

    tables = list(METADATA[name].tables.values())
    src = _store_shards(source, name)
    counts = [(sum(count_rows(t, src)), t) for t in tables]
    _, table = max(counts, key=lambda pair: pair[0])
    began = time.monotonic()
    with src.read(0) as connection:
        rows = [dict(r._mapping) for r in connection.execute(sa.select(table).limit(2000))]
    read_seconds = time.monotonic() - began
    if not rows:
        return 10_000.0
    temporary = sa.Table(
        f"migrate_sample_{name}",
        sa.MetaData(),
        *(sa.Column(c.name, c.type) for c in table.columns),
        prefixes=["TEMPORARY"],
    )
    database = target.container.databases().store(name)
    began = time.monotonic()
    with database.read(shard=0) as connection:
        temporary.create(connection)
        connection.execute(temporary.insert(), rows)
        connection.rollback()
    write_seconds = time.monotonic() - began
    # Reading the source and hashing both sides roughly triples the read cost.
    per_row = (3 * read_seconds + write_seconds) / len(rows)
    return 1 / per_row if per_row > 0 else 10_000.0


def _blob_sample(source: Side) -> float:
    """Seconds per object: a timed read of up to five source objects."""
    blobs = source.container.blobs()
    page = blobs.list(limit=5)
    if not page.items:
        return 0.0
    began = time.monotonic()
    for info in page.items:
        with blobs.open(info.key) as stream:
            for _chunk in stream:
                pass
    return (time.monotonic() - began) / len(page.items)


# --------------------------------------------------------------------------- the run


def migrate(options: Options, progress: Progress) -> Report:
    """Run one migration as ``options`` say; see the module docs for the order of steps.

    Raises a :class:`ScalecoreError` (one line) for a refusal, a bad config or a backend
    that does not answer, before anything is written; a failed verification is in the
    report (``report.ok`` is false), not an exception.
    """
    unknown = sorted(options.skip - set(PARTS))
    if unknown:
        raise ConfigError(f"--skip {unknown[0]}: unknown store; known: {', '.join(PARTS)}")
    skip = frozenset(options.skip)
    if "database" in skip:
        skip |= set(SQL_STORES)
    if options.mode == "drop-change-log":  # only the SQL stores have change logs
        skip |= {"blobs", "sessions", "ledger"}
    source = load_side("source", options.source)
    target = load_side("target", options.target)
    report = Report()
    try:
        notes = _refuse_impossible(source, target, skip)
        ledger = not _ledger_skipped(source, target, skip)
        _connect(source, skip, ledger)
        _connect(target, skip, ledger)
        if options.mode == "dry-run":
            report.notes.extend(notes)
            _dry_run(source, target, skip, report, ledger)
            return report
        if options.mode == "drop-change-log":
            _drop_change_logs(source, skip, report)
            return report
        sql_wanted = any(store not in skip for store in SQL_STORES)
        if options.mode == "copy":
            found = _foreign_data(source, target, skip) if sql_wanted else []
            if found:
                raise Refused(
                    f"the target ({target.path}) is not empty and is not a copy of this "
                    f"source: it holds {'; '.join(found)}. Refusing to write; point --to at "
                    "an empty deployment (or at an earlier copy of this source)"
                )
            from entrypoints.container import create_tables

            create_tables(target.container)
            if sql_wanted:
                journal.write_journal(
                    target.container.databases(),
                    source=fingerprint(source),
                    source_name=source.name,
                    state="copying",
                )
        for note in notes:  # once the run is sure to go ahead
            progress.say(note)
        _run_parts(source, target, skip, ledger, options, progress, report)
        if options.mode == "copy" and sql_wanted and report.ok:
            journal.write_journal(target.container.databases(), state="verified")
        return report
    finally:
        from entrypoints.container import close_adapters

        close_adapters(source.container)
        close_adapters(target.container)


def _drop_change_logs(source: Side, skip: frozenset[str], report: Report) -> None:
    """Remove the change logs copy runs installed on the source; nothing else is written.
    A later copy run installs them again and walks every row once."""
    from adapters.photofeed.schema import METADATA

    for name in SQL_STORES:
        if name in skip:
            continue
        began = time.monotonic()
        tables = list(METADATA[name].tables.values())
        dropped = changelog.uninstall(tables, _store_shards(source, name, primaries=True))
        report.rows.append(
            ReportRow(name, written=dropped, seconds=time.monotonic() - began, status="dropped")
        )
    report.notes.append(
        "removed the change logs (triggers and log tables) from the source; the next copy "
        "run walks every row"
    )


def _run_parts(
    source: Side,
    target: Side,
    skip: frozenset[str],
    ledger: bool,
    options: Options,
    progress: Progress,
    report: Report,
) -> None:
    from adapters.photofeed.schema import METADATA

    mode = options.mode
    sql_wanted = any(store not in skip for store in SQL_STORES)
    records = target.container.databases() if sql_wanted and mode == "copy" else None
    for name in SQL_STORES:
        if name in skip:
            continue
        tables = list(METADATA[name].tables.values())
        row = _copy_store(
            name,
            tables,
            _store_shards(source, name, primaries=mode == "copy"),
            _store_shards(target, name),
            progress,
            report,
            mode=mode,
            records=records,
            full=options.full,
        )
        report.rows.append(row)
    if "blobs" not in skip:
        blobs = source.container.blobs()
        with progress.task("blobs", None, unit="B") as task:
            blob_journal = None
            if records is not None:
                blob_journal = journal.BlobJournal(records)
                if options.full:
                    blob_journal.clear()
            result = sync_blobs(
                blobs,
                target.container.blobs(),
                write=mode == "copy",
                read_back_all=mode == "verify",
                progress=task.advance,
                journal=blob_journal,
            )
        report.rows.append(_copy_row("blobs", result, report))
    if "sessions" not in skip:
        with progress.task("sessions", None, unit="sessions") as task:
            sessions = sync_sessions(
                source.container.sessions(),
                target.container.sessions(),
                write=mode == "copy",
                progress=task.advance,
            )
        report.rows.append(_copy_row("sessions", sessions, report))
    if ledger:
        from adapters.ledger.sql import ledger_table

        engines: list[sa.Engine] = []
        try:
            row = _copy_store(
                "ledger",
                [ledger_table],
                _ledger_shards(source, engines),
                _ledger_shards(target, engines),
                progress,
                report,
                mode=mode,
                records=records,
                full=options.full,
            )
        finally:
            for engine in engines:
                engine.dispose()
        report.rows.append(row)
    else:
        report.rows.append(ReportRow("ledger", status="skipped"))
