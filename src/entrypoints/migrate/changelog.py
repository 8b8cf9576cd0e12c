"""A change log on the source, so a later pass walks only what changed since the last one.

The first copy run installs, on every source shard's primary, for each photo-feed table:

- a table ``scalecore_changes_<table>`` (``seq``, ``token``), append-only;
- triggers (SQLite: ``AFTER INSERT``, ``AFTER UPDATE``, ``AFTER DELETE``; PostgreSQL: one
  row-level trigger for the three, one statement-level trigger for ``TRUNCATE``) that
  append, in the writing transaction itself, the *bucket token* of every row written:
  characters 11-14 of the row's first key column (they fix its logical shard) and the last
  character of its last key column (the bucket within it, see
  :func:`entrypoints.migrate.sqlsync.bucket_of`). A ``TRUNCATE`` appends ``*``: everything;
- a row in ``scalecore_changes_installed`` naming the table with a fresh random
  *install id*, renewed whenever a trigger had to be (re)created.

Every writer of the source is captured, whatever its version, because the database does
the logging. A pass then reads the log (:func:`snapshot`) *before* it reads any row, walks
just the buckets logged (plus those an earlier pass could not verify), and, once they are
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

from entrypoints.migrate.sqlsync import BUCKETS_PER_SHARD, ShardSet

__all__ = ["INSTALLED", "Snapshot", "forget", "install", "log_name", "snapshot", "uninstall"]

#: Table (on every source shard) naming the tables logged and their install ids.
INSTALLED = "scalecore_changes_installed"
#: Log entries read per query.
PAGE = 20_000
#: Ranges deleted per statement.
_RANGES_PER_DELETE = 200
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,40}")
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DIGIT = {char: value for value, char in enumerate(_ALPHABET)}


def log_name(table: str) -> str:
    return f"scalecore_changes_{table}"


@attrs.define
class Snapshot:
    """What the log of one table held when a pass read it, on every source shard.

    ``buckets``: the buckets logged; ``everything``: an entry could not be placed in a
    bucket (a ``TRUNCATE``, a key that is not an id), so the whole table must be walked;
    ``ranges``: per shard, the ``(first, last)`` seq ranges read, for :func:`forget`.
    """

    installs: list[str]
    buckets: set[int] = attrs.Factory(set)
    everything: bool = False
    ranges: list[list[tuple[int, int]]] = attrs.Factory(list)
    entries: int = 0


def _bucket(token: str) -> int | None:
    """The bucket a token names, or None if it names none (``*``, a key not an id)."""
    if len(token) != 5:
        return None
    digits = [_DIGIT.get(char, -1) for char in token]
    if min(digits) < 0:
        return None
    d10, d11, d12, d13, last = digits
    logical = (d10 << 11) | (d11 << 6) | (d12 << 1) | (d13 >> 4)
    return int(logical * BUCKETS_PER_SHARD + last)


def _token_sql(dialect: str, row: str, first: str, last: str) -> str:
    # Characters 11-14 (1-based) of an id hold its 16 logical-shard bits (scalecore.ids).
    tail = f"substr({row}.{last}, -1)" if dialect == "sqlite" else f"right({row}.{last}, 1)"
    return f"substr({row}.{first}, 11, 4) || {tail}"


def _statements(dialect: str, table: sa.Table) -> list[str]:
    """DDL creating the log and triggers of ``table`` (idempotent)."""
    keys = [column.name for column in table.primary_key.columns]
    first, last = keys[0], keys[-1]
    for name in (table.name, *keys):
        if not _IDENTIFIER.fullmatch(name):
            raise ValueError(f"not a plain SQL identifier: {name!r}")
    log = log_name(table.name)
    if dialect == "sqlite":
        insert = f"INSERT INTO {log} (token) VALUES"
        new, old = _token_sql(dialect, "NEW", first, last), _token_sql(dialect, "OLD", first, last)
        moved = " OR ".join(f"NEW.{k} IS NOT OLD.{k}" for k in dict.fromkeys((first, last)))
        return [
            f"CREATE TABLE IF NOT EXISTS {log} "
            "(seq INTEGER PRIMARY KEY AUTOINCREMENT, token TEXT NOT NULL)",
            f"CREATE TRIGGER IF NOT EXISTS {log}_ins AFTER INSERT ON {table.name} "
            f"BEGIN {insert} ({new}); END",
            f"CREATE TRIGGER IF NOT EXISTS {log}_upd AFTER UPDATE ON {table.name} "
            f"BEGIN {insert} ({old}); "
            f"INSERT INTO {log} (token) SELECT {new} WHERE {moved}; END",
            f"CREATE TRIGGER IF NOT EXISTS {log}_del AFTER DELETE ON {table.name} "
            f"BEGIN {insert} ({old}); END",
        ]
    new, old = _token_sql(dialect, "NEW", first, last), _token_sql(dialect, "OLD", first, last)
    moved = " OR ".join(f"NEW.{k} IS DISTINCT FROM OLD.{k}" for k in dict.fromkeys((first, last)))
    return [
        f"CREATE TABLE IF NOT EXISTS {log} (seq BIGSERIAL PRIMARY KEY, token TEXT NOT NULL)",
        # Identifiers only, from the project's own table definitions (checked above).
        f"""CREATE OR REPLACE FUNCTION {log}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    INSERT INTO {log} (token) VALUES ('*');
    RETURN NULL;
  END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    INSERT INTO {log} (token) VALUES ({old});
  END IF;
  IF TG_OP = 'INSERT' THEN
    INSERT INTO {log} (token) VALUES ({new});
  ELSIF TG_OP = 'UPDATE' THEN
    IF {moved} THEN
      INSERT INTO {log} (token) VALUES ({new});
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
    """Read the log of ``table`` on every shard (primaries), a page at a time; the
    buckets are kept (at most 131,072 per table), the entries are not."""
    found = Snapshot(installs=installs)
    log = sa.table(log_name(table.name), sa.column("seq"), sa.column("token"))
    for index in range(side.count):
        ranges: list[tuple[int, int]] = []
        after = 0
        while True:
            with side.write(index) as connection:
                rows = connection.execute(
                    sa.select(log.c.seq, log.c.token)
                    .where(log.c.seq > after)
                    .order_by(log.c.seq)
                    .limit(PAGE)
                ).all()
            for seq, token in rows:
                if ranges and ranges[-1][1] == seq - 1:
                    ranges[-1] = (ranges[-1][0], seq)
                else:
                    ranges.append((seq, seq))
                bucket = _bucket(token)
                if bucket is None:
                    found.everything = True
                else:
                    found.buckets.add(bucket)
            found.entries += len(rows)
            if len(rows) < PAGE:
                break
            after = rows[-1][0]
        found.ranges.append(ranges)
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
