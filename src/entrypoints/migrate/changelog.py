"""A change log on the source, so a later pass walks only what changed since the last one.

The first copy run installs, on every source shard's primary, for each photo-feed table:

- a table ``scalecore_changes_<table>`` (``seq`` and the table's key columns), append-only;
- triggers (SQLite: ``AFTER INSERT``, ``AFTER UPDATE``, ``AFTER DELETE``; PostgreSQL: one
  row-level trigger for the three, one statement-level trigger for ``TRUNCATE``) that
  append, in the writing transaction itself, the primary key of every row written (old
  and new key of an update that changes it). A ``TRUNCATE`` appends a row of NULLs:
  everything;
- a row in ``scalecore_changes_installed`` naming the table with a fresh random
  *install id*, renewed whenever a trigger had to be (re)created.

Every writer of the source is captured, whatever its version, because the database does
the logging. A pass then reads the log (:func:`snapshot`) *before* it reads any row, copies
just the rows logged (or, past :data:`MAX_KEYS` of them, walks their buckets; plus the
buckets an earlier pass could not verify), and, once they are
verified in the target, deletes exactly the log entries it read (:func:`forget`): by
ranges of consecutive ``seq`` values it saw. An entry appended while the pass ran has a
higher ``seq`` or (PostgreSQL, a transaction still open when the log was read) a ``seq``
in a gap between the ranges, so it stays for the next pass. A pass killed before
:func:`forget` leaves the entries in place: the next pass walks them again.

The target journal (:mod:`entrypoints.migrate.journal`) remembers, per table, the install
ids a complete walk started under. A later pass trusts the log only if the source still
has the same ids: a log dropped or a trigger recreated in between (writes may have gone
unlogged) means a full walk again.

The log costs one small insert per row written on the source while it is installed, and
grows by one row per row written until a pass reads it. :func:`uninstall`
(``scalecore migrate --drop-change-log``) removes all of it. By hand, on each source
database: PostgreSQL ``DROP FUNCTION scalecore_changes_<table>() CASCADE`` (the triggers
go with it) and ``DROP TABLE scalecore_changes_<table>``; SQLite ``DROP TRIGGER
scalecore_changes_<table>_ins`` (and ``_upd``, ``_del``) and ``DROP TABLE
scalecore_changes_<table>``; then ``DROP TABLE scalecore_changes_installed``.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import attrs
import sqlalchemy as sa

from entrypoints.migrate.sqlsync import ShardSet, bucket_of
from scalecore.errors import ScalecoreError

__all__ = ["INSTALLED", "Snapshot", "forget", "install", "log_name", "snapshot", "uninstall"]

#: Table (on every source shard) naming the tables logged and their install ids.
INSTALLED = "scalecore_changes_installed"
#: Log entries read per query.
PAGE = 20_000
#: Distinct keys a pass copies one by one; above that it walks their buckets instead.
MAX_KEYS = 500_000
#: Ranges deleted per statement.
_RANGES_PER_DELETE = 200
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,40}")


def log_name(table: str) -> str:
    return f"scalecore_changes_{table}"


@attrs.define
class Snapshot:
    """What the log of one table held when a pass read it, on every source shard.

    ``keys``: the primary keys logged, sorted (None if there were more than
    :data:`MAX_KEYS`); ``buckets``: their buckets; ``everything``: an entry could not be
    placed in a bucket (a ``TRUNCATE``, a key that is not an id), so the whole table must
    be walked; ``ranges``: per shard, the ``(first, last)`` seq ranges read, for
    :func:`forget`.
    """

    installs: list[str]
    keys: list[tuple[Any, ...]] | None = None
    buckets: set[int] = attrs.Factory(set)
    everything: bool = False
    ranges: list[list[tuple[int, int]]] = attrs.Factory(list)
    entries: int = 0


def _statements(dialect: str, table: sa.Table) -> list[str]:
    """DDL creating the log and triggers of ``table`` (idempotent)."""
    keys = [column.name for column in table.primary_key.columns]
    for name in (table.name, *keys):
        if not _IDENTIFIER.fullmatch(name):
            raise ValueError(f"not a plain SQL identifier: {name!r}")
    log = log_name(table.name)
    columns = ", ".join(keys)
    new, old = (", ".join(f"{row}.{key}" for key in keys) for row in ("NEW", "OLD"))
    if dialect == "sqlite":
        moved = " OR ".join(f"NEW.{k} IS NOT OLD.{k}" for k in keys)
        insert = f"INSERT INTO {log} ({columns})"
        # Identifiers only, from the project's own table definitions (checked above).
        return [
            f"CREATE TABLE IF NOT EXISTS {log} (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            + ", ".join(f"{key} TEXT" for key in keys)
            + ")",
            f"CREATE TRIGGER IF NOT EXISTS {log}_ins AFTER INSERT ON {table.name} "  # noqa: S608
            f"BEGIN {insert} VALUES ({new}); END",
            f"CREATE TRIGGER IF NOT EXISTS {log}_upd AFTER UPDATE ON {table.name} "
            f"BEGIN {insert} VALUES ({old}); {insert} SELECT {new} WHERE {moved}; END",
            f"CREATE TRIGGER IF NOT EXISTS {log}_del AFTER DELETE ON {table.name} "
            f"BEGIN {insert} VALUES ({old}); END",
        ]
    moved = " OR ".join(f"NEW.{k} IS DISTINCT FROM OLD.{k}" for k in keys)
    return [
        f"CREATE TABLE IF NOT EXISTS {log} (seq BIGSERIAL PRIMARY KEY, "
        + ", ".join(f"{key} TEXT" for key in keys)
        + ")",
        # Identifiers only, from the project's own table definitions (checked above).
        f"""CREATE OR REPLACE FUNCTION {log}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    INSERT INTO {log} ({keys[0]}) VALUES (NULL);
    RETURN NULL;
  END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    INSERT INTO {log} ({columns}) VALUES ({old});
  END IF;
  IF TG_OP = 'INSERT' THEN
    INSERT INTO {log} ({columns}) VALUES ({new});
  ELSIF TG_OP = 'UPDATE' THEN
    IF {moved} THEN
      INSERT INTO {log} ({columns}) VALUES ({new});
    END IF;
  END IF;
  RETURN NULL;
END $$""",  # noqa: S608
        # Dropped and created (not CREATE OR REPLACE TRIGGER) for PostgreSQL before 14.
        f"DROP TRIGGER IF EXISTS {log}_row ON {table.name}",
        f"CREATE TRIGGER {log}_row AFTER INSERT OR UPDATE OR DELETE ON {table.name} "
        f"FOR EACH ROW EXECUTE FUNCTION {log}()",
        f"DROP TRIGGER IF EXISTS {log}_truncate ON {table.name}",
        f"CREATE TRIGGER {log}_truncate AFTER TRUNCATE ON {table.name} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {log}()",
    ]


def _trigger_names(dialect: str, table: str) -> list[str]:
    log = log_name(table)
    if dialect == "sqlite":
        return [f"{log}_ins", f"{log}_upd", f"{log}_del"]
    return [f"{log}_row", f"{log}_truncate"]


def _triggers_present(connection: sa.Connection, table: str) -> bool:
    dialect = connection.dialect.name
    names = _trigger_names(dialect, table)
    if dialect == "sqlite":
        query = sa.text(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t "
            "AND name IN :names"
        ).bindparams(sa.bindparam("names", expanding=True))
    else:
        query = sa.text(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(:t) "
            "AND tgname IN :names AND tgenabled <> 'D'"
        ).bindparams(sa.bindparam("names", expanding=True))
    found = connection.execute(query, {"t": table, "names": names}).scalar_one()
    return int(found) == len(names)


_installed = sa.Table(
    INSTALLED,
    sa.MetaData(),
    sa.Column("table_name", sa.String(64), primary_key=True),
    sa.Column("install_id", sa.String(64), nullable=False),
)


def install(table: sa.Table, side: ShardSet) -> list[str]:
    """Make sure every shard of ``side`` logs changes to ``table``; return each shard's
    install id (new if anything had to be created). Runs on the primaries; raises a
    ScalecoreError if the source refuses (no rights to create triggers)."""
    installs = []
    for index in range(side.count):
        with side.write(index) as connection:
            _installed.create(connection, checkfirst=True)
            current = connection.execute(
                sa.select(_installed.c.install_id).where(_installed.c.table_name == table.name)
            ).scalar_one_or_none()
            if current is None or not _triggers_present(connection, table.name):
                for statement in _statements(connection.dialect.name, table):
                    connection.exec_driver_sql(statement)
                current = uuid.uuid4().hex
                connection.execute(_installed.delete().where(_installed.c.table_name == table.name))
                connection.execute(
                    _installed.insert().values(table_name=table.name, install_id=current)
                )
            installs.append(str(current))
    return installs


def snapshot(table: sa.Table, side: ShardSet, installs: list[str]) -> Snapshot:
    """Read the log of ``table`` on every shard (primaries), a page at a time. The keys
    logged are kept up to :data:`MAX_KEYS` distinct ones, their buckets always (at most
    131,072 per table); the entries themselves only as ranges of seq."""
    found = Snapshot(installs=installs)
    names = [column.name for column in table.primary_key.columns]
    log = sa.table(log_name(table.name), sa.column("seq"), *(sa.column(n) for n in names))
    keys: set[tuple[Any, ...]] | None = set()
    for index in range(side.count):
        ranges: list[tuple[int, int]] = []
        after = 0
        while True:
            with side.write(index) as connection:
                rows = connection.execute(
                    sa.select(log.c.seq, *(log.c[n] for n in names))
                    .where(log.c.seq > after)
                    .order_by(log.c.seq)
                    .limit(PAGE)
                ).all()
            for seq, *key_values in rows:
                if ranges and ranges[-1][1] == seq - 1:
                    ranges[-1] = (ranges[-1][0], seq)
                else:
                    ranges.append((seq, seq))
                key = tuple(key_values)
                if any(not isinstance(part, str) for part in key):
                    found.everything = True  # a TRUNCATE
                    continue
                try:
                    found.buckets.add(bucket_of(key, True))
                except ScalecoreError:
                    found.everything = True  # a key that is not an id
                    continue
                if keys is not None:
                    keys.add(key)
                    if len(keys) > MAX_KEYS:
                        keys = None
            found.entries += len(rows)
            if len(rows) < PAGE:
                break
            after = rows[-1][0]
        found.ranges.append(ranges)
    found.keys = None if keys is None else sorted(keys)
    return found


def forget(table: sa.Table, side: ShardSet, read: Snapshot) -> None:
    """Delete the entries ``read`` saw (and only those) from the log of ``table``."""
    log = sa.table(log_name(table.name), sa.column("seq"))
    for index, ranges in enumerate(read.ranges):
        for start in range(0, len(ranges), _RANGES_PER_DELETE):
            chunk = ranges[start : start + _RANGES_PER_DELETE]
            with side.write(index) as connection:
                connection.execute(
                    log.delete().where(sa.or_(*(log.c.seq.between(a, b) for a, b in chunk)))
                )


def uninstall(tables: list[sa.Table], side: ShardSet) -> int:
    """Remove the triggers, functions and logs of ``tables`` from every shard of
    ``side``, and the install table once no table is logged; return what was dropped."""
    dropped = 0
    for index in range(side.count):
        with side.write(index) as connection:
            dialect = connection.dialect.name
            inspector = sa.inspect(connection)
            for table in tables:
                log = log_name(table.name)
                if dialect == "sqlite":
                    for name in _trigger_names(dialect, table.name):
                        connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
                else:
                    if inspector.has_table(table.name):
                        for name in _trigger_names(dialect, table.name):
                            connection.exec_driver_sql(
                                f"DROP TRIGGER IF EXISTS {name} ON {table.name}"
                            )
                    connection.exec_driver_sql(f"DROP FUNCTION IF EXISTS {log}()")
                if inspector.has_table(log):
                    connection.exec_driver_sql(f"DROP TABLE {log}")
                    dropped += 1
                if inspector.has_table(INSTALLED):
                    connection.execute(
                        _installed.delete().where(_installed.c.table_name == table.name)
                    )
            if inspector.has_table(INSTALLED):
                left: Any = connection.execute(
                    sa.select(sa.func.count()).select_from(_installed)
                ).scalar_one()
                if not left:
                    connection.exec_driver_sql(f"DROP TABLE {INSTALLED}")
    return dropped
