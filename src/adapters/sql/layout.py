"""The live layout of sharded SQL: which database owns each logical shard, and the fence.

Backend: sql (SQLAlchemy 2 Core; SQLite files or PostgreSQL databases)
Install extra: none for SQLite; postgres for PostgreSQL
Options: none; :class:`adapters.sql.shards.ShardedDatabase` and
    :mod:`adapters.sql.reshard` use these tables and functions.

Two kinds of tables:

- In the *control* database (the first database of the top-level ``[database] shards``
  list, or ``[database] control``): ``scalecore_layout`` (one row per layout name: the
  databases it uses, by identity, and the owner of each of the 4096 logical shards),
  ``scalecore_reshards`` and ``scalecore_reshard_moves`` (the journal of a reshard).
- In *every* data database of a layout: ``scalecore_shard_state``, one row per (layout,
  logical shard): ``owned`` (this database holds the logical shard and takes its writes),
  ``absent`` (it does not), or ``moved`` (it did; ``moved_to`` names the new owner).

The layout is a routing hint that processes cache; the state rows are the truth. A write
first reads the state rows of its logical shards ``FOR SHARE`` in its own transaction and
is refused (:class:`ShardMoved`) unless every one is ``owned``; a reshard fences a logical
shard by updating its row to ``moved``, which waits for writers in flight and blocks new
ones. So a process with a stale layout can never write where the data no longer lives.

A database's identity is its URL without password, driver or query
(``postgresql://app@db2:5432/photos``, ``sqlite:////abs/path/shard-1.db``): stable across
processes and safe to store and print.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from scalecore.errors import ConfigError, ShardMoved
from scalecore.ids import LOGICAL_SHARDS, make_id

__all__ = [
    "ABSENT",
    "CONTROL",
    "LAYOUT_TTL",
    "MOVED",
    "OWNED",
    "STATE",
    "Layout",
    "check_owned",
    "connect_url",
    "identity",
    "key_column",
    "layout_names",
    "load_layout",
    "load_layouts",
    "owned_states",
    "save_layout",
    "shard_filter",
    "shard_keys",
]

OWNED = "owned"
ABSENT = "absent"
MOVED = "moved"

#: How long a process trusts its cached layout (or its cached "there is no layout")
#: before it reads the control database again. A reshard that creates the first layout
#: waits longer than this before it moves anything, so every process has seen it.
LAYOUT_TTL = 2.0

CONTROL = sa.MetaData()
STATE_METADATA = sa.MetaData()

layout_table = sa.Table(
    "scalecore_layout",
    CONTROL,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("databases", sa.Text, nullable=False),  # JSON list of identities
    sa.Column("owners", sa.Text, nullable=False),  # JSON list: logical shard -> index
    sa.Column("updated_at", sa.Double, nullable=False),
)

reshards_table = sa.Table(
    "scalecore_reshards",
    CONTROL,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),  # running | done
    sa.Column("target", sa.Text, nullable=False),  # JSON list of identities
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("finished_at", sa.Double, nullable=True),
)

moves_table = sa.Table(
    "scalecore_reshard_moves",
    CONTROL,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("logical_shard", sa.Integer, primary_key=True),
    sa.Column("source", sa.String(300), nullable=False),
    sa.Column("target", sa.String(300), nullable=False),
    sa.Column("phase", sa.String(16), nullable=False),  # planned | moved | cleaned
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("pause_ms", sa.Double, nullable=True),
    sa.Column("updated_at", sa.Double, nullable=False),
)

STATE = sa.Table(
    "scalecore_shard_state",
    STATE_METADATA,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("logical_shard", sa.Integer, primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("moved_to", sa.String(300), nullable=True),
)


def identity(url: str) -> str:
    """The stable, password-free name of the database ``url`` points at."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            database = str(Path(database).resolve())
        return f"sqlite:///{database}"
    host = parsed.host or "localhost"
    port = parsed.port or 5432
    user = f"{parsed.username}@" if parsed.username else ""
    return f"{backend}://{user}{host}:{port}/{parsed.database or ''}"


def connect_url(name: str, configured: Iterable[str]) -> str:
    """The URL to reach the database of identity ``name``.

    A configured URL of that database wins (it carries the password). Otherwise the
    identity itself, given the password of a configured URL for the same user on the
    same server, if any (else libpq's own sources: ``PGPASSWORD``, ``~/.pgpass``).
    """
    configured = list(configured)
    for url in configured:
        if identity(url) == name:
            return url
    target = make_url(name)
    for url in configured:
        parsed = make_url(url)
        same_server = (parsed.host or "localhost", parsed.port or 5432, parsed.username) == (
            target.host or "localhost",
            target.port or 5432,
            target.username,
        )
        if parsed.get_backend_name() == "postgresql" and same_server and parsed.password:
            return target.set(password=parsed.password).render_as_string(hide_password=False)
    return name


@attrs.frozen
class Layout:
    """Which database (by identity) owns each logical shard; ``version`` grows on change."""

    version: int
    databases: tuple[str, ...]
    owners: tuple[int, ...]  # logical shard -> index into databases

    def owner(self, logical_shard: int) -> str:
        return self.databases[self.owners[logical_shard]]

    def with_owners(self, changes: Mapping[int, str]) -> Layout:
        """A new version where each logical shard in ``changes`` is owned by its value."""
        databases = list(self.databases)
        owners = list(self.owners)
        for logical, name in changes.items():
            if name not in databases:
                databases.append(name)
            owners[logical] = databases.index(name)
        return Layout(self.version + 1, tuple(databases), tuple(owners))

    def with_databases(self, databases: Sequence[str]) -> Layout:
        """A new version listing ``databases`` in that order (every owner among them)."""
        used = {self.databases[index] for index in set(self.owners)}
        missing = used - set(databases)
        if missing:
            raise ConfigError(f"the layout still uses {', '.join(sorted(missing))}")
        owners = tuple(databases.index(self.databases[index]) for index in self.owners)
        return Layout(self.version + 1, tuple(databases), owners)


def load_layout(connection: sa.Connection, name: str) -> Layout | None:
    """The live layout called ``name`` in the control database, or None if there is none."""
    if not sa.inspect(connection).has_table(layout_table.name):
        return None
    row = connection.execute(
        sa.select(layout_table).where(layout_table.c.name == name)
    ).one_or_none()
    if row is None:
        return None
    return _parse(row)


def load_layouts(connection: sa.Connection, names: Sequence[str]) -> dict[str, Layout]:
    """The live layouts among ``names`` that exist, by name (one query)."""
    if not sa.inspect(connection).has_table(layout_table.name):
        return {}
    rows = connection.execute(sa.select(layout_table).where(layout_table.c.name.in_(list(names))))
    return {row.name: _parse(row) for row in rows}


def layout_names(connection: sa.Connection) -> set[str]:
    """The names of every live layout in the control database."""
    if not sa.inspect(connection).has_table(layout_table.name):
        return set()
    return set(connection.execute(sa.select(layout_table.c.name)).scalars())


def _parse(row: Any) -> Layout:
    owners = tuple(json.loads(row.owners))
    databases = tuple(json.loads(row.databases))
    if len(owners) != LOGICAL_SHARDS or not all(0 <= o < len(databases) for o in owners):
        raise ConfigError(f"the live layout {row.name!r} in the control database is malformed")
    return Layout(int(row.version), databases, owners)


def save_layout(connection: sa.Connection, name: str, layout: Layout) -> None:
    """Store ``layout`` as the live layout ``name`` (insert or replace)."""
    values = {
        "version": layout.version,
        "databases": json.dumps(list(layout.databases)),
        "owners": json.dumps(list(layout.owners), separators=(",", ":")),
        "updated_at": time.time(),
    }
    updated = connection.execute(
        layout_table.update().where(layout_table.c.name == name).values(**values)
    ).rowcount
    if not updated:
        connection.execute(layout_table.insert().values(name=name, **values))


def check_owned(
    connection: sa.Connection,
    name: str | Sequence[str],
    logical_shards: Collection[int],
    *,
    lock: bool,
) -> None:
    """Raise :class:`ShardMoved` unless this database owns every one of ``logical_shards``.

    ``name`` is the layout, or the layouts a logical store may follow, first the one that
    wins (a store's own layout, then the group it shares): per logical shard the state
    row of the first of them that has one decides. With ``lock`` (writes) the state rows
    are read ``FOR SHARE`` in the caller's transaction, so a reshard's fence (an
    ``UPDATE`` of those rows) waits for the caller to commit and the caller cannot start
    once the fence is up. SQLite serialises write transactions on the whole file instead
    (``BEGIN IMMEDIATE``).
    """
    names = [name] if isinstance(name, str) else list(dict.fromkeys(name))
    rows = _state_rows(connection, names, logical_shards, lock=lock)
    for logical in logical_shards:
        row = rows.get(logical)
        if row is None or row.state != OWNED:
            moved_to = row.moved_to if row is not None and row.state == MOVED else None
            raise ShardMoved(
                f"logical shard {logical} is not on this database "
                f"({'moved' if moved_to else 'not owned'}); retry shortly",
                moved_to=moved_to,
            )


def owned_states(
    connection: sa.Connection,
    names: Sequence[str],
    logical_shards: Collection[int],
    *,
    lock: bool,
) -> set[int]:
    """Which of ``logical_shards`` this database owns, by the rules of :func:`check_owned`."""
    rows = _state_rows(connection, list(dict.fromkeys(names)), logical_shards, lock=lock)
    return {logical for logical, row in rows.items() if row.state == OWNED}


def _state_rows(
    connection: sa.Connection, names: list[str], logical_shards: Collection[int], *, lock: bool
) -> dict[int, Any]:
    """The deciding state row per logical shard (the first of ``names`` that has one)."""
    if not logical_shards:
        return {}
    where: list[sa.ColumnElement[bool]] = [STATE.c.logical_shard.in_(sorted(set(logical_shards)))]
    where.append(STATE.c.name == names[0] if len(names) == 1 else STATE.c.name.in_(names))
    query = sa.select(STATE.c.name, STATE.c.logical_shard, STATE.c.state, STATE.c.moved_to).where(
        *where
    )
    if lock:
        query = query.with_for_update(read=True)
    rank = {name: index for index, name in enumerate(names)}
    states: dict[int, Any] = {}
    for row in connection.execute(query):
        kept = states.get(row.logical_shard)
        if kept is None or rank[row.name] < rank[kept.name]:
            states[row.logical_shard] = row
    return states


def key_column(table: sa.Table) -> sa.Column[str]:
    """The column whose id carries each row's logical shard: the first primary key column."""
    columns = list(table.primary_key.columns)
    if not columns:
        raise ConfigError(f"table {table.name!r} has no primary key; it cannot be resharded")
    return columns[0]


def shard_keys(logical_shard: int) -> list[str]:
    """The 16 values of ``substr(id, 11, 4)`` of the ids of ``logical_shard``.

    An id's characters 11 to 14 hold its 16 logical-shard bits and the top 4 random bits
    (see :mod:`scalecore.ids`), so these exact values select a logical shard's rows with
    equality only (no collation involved) and an expression index can serve them.
    """
    first = make_id(0, logical_shard, 0)[10:14]
    return [first[:3] + char for char in _fourth_chars(first[3])]


_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _fourth_chars(first: str) -> str:
    start = _ALPHABET.index(first)
    return _ALPHABET[start : start + 16]


def shard_expression(column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
    """``substr(column, 11, 4)`` with literal arguments, matching the expression index."""
    return sa.func.substr(column, sa.literal_column("11"), sa.literal_column("4"))


def shard_filter(column: sa.ColumnElement[str], logical_shards: Iterable[int]) -> Any:
    """SQL selecting rows whose ``column`` id is of one of ``logical_shards``.

    The keys are written into the statement (they are made of the id alphabet only, so
    they need no escaping): one text with hundreds of bind parameters costs far more to
    bind than to parse.
    """
    keys = [key for logical in sorted(set(logical_shards)) for key in shard_keys(logical)]
    assert all(key.isalnum() and key.isascii() for key in keys)
    listed = ", ".join(f"'{key}'" for key in keys)
    return shard_expression(column).op("IN")(sa.literal_column(f"({listed})"))


def logical_of_key(key: str) -> int:
    """The logical shard of a ``substr(id, 11, 4)`` value."""
    number = 0
    for char in key:
        number = number * 32 + _ALPHABET.index(char)
    return number >> 4


def ensure_state(connection: sa.Connection, name: str, owned: Collection[int]) -> None:
    """Create the state table and the rows of layout ``name`` that are missing.

    A missing row becomes ``owned`` if its logical shard is in ``owned``, else ``absent``;
    existing rows are left as they are.
    """
    STATE_METADATA.create_all(connection, checkfirst=True)
    present = set(
        connection.execute(sa.select(STATE.c.logical_shard).where(STATE.c.name == name)).scalars()
    )
    rows = [
        {
            "name": name,
            "logical_shard": logical,
            "state": OWNED if logical in owned else ABSENT,
            "moved_to": None,
        }
        for logical in range(LOGICAL_SHARDS)
        if logical not in present
    ]
    if rows:
        connection.execute(STATE.insert(), rows)
