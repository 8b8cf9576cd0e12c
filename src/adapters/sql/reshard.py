"""Online resharding: move logical shards between databases while the site keeps writing.

Backend: sql (SQLAlchemy 2 Core; SQLite files or PostgreSQL databases)
Install extra: none for SQLite; postgres for PostgreSQL
Options: Resharder(database=, previous=None, batch=16, progress=None)
    database   the ShardedDatabase the new config describes (its shards, router, tables,
               layout name and control database)
    previous   the ShardedDatabase of the config the deployment runs with now; needed
               only for the first reshard of a layout, when no live layout exists yet
    batch      logical shards fenced together (a smaller batch is a shorter pause)
    progress   called as progress(done, total) after every batch

For each batch of logical shards going from one database to another:

1. copy their rows (every table of the layout) to the new owner, whose state for them is
   ``absent``, so nothing else writes there, and read the copy back: counts and
   checksums per table must match what was read from the old owner; right before the
   fence, catch up (without it) until a round changes few rows;
2. fence: ``UPDATE`` their state rows on the old owner to ``moved`` in a transaction kept
   open. The update waits for writers in flight (they hold the rows ``FOR SHARE``) and
   blocks new ones, stale processes included. On PostgreSQL the update and the reads of
   every table go in one round trip;
3. catch up inside the fence: apply what changed since step 1 (changed rows replaced,
   deleted rows deleted) in a transaction on the new owner and read those keys back; the
   new owner then equals the old one (a mismatch rolls both back: nothing switched);
4. commit the fence, then mark the new owner ``owned`` in its open transaction and commit
   it (blocked writers, refused by the old owner with the new owner's identity, retry
   there), switch the live layout, then delete the rows from the old owner.

A layout is a group of databases (``default``) or a logical store's own: a config that
gives a store databases of its own (``[database.stores]``) makes the store's layout,
first a copy of its group's, and moves that store's tables only (vertical partitioning);
:func:`resharders_for` makes one resharder per layout.

The journal (``scalecore_reshards``, ``scalecore_reshard_moves`` in the control database)
and the state rows make it resumable at any point: every step is idempotent and a rerun
looks at each logical shard's state on both databases to know where it stands.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import sqlalchemy as sa

from adapters.sql.engine import make_engine, translate_errors
from adapters.sql.layout import (
    CONTROL,
    LAYOUT_TTL,
    MOVED,
    OWNED,
    STATE,
    STATE_METADATA,
    Layout,
    connect_url,
    ensure_state,
    identity,
    key_column,
    layout_names,
    load_layout,
    load_layouts,
    logical_of_key,
    moves_table,
    reshards_table,
    save_layout,
    shard_expression,
    shard_filter,
)
from adapters.sql.shards import Databases, ShardedDatabase
from scalecore.errors import BackendUnavailable, ConfigError, Conflict
from scalecore.ids import ID_LENGTH, LOGICAL_SHARDS, shard_of
from scalecore.validate import check_int

__all__ = [
    "Move",
    "Plan",
    "Report",
    "Resharder",
    "live_layouts",
    "reshard_status",
    "reshard_statuses",
    "resharders_for",
]

#: Rows per INSERT or DELETE statement of a copy.
_CHUNK = 500

#: A catch-up round before the fence that changes at most this many rows is the last.
_SMALL_DELTA = 20


@attrs.frozen
class Move:
    """One logical shard going from database ``source`` to ``target`` (identities)."""

    logical: int
    source: str
    target: str
    rows: int = 0
    bytes: int = 0


@attrs.frozen
class Plan:
    """What a reshard will do: ``moves`` from the ``current`` layout to ``target``."""

    name: str
    current: Layout
    target: tuple[str, ...]
    moves: tuple[Move, ...]
    bootstrap: bool  # no live layout yet: the first one is made from the old config
    resuming: bool
    #: The live layout of the group the logical stores leave, when this reshard gives
    #: them databases of their own (vertical partitioning); the first layout of
    #: ``name`` is then made from it.
    source: str | None = None

    def routes(self) -> list[tuple[str, str, int, int, int]]:
        """(source, target, logical shards, rows, bytes) per pair of databases."""
        totals: dict[tuple[str, str], list[int]] = {}
        for move in self.moves:
            entry = totals.setdefault((move.source, move.target), [0, 0, 0])
            entry[0] += 1
            entry[1] += move.rows
            entry[2] += move.bytes
        return [(s, t, n, r, b) for (s, t), (n, r, b) in sorted(totals.items())]


@attrs.frozen
class Report:
    """What a reshard did: moved logical shards, copied rows and bytes, fence pauses."""

    moved: int
    rows: int
    bytes: int
    seconds: float
    pauses_ms: tuple[float, ...]


class Resharder:
    """Plans and runs the move from a layout's live layout to the one ``database``'s
    config describes; see the module docstring for the steps and their guarantees."""

    def __init__(
        self,
        *,
        database: ShardedDatabase,
        previous: ShardedDatabase | None = None,
        batch: int = 16,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        check_int(batch, "batch", minimum=1, error=ConfigError)
        self._db = database
        self._previous = previous
        self._batch = batch
        self._progress = progress
        self._name = database.layout_name
        self._tables = list(database.metadata.sorted_tables)
        for table in self._tables:
            column = key_column(table)
            if not isinstance(column.type, sa.String) or column.type.length != ID_LENGTH:
                raise ConfigError(
                    f"table {table.name!r} is not keyed by an id that carries its logical "
                    "shard; it cannot be resharded"
                )
        urls = list(database.configured_urls)
        if previous is not None:
            urls += [url for url in previous.configured_urls if url not in urls]
        self._urls = urls
        self._targets = tuple(identity(url) for url in database.configured_urls)
        if len(set(self._targets)) != len(self._targets):
            raise ConfigError("lists one database twice", key="shards")
        self._engines: dict[str, sa.Engine] = {}
        self._layout: Layout | None = None

    # -- connections ---------------------------------------------------------------------

    def _engine(self, name: str) -> sa.Engine:
        engine = self._engines.get(name)
        if engine is None:
            create = name in self._targets and self._db.create_database
            with translate_errors():
                engine = make_engine(connect_url(name, self._urls), create_database=create)
            self._engines[name] = engine
        return engine

    def _control(self) -> sa.Engine:
        name = identity(self._db.control_url)
        engine = self._engines.get(name)
        if engine is None:
            with translate_errors():
                engine = make_engine(self._db.control_url, create_database=self._db.create_database)
            self._engines[name] = engine
        return engine

    def dispose(self) -> None:
        """Close every connection this resharder opened."""
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()

    # -- planning ------------------------------------------------------------------------

    def plan(self, *, measure: bool = True) -> Plan:
        """Compare the live layout with the new config; with ``measure``, count the rows
        and bytes each move copies. Raises :class:`ConfigError` when there is no live
        layout and no ``previous`` config, or when an unfinished reshard of this layout
        is heading for different databases."""
        # The group the stores leave, when the old config shares it and this layout is a
        # store's own: its live layout (if any) is where they are now.
        previous = self._previous.layout_name if self._previous is not None else self._name
        others = [previous] if previous != self._name else []
        source_running = None
        with translate_errors(), self._control().connect() as conn:  # reads only
            found = load_layouts(conn, [self._name, *others])
            layout = found.get(self._name)
            source = None if layout is not None else next((n for n in others if n in found), None)
            running = journal = None
            if sa.inspect(conn).has_table(reshards_table.name):
                if source is not None:
                    source_running = conn.execute(
                        sa.select(reshards_table.c.name).where(
                            reshards_table.c.name == source,
                            reshards_table.c.status == "running",
                        )
                    ).one_or_none()
                running = conn.execute(
                    sa.select(reshards_table).where(
                        reshards_table.c.name == self._name,
                        reshards_table.c.status == "running",
                    )
                ).one_or_none()
                journal = conn.execute(
                    sa.select(moves_table).where(
                        moves_table.c.name == self._name, moves_table.c.phase != "cleaned"
                    )
                ).all()
            conn.rollback()
        bootstrap = layout is None
        if source is not None:
            # The stores move out of a group that has a live layout: theirs starts as a
            # copy of it.
            if source_running is not None:
                raise ConfigError(
                    f"the reshard of {source!r} is unfinished; finish it before moving "
                    f"{self._name!r} onto databases of its own"
                )
            layout = found[source]
        elif layout is None:
            if self._previous is None:
                raise ConfigError(
                    f"there is no live layout of {self._name!r} yet: pass the config the "
                    "deployment runs with now (--from CURRENT.toml)"
                )
            old = [identity(url) for url in self._previous.configured_urls]
            owners = tuple(self._previous.router.shard_for(n) for n in range(LOGICAL_SHARDS))
            layout = Layout(0, tuple(old), owners)
        if running is not None:
            target = tuple(json.loads(running.target))
            if target != self._targets:
                raise ConfigError(
                    f"an unfinished reshard of {self._name!r} is moving to other databases; "
                    "finish it first with the config it was started with"
                )
            moves = {
                row.logical_shard: Move(row.logical_shard, row.source, row.target)
                for row in journal or ()
            }
        else:
            moves = {}
        for logical in range(LOGICAL_SHARDS):
            target_name = self._targets[self._db.router.shard_for(logical)]
            current = layout.owner(logical)
            if current != target_name and logical not in moves:
                moves[logical] = Move(logical, current, target_name)
        ordered = [moves[logical] for logical in sorted(moves)]
        if measure:
            ordered = self._measure(ordered)
        return Plan(
            self._name,
            layout,
            self._targets,
            tuple(ordered),
            bootstrap,
            running is not None,
            source,
        )

    def _measure(self, moves: list[Move]) -> list[Move]:
        sizes: dict[int, list[int]] = {}
        for source in sorted({move.source for move in moves}):
            wanted = {move.logical for move in moves if move.source == source}
            with translate_errors(), self._engine(source).connect() as conn:
                inspector = sa.inspect(conn)
                for table in self._tables:
                    if not inspector.has_table(table.name):
                        continue
                    key = shard_expression(key_column(table)).label("k")
                    size = sum(
                        (sa.func.coalesce(sa.func.length(sa.cast(c, sa.Text)), 0) for c in table.c),
                        sa.literal(0),
                    )
                    query = sa.select(key, sa.func.count(), sa.func.sum(size)).group_by(key)
                    for k, count, total in conn.execute(query):
                        if not k or len(k) != 4:
                            continue
                        logical = logical_of_key(k)
                        if logical in wanted:
                            entry = sizes.setdefault(logical, [0, 0])
                            entry[0] += int(count)
                            entry[1] += int(total or 0)
        return [
            attrs.evolve(
                m, rows=sizes.get(m.logical, [0, 0])[0], bytes=sizes.get(m.logical, [0, 0])[1]
            )
            for m in moves
        ]

    # -- execution -----------------------------------------------------------------------

    def execute(self, plan: Plan) -> Report:
        """Run ``plan`` (from :meth:`plan`) to the end; safe to run again after a kill."""
        began = time.perf_counter()
        names = [self._name] if plan.source is None else [self._name, plan.source]
        with contextlib.ExitStack() as stack:
            for name in names:
                stack.enter_context(self._exclusive(name))
            if plan.source is not None:
                self._check_source(plan)
            return self._execute(plan, began)

    def _check_source(self, plan: Plan) -> None:
        """The group the stores leave must still be as planned, with no reshard of it
        unfinished (its lock is held from here on)."""
        assert plan.source is not None
        with translate_errors(), self._control().connect() as conn:
            found = load_layouts(conn, [plan.source])
            running = conn.execute(
                sa.select(reshards_table.c.name).where(
                    reshards_table.c.name == plan.source, reshards_table.c.status == "running"
                )
            ).one_or_none()
            conn.rollback()
        current = found.get(plan.source)
        if running is not None or current is None or current.owners != plan.current.owners:
            raise Conflict(
                f"the layout of {plan.source!r} changed since the plan; run the command again"
            )

    @contextlib.contextmanager
    def _exclusive(self, name: str) -> Iterator[None]:
        """Hold layout ``name``'s reshard lock (a PostgreSQL advisory lock on the control
        database, released when the connection ends, a kill included)."""
        engine = self._control()
        if engine.dialect.name != "postgresql":
            yield  # SQLite: one box, one operator; run one reshard at a time
            return
        key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=7).digest(), "big")
        with translate_errors(), engine.connect() as conn:
            got = conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar_one()
            conn.commit()
            if not got:
                raise Conflict(f"another reshard of {name!r} is running")
            try:
                yield
            finally:
                conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                conn.commit()

    def _execute(self, plan: Plan, began: float) -> Report:
        databases = list(dict.fromkeys([*plan.current.databases, *plan.target]))
        self._prepare(plan, databases)
        moved = rows = size = 0
        pauses: list[float] = []
        groups: dict[tuple[str, str], list[Move]] = {}
        for move in plan.moves:
            groups.setdefault((move.source, move.target), []).append(move)
        total = len(plan.moves)
        # Rows are copied a chunk of batches at a time (few statements, no fence), then
        # each batch is fenced, caught up, verified and switched on its own.
        chunk_size = self._batch * 8
        for (source, target), moves in groups.items():
            for start in range(0, len(moves), chunk_size):
                chunk = [m.logical for m in moves[start : start + chunk_size]]
                for copied, copied_bytes, batch_pauses, count in self._move(source, target, chunk):
                    moved += count
                    rows += copied
                    size += copied_bytes
                    pauses.extend(batch_pauses)
                    if self._progress is not None:
                        self._progress(moved, total)
        self._finish(plan)
        return Report(moved, rows, size, time.perf_counter() - began, tuple(pauses))

    def _prepare(self, plan: Plan, databases: list[str]) -> None:
        owners_by_db: dict[str, set[int]] = {name: set() for name in databases}
        for logical in range(LOGICAL_SHARDS):
            owners_by_db[plan.current.owner(logical)].add(logical)
        for name in databases:
            engine = self._engine(name)
            with translate_errors():
                if name in plan.target:
                    self._db.metadata.create_all(engine, checkfirst=True)
                with engine.begin() as conn:
                    STATE_METADATA.create_all(conn, checkfirst=True)
                    # Only the first layout says who owns what; later, rows exist already
                    # and only new databases get theirs (all absent).
                    ensure_state(conn, self._name, owners_by_db[name] if plan.bootstrap else ())
                self._index(engine)
        with translate_errors(), self._control().begin() as conn:
            CONTROL.create_all(conn, checkfirst=True)
            layout = load_layout(conn, self._name) or plan.current
            layout = layout.with_databases(list(dict.fromkeys([*layout.databases, *databases])))
            save_layout(conn, self._name, layout)
            self._layout = layout
            if not plan.resuming:
                conn.execute(reshards_table.delete().where(reshards_table.c.name == self._name))
                conn.execute(moves_table.delete().where(moves_table.c.name == self._name))
                conn.execute(
                    reshards_table.insert().values(
                        name=self._name,
                        status="running",
                        target=json.dumps(list(plan.target)),
                        started_at=time.time(),
                        finished_at=None,
                    )
                )
                now = time.time()
                rows = [
                    {
                        "name": self._name,
                        "logical_shard": m.logical,
                        "source": m.source,
                        "target": m.target,
                        "phase": "planned",
                        "rows": m.rows,
                        "bytes": m.bytes,
                        "pause_ms": None,
                        "updated_at": now,
                    }
                    for m in plan.moves
                ]
                for start in range(0, len(rows), _CHUNK):
                    conn.execute(moves_table.insert(), rows[start : start + _CHUNK])
        # Every process must see a layout (and so check the fence) before anything moves:
        # wait out the cache of "no layout", then for transactions begun before that.
        time.sleep(LAYOUT_TTL + 0.5)
        for name in plan.current.databases:
            self._barrier(self._engine(name))

    def _index(self, engine: sa.Engine) -> None:
        """An index on each table's logical-shard key, so a logical shard's rows are
        found without a scan (built without blocking writes on PostgreSQL)."""
        postgres = engine.dialect.name == "postgresql"
        options = {"isolation_level": "AUTOCOMMIT"} if postgres else {}
        with engine.connect().execution_options(**options) as conn:
            for table in self._tables:
                column = key_column(table).name
                conn.exec_driver_sql(
                    f"CREATE INDEX {'CONCURRENTLY ' if postgres else ''}IF NOT EXISTS "
                    f"ix_{table.name}_lshard ON {table.name} (substr({column}, 11, 4))"
                )
            if not postgres:
                conn.commit()

    def _barrier(self, engine: sa.Engine) -> None:
        if engine.dialect.name != "postgresql":
            return  # SQLite: every write transaction takes the file's lock in turn
        deadline = time.monotonic() + 60
        with translate_errors(), engine.connect() as conn:
            started = conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
            conn.commit()
            while True:
                older = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND pid <> pg_backend_pid() AND xact_start < :t "
                        "AND backend_type = 'client backend'"
                    ),
                    {"t": started},
                ).scalar_one()
                conn.commit()
                if not older:
                    return
                if time.monotonic() > deadline:
                    raise BackendUnavailable(
                        "transactions begun before the live layout existed are still open "
                        "after 60 s; run the reshard again when they end"
                    )
                time.sleep(0.1)

    def _states(self, conn: sa.Connection, logicals: Sequence[int]) -> dict[int, Any]:
        rows = conn.execute(
            sa.select(STATE).where(STATE.c.name == self._name, STATE.c.logical_shard.in_(logicals))
        ).all()
        return {row.logical_shard: row for row in rows}

    def _move(
        self, source: str, target: str, logicals: list[int]
    ) -> Iterator[tuple[int, int, list[float], int]]:
        """Move ``logicals`` in batches; yield (rows, bytes, pauses in ms, count) per batch."""
        src, dst = self._engine(source), self._engine(target)
        with translate_errors():
            with src.connect() as conn:
                before = self._states(conn, logicals)
                conn.rollback()
            with dst.connect() as conn:
                after = self._states(conn, logicals)
                conn.rollback()
            owned_here = [n for n in logicals if before[n].state == OWNED]
            frozen = [
                n for n in logicals if before[n].state == MOVED and before[n].moved_to == target
            ]
            done = [n for n in logicals if after[n].state == OWNED]
            both = set(owned_here) & set(done)
            if both:
                raise Conflict(f"logical shards {sorted(both)} have two owners")
            unknown = set(logicals) - set(owned_here) - set(frozen) - set(done)
            if unknown:
                raise Conflict(
                    f"logical shards {sorted(unknown)} are owned by neither {source} nor {target}"
                )
            copy: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = {}
            if owned_here:
                with src.connect() as conn:  # the bulk copy, while writes go on
                    _, _, copied_digest, copy, _ = self._sync(conn, dst, owned_here, None)
                    conn.rollback()
                # Read the copy back now, outside the fence: the fence then only has to
                # read back what the catch-up changes (nothing else writes to the target).
                self._verify(dst, owned_here, copied_digest)
            for start in range(0, len(logicals), self._batch):
                batch = logicals[start : start + self._batch]
                fence = [n for n in batch if n in owned_here]
                pending = [n for n in batch if n in frozen and n not in done]
                rows = size = 0
                pauses: list[float] = []
                if fence:
                    self._catch_up(src, dst, fence, copy)
                    got_rows, got_size, pause = self._fence(src, dst, target, fence, copy)
                    rows, size = rows + got_rows, size + got_size
                    pauses.extend([pause] * len(fence))
                if pending:  # fenced by a run that was killed: the old owner is frozen
                    with src.connect() as conn:
                        got_rows, got_size, digest, _, _ = self._sync(conn, dst, pending, None)
                        conn.rollback()
                    self._verify(dst, pending, digest)
                    self._own(dst, pending)
                    rows, size = rows + got_rows, size + got_size
                self._switch(batch, target, pauses[0] if pauses else None)
                yield rows, size, pauses, len(batch)
            self._clean(src, logicals)

    def _catch_up(
        self,
        src: sa.Engine,
        dst: sa.Engine,
        logicals: list[int],
        copy: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]],
    ) -> None:
        """Bring the new owner's copy of ``logicals`` up to date without the fence, until
        a round changes at most ``_SMALL_DELTA`` rows (three rounds at most): the fence
        then only has to apply what the last moments wrote. ``copy`` is updated to what
        the new owner holds."""
        for _round in range(3):
            known = self._known(copy, logicals)
            with src.connect() as conn:
                _, _, _, fresh, changed = self._sync(conn, dst, logicals, known)
                conn.rollback()
            for name, rows in fresh.items():
                held = copy.setdefault(name, {})
                for key in known.get(name, {}):
                    held.pop(key[1], None)
                held.update(rows)
            if changed <= _SMALL_DELTA:
                return

    def _known(
        self, copy: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]], logicals: list[int]
    ) -> dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]:
        """What the new owner holds of ``logicals``, keyed by (logical shard, primary key)."""
        wanted = set(logicals)
        return {
            name: {k: row for k, row in rows.items() if k[0] in wanted}
            for name, rows in _by_logical(copy, self._tables).items()
        }

    def _fence(
        self,
        src: sa.Engine,
        dst: sa.Engine,
        target: str,
        logicals: list[int],
        copy: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]],
    ) -> tuple[int, int, float]:
        """Fence ``logicals`` on the old owner, catch up, verify, switch ownership; return
        (rows, bytes, the write pause in ms).

        The new owner's transaction (the catch-up's changes, read back, and its state
        rows set to ``owned``) commits right after the fence does: a kill in between
        leaves the old owner frozen and the new one without the logical shards, which a
        rerun copies again in full. On PostgreSQL the fence's ``UPDATE`` and the reads of
        every table go in one round trip."""
        known = self._known(copy, logicals)
        with src.connect() as conn, dst.connect() as out:
            conn.begin()
            fenced_at = time.perf_counter()
            if conn.dialect.name == "postgresql":
                have = self._fence_postgres(conn, target, logicals)
            else:
                conn.execute(self._fence_statement(target, logicals))
                have = {
                    table.name: _rows(conn, table, shard_filter(key_column(table), logicals))
                    for table in self._tables
                }
            rows = sum(len(found) for found in have.values())
            size = sum(len(repr(row)) for found in have.values() for row in found.values())
            out.begin()
            for table in self._tables:
                there = {key[1]: row for key, row in known.get(table.name, {}).items()}
                found = have[table.name]
                stale = [key for key, row in there.items() if found.get(key) != row]
                fresh = [row for key, row in found.items() if there.get(key) != row]
                if stale or fresh:
                    _apply(out, table, stale, fresh)
                    _read_back(out, table, stale, fresh)
            conn.commit()  # the old owner says "moved": from here its writers go to B
            out.execute(self._own_statement(logicals))
            out.commit()
        return rows, size, (time.perf_counter() - fenced_at) * 1000

    def _fence_statement(self, target: str, logicals: list[int]) -> Any:
        return (
            STATE.update()
            .where(
                STATE.c.name == self._name,
                STATE.c.logical_shard.in_(logicals),
                STATE.c.state == OWNED,
            )
            .values(state=MOVED, moved_to=target)
        )

    def _own_statement(self, logicals: list[int]) -> Any:
        return (
            STATE.update()
            .where(STATE.c.name == self._name, STATE.c.logical_shard.in_(logicals))
            .values(state=OWNED, moved_to=None)
        )

    def _fence_postgres(
        self, conn: sa.Connection, target: str, logicals: list[int]
    ) -> dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]:
        """The fence and the reads of every table as one multi-statement query (simple
        query protocol, every value a literal): one round trip inside the pause."""

        def literal(statement: Any) -> str:
            sql = str(
                statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
            )
            assert "%" not in sql  # identities and id keys never hold one
            return sql

        selects = [
            sa.select(table).where(shard_filter(key_column(table), logicals))
            for table in self._tables
        ]
        statements = [
            # A fence never outlives a stuck or killed resharder for long.
            "SET LOCAL lock_timeout = '5s'",
            "SET LOCAL idle_in_transaction_session_timeout = '10s'",
            literal(self._fence_statement(target, logicals)),
            *(literal(select) for select in selects),
        ]
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute("; ".join(statements))
            results: list[list[tuple[Any, ...]]] = []
            while True:
                if cursor.description is not None:
                    results.append([tuple(row) for row in cursor.fetchall()])
                if not cursor.nextset():
                    break
        finally:
            cursor.close()
        if len(results) != len(self._tables):
            raise Conflict("the fence's reads returned an unexpected number of results")
        have: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = {}
        for table, found in zip(self._tables, results, strict=True):
            pk = [table.c.keys().index(column.name) for column in table.primary_key.columns]
            have[table.name] = {tuple(row[i] for i in pk): row for row in found}
        return have

    def _own(self, engine: sa.Engine, logicals: list[int]) -> None:
        with engine.begin() as conn:
            conn.execute(
                STATE.update()
                .where(STATE.c.name == self._name, STATE.c.logical_shard.in_(logicals))
                .values(state=OWNED, moved_to=None)
            )

    def _switch(self, logicals: list[int], target: str, pause: float | None) -> None:
        # Only this resharder changes the layout while it runs (it holds the lock).
        assert self._layout is not None
        layout = self._layout.with_owners(dict.fromkeys(logicals, target))
        with self._control().begin() as conn:
            save_layout(conn, self._name, layout)
            self._layout = layout
            conn.execute(
                moves_table.update()
                .where(moves_table.c.name == self._name, moves_table.c.logical_shard.in_(logicals))
                .values(phase="moved", pause_ms=pause, updated_at=time.time())
            )

    def _clean(self, engine: sa.Engine, logicals: list[int]) -> None:
        with engine.begin() as conn:
            states = self._states(conn, logicals)
            gone = [n for n in logicals if states[n].state == MOVED]
            if gone:
                for table in reversed(self._tables):
                    conn.execute(table.delete().where(shard_filter(key_column(table), gone)))
        with self._control().begin() as conn:
            conn.execute(
                moves_table.update()
                .where(moves_table.c.name == self._name, moves_table.c.logical_shard.in_(logicals))
                .values(phase="cleaned", updated_at=time.time())
            )

    def _sync(
        self,
        source: sa.Connection,
        target: sa.Engine,
        logicals: list[int],
        known: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] | None,
    ) -> tuple[int, int, dict[str, tuple[int, str]], dict[str, dict[Any, tuple[Any, ...]]], int]:
        """Make ``target``'s rows of ``logicals`` equal to ``source``'s (one transaction on
        the target); return the source's rows, bytes, per-table digest, the rows and how
        many rows were written or deleted on the target.

        ``known`` is what the target holds already (keyed by (logical shard, primary
        key)), when the caller knows it: the target is not read then."""
        rows = size = 0
        digest: dict[str, tuple[int, str]] = {}
        copied: dict[str, dict[Any, tuple[Any, ...]]] = {}
        changes: list[tuple[sa.Table, list[Any], list[tuple[Any, ...]]]] = []
        changed = 0
        out = None if known is not None else target.connect()
        try:
            for table in self._tables:
                wanted = shard_filter(key_column(table), logicals)
                have = _rows(source, table, wanted)
                if out is not None:
                    there = _rows(out, table, wanted)
                else:
                    there = {key[1]: row for key, row in (known or {}).get(table.name, {}).items()}
                copied[table.name] = have
                digest[table.name] = _digest(have)
                rows += len(have)
                size += sum(len(repr(row)) for row in have.values())
                stale = [key for key, row in there.items() if have.get(key) != row]
                fresh = [row for key, row in have.items() if there.get(key) != row]
                if stale or fresh:
                    changes.append((table, stale, fresh))
                    changed += len(stale) + len(fresh)
            if out is not None:
                out.rollback()  # end the read; the writes below take a transaction of their own
            if changes:
                with target.begin() as writer:
                    for table, stale, fresh in changes:
                        _apply(writer, table, stale, fresh)
                    if known is not None:
                        for table, stale, fresh in changes:
                            _read_back(writer, table, stale, fresh)
        finally:
            if out is not None:
                out.close()
        return rows, size, digest, copied, changed

    def _verify(
        self, target: sa.Engine, logicals: list[int], digest: dict[str, tuple[int, str]]
    ) -> None:
        with target.connect() as conn:
            for table in self._tables:
                there = _digest(_rows(conn, table, shard_filter(key_column(table), logicals)))
                if there != digest[table.name]:
                    raise Conflict(
                        f"verification failed for {table.name} of logical shards "
                        f"{logicals[0]}..{logicals[-1]}: {there[0]} rows on the new owner, "
                        f"{digest[table.name][0]} on the old; nothing was switched"
                    )
            conn.rollback()

    def _finish(self, plan: Plan) -> None:
        with translate_errors(), self._control().begin() as conn:
            layout = load_layout(conn, self._name)
            assert layout is not None
            save_layout(conn, self._name, layout.with_databases(list(plan.target)))
            self._layout = None
            conn.execute(
                reshards_table.update()
                .where(reshards_table.c.name == self._name)
                .values(status="done", finished_at=time.time())
            )


def _apply(out: sa.Connection, table: sa.Table, stale: list[Any], fresh: list[Any]) -> None:
    """Delete the ``stale`` primary keys, insert the ``fresh`` rows."""
    pk = sa.tuple_(*table.primary_key.columns)
    for start in range(0, len(stale), _CHUNK):
        out.execute(table.delete().where(pk.in_(stale[start : start + _CHUNK])))
    names = [column.name for column in table.c]
    for start in range(0, len(fresh), _CHUNK):
        out.execute(
            table.insert(),
            [dict(zip(names, row, strict=True)) for row in fresh[start : start + _CHUNK]],
        )


def _read_back(out: sa.Connection, table: sa.Table, stale: list[Any], fresh: list[Any]) -> None:
    """Raise :class:`Conflict` unless the target now holds exactly the ``fresh`` rows and
    none of the ``stale`` keys that are not among them."""
    index = [table.c.keys().index(column.name) for column in table.primary_key.columns]
    expected = {tuple(row[i] for i in index): tuple(row) for row in fresh}
    keys = list(dict.fromkeys([*stale, *expected]))
    pk = sa.tuple_(*table.primary_key.columns)
    found: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for start in range(0, len(keys), _CHUNK):
        for row in out.execute(sa.select(table).where(pk.in_(keys[start : start + _CHUNK]))):
            values = tuple(row)
            found[tuple(values[i] for i in index)] = values
    if found != expected:
        raise Conflict(f"verification failed for {table.name}: the catch-up did not read back")


def _by_logical(
    copy: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]], tables: list[sa.Table]
) -> dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]:
    """Key each table's copied rows by (logical shard, primary key)."""
    result: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = {}
    for table in tables:
        index = table.c.keys().index(key_column(table).name)
        result[table.name] = {
            (shard_of(row[index]), key): row for key, row in copy.get(table.name, {}).items()
        }
    return result


def _rows(
    conn: sa.Connection, table: sa.Table, where: Any
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    pk = [table.c.keys().index(column.name) for column in table.primary_key.columns]
    result: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in conn.execute(sa.select(table).where(where)):
        values = tuple(row)
        result[tuple(values[i] for i in pk)] = values
    return result


def _digest(rows: dict[tuple[Any, ...], tuple[Any, ...]]) -> tuple[int, str]:
    """Count and an order-independent checksum (BLAKE2b of the sorted rows' JSON)."""
    digest = hashlib.blake2b(digest_size=16)
    for key in sorted(rows):
        digest.update(json.dumps(rows[key], default=str, separators=(",", ":")).encode())
        digest.update(b"\n")
    return len(rows), digest.hexdigest()


def reshard_status(database: ShardedDatabase) -> dict[str, Any] | None:
    """The journal of the last reshard of ``database``'s layout, or None if there was none:
    status, target databases, moves by phase, rows, bytes and fence pauses so far."""
    with translate_errors():
        engine = make_engine(database.control_url)
        try:
            with engine.connect() as conn:
                if not sa.inspect(conn).has_table(reshards_table.name):
                    return None
                run = conn.execute(
                    sa.select(reshards_table).where(reshards_table.c.name == database.layout_name)
                ).one_or_none()
                if run is None:
                    return None
                moves = conn.execute(
                    sa.select(moves_table).where(moves_table.c.name == database.layout_name)
                ).all()
        finally:
            engine.dispose()
    phases: dict[str, int] = {}
    for move in moves:
        phases[move.phase] = phases.get(move.phase, 0) + 1
    pauses = sorted(m.pause_ms for m in moves if m.pause_ms is not None)
    return {
        "layout": database.layout_name,
        "status": run.status,
        "target": json.loads(run.target),
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "moves": len(moves),
        "phases": phases,
        "rows": sum(m.rows for m in moves),
        "bytes": sum(m.bytes for m in moves),
        "pause_p99_ms": pauses[min(len(pauses) - 1, int(0.99 * len(pauses)))] if pauses else None,
    }


def live_layouts(
    databases: Databases, previous: Databases | None = None
) -> dict[str, tuple[str, ...]]:
    """The layouts the logical stores of ``databases`` (a config) follow, with their
    stores: a store keeps a layout of its own once one exists in the control database
    (a reshard moved it onto databases of its own), or when ``databases`` or
    ``previous`` (the config the deployment runs with now) gives it databases of its
    own; the others share their group's (``default``)."""
    with translate_errors():
        engine = make_engine(databases.control_url)
        try:
            with engine.connect() as conn:
                existing = layout_names(conn)
                conn.rollback()
        finally:
            engine.dispose()
    layouts: dict[str, list[str]] = {}
    for store in databases.names:
        own = (
            store in existing
            or databases.group_of(store) == store
            or (previous is not None and previous.group_of(store) == store)
        )
        layouts.setdefault(store if own else databases.group_of(store), []).append(store)
    return {name: tuple(stores) for name, stores in sorted(layouts.items())}


def resharders_for(
    databases: Databases,
    previous: Databases | None = None,
    *,
    batch: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[str, tuple[str, ...], Resharder]]:
    """One :class:`Resharder` per layout of :func:`live_layouts`, as (layout name, its
    logical stores, resharder), each moving its stores' tables to the databases
    ``databases`` gives them: within a group (horizontal) or onto databases of their
    own and back (vertical). ``previous`` is needed for the first reshard of a layout.
    Run them in the order given: stores' own layouts come before their group's."""
    result = []
    layouts = live_layouts(databases, previous)
    # Stores' own layouts first, the groups' (``default``) last: a store leaving its group
    # gets its layout (a copy of the group's as it is now) before the group's own reshard
    # changes the group.
    order = sorted(layouts, key=lambda name: (name not in databases.names, name))
    for name in order:
        stores = layouts[name]
        old = previous.store(stores[0]) if previous is not None else None
        resharder = Resharder(
            database=databases.layout_for(name, stores),
            previous=old,
            batch=batch,
            progress=progress,
        )
        result.append((name, stores, resharder))
    return result


def reshard_statuses(databases: Databases) -> list[tuple[str, dict[str, Any] | None]]:
    """:func:`reshard_status` of each layout of :func:`live_layouts`."""
    return [
        (name, reshard_status(databases.layout_for(name, stores)))
        for name, stores in live_layouts(databases).items()
    ]
