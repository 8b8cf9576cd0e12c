"""Sessions in a SQL table (SQLite or PostgreSQL): shared by every server, kept across restarts.

Backend: "sql"
Install extra: none for SQLite; postgres for PostgreSQL
Options: url (database URL, required: "sqlite:///var/sessions.db",
    "postgresql+psycopg://user@host/db"); ttl (seconds a session lives after its last save;
    default 1209600 = 14 days); create_database (create a missing PostgreSQL database on
    start; default false); clock (injected).
Differs from the port: expired rows stay in the table until purge_expired runs (PURGE):
    schedule it. The table must exist: run create_schema() (``scalecore db init``) once.
    Expiry compares the stored expiry with the local clock of the server asking, so the
    servers' clocks must be synchronised (NTP).

One table, ``scalecore_sessions(id, data, version, expires_at)``. A save reads the row,
merges its own changes onto it and writes it back in one transaction, so two requests that
changed different keys both survive: the read locks the row (``SELECT ... FOR UPDATE`` on
PostgreSQL; SQLite serialises write transactions anyway), and the write is still
conditioned on the version read (``UPDATE ... WHERE version = :seen``), re-read and
re-merged on a mismatch, so a database without row locks stays correct too.

Session ids never reach a log line or an error message: the engine hides bound parameters
and constraint details are dropped.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from adapters.sessions import (
    DEFAULT_TTL,
    IMPORT_BATCH,
    check_record,
    decode_data,
    encode_data,
    merge_changes,
)
from adapters.sql.engine import create_tables, make_engine, translate_errors
from scalecore.capabilities import Capability
from scalecore.clock import Clock, SystemClock
from scalecore.errors import ConfigError, Conflict, NotFound
from scalecore.ports.sessions import (
    Session,
    SessionRecord,
    SessionStore,
    is_valid_session_id,
    new_session_id,
)
from scalecore.types import JSONObject, JSONValue
from scalecore.validate import check_json, check_seconds

__all__ = ["SqlSessionStore", "metadata", "sessions_table"]

logger = logging.getLogger(__name__)

#: A save that keeps losing the race this many times raises ``Conflict``.
MAX_SAVE_ATTEMPTS = 10

metadata = sa.MetaData()

sessions_table = sa.Table(
    "scalecore_sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Index("ix_scalecore_sessions_expires_at", "expires_at"),
)


class SqlSessionStore(SessionStore):
    """Sessions in one SQL table; safe for many threads, processes and hosts at once."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.SHARED,
            Capability.DURABLE,
            Capability.PURGE,
            Capability.EXPORT,
            Capability.IMPORT,
        }
    )

    def __init__(
        self,
        *,
        url: str,
        ttl: float = DEFAULT_TTL,
        create_database: bool = False,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise ConfigError("must be a database URL string", key="url")
        if not isinstance(create_database, bool):
            raise ConfigError(
                f"must be true or false, not {create_database!r}", key="create_database"
            )
        self.ttl = check_seconds(ttl, "ttl", error=ConfigError)
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigError(f"must be a Clock, not {type(clock).__name__}", key="clock")
        self._clock: Clock = clock or SystemClock()
        # hide_parameters: bound values (session ids) never appear in error messages.
        self._engine = make_engine(url, create_database=create_database, hide_parameters=True)

    def __repr__(self) -> str:
        return f"<SqlSessionStore {self._engine.url.render_as_string(hide_password=True)}>"

    def create_schema(self) -> bool:
        """Create the sessions table and its index if missing (idempotent)."""
        create_tables(self._engine, metadata)
        return True

    def create(self, data: Mapping[str, JSONValue] | None = None) -> Session:
        text = encode_data(data if data is not None else {})
        session_id = new_session_id()
        expires_at = self._clock.now() + self.ttl
        with _translate(), self._engine.begin() as conn:
            conn.execute(
                sessions_table.insert().values(
                    id=session_id, data=text, version=1, expires_at=expires_at
                )
            )
        return Session(session_id, _decode(text), expires_at)

    def load(self, session_id: str) -> Session | None:
        if not is_valid_session_id(session_id):
            return None
        with _translate(), self._engine.connect() as conn:
            row = _read(conn, session_id, self._clock.now())
        if row is None:
            return None
        data, _version, expires_at = row
        return Session(session_id, data, expires_at)

    def save(self, session: Session) -> None:
        changed, removed = _pending(session)
        t = sessions_table
        with _translate():
            for _attempt in range(MAX_SAVE_ATTEMPTS):
                with self._engine.begin() as conn:
                    now = self._clock.now()
                    merged, version = _merge_locked(conn, session.id, changed, removed, now)
                    expires_at = now + self.ttl
                    result = conn.execute(
                        t.update()
                        .where(t.c.id == session.id, t.c.version == version)
                        .values(
                            data=encode_data(merged), version=version + 1, expires_at=expires_at
                        )
                    )
                    if result.rowcount == 1:
                        break
            else:
                raise Conflict("the session kept changing under this save; try again")
        session.mark_saved(merged, expires_at)

    def delete(self, session_id: str) -> None:
        if not is_valid_session_id(session_id):
            return
        with _translate(), self._engine.begin() as conn:
            conn.execute(sessions_table.delete().where(sessions_table.c.id == session_id))

    def rotate(self, session: Session) -> Session:
        changed, removed = _pending(session)
        t = sessions_table
        with _translate():
            for _attempt in range(MAX_SAVE_ATTEMPTS):
                # One transaction: the new row appears and the old one goes together.
                with self._engine.begin() as conn:
                    now = self._clock.now()
                    merged, version = _merge_locked(conn, session.id, changed, removed, now)
                    gone = conn.execute(
                        t.delete().where(t.c.id == session.id, t.c.version == version)
                    )
                    if gone.rowcount != 1:
                        continue  # a concurrent save won; re-read and re-merge
                    new_id = new_session_id()
                    expires_at = now + self.ttl
                    conn.execute(
                        t.insert().values(
                            id=new_id, data=encode_data(merged), version=1, expires_at=expires_at
                        )
                    )
                    break
            else:
                raise Conflict("the session kept changing under this rotate; try again")
        return Session(new_id, merged, expires_at)

    def purge_expired(self) -> int:
        t = sessions_table
        with _translate(), self._engine.begin() as conn:
            result = conn.execute(t.delete().where(t.c.expires_at <= self._clock.now()))
            return int(result.rowcount)

    def export_sessions(self) -> Iterator[SessionRecord]:
        """Every live session, read in pages of :data:`IMPORT_BATCH` in id order."""
        t = sessions_table
        after: str | None = None
        while True:
            query = sa.select(t.c.id, t.c.data, t.c.expires_at).order_by(t.c.id)
            if after is not None:
                query = query.where(t.c.id > after)
            with _translate(), self._engine.connect() as conn:
                rows = conn.execute(query.limit(IMPORT_BATCH)).all()
            now = self._clock.now()
            for row in rows:
                data = decode_data(row.data)
                if row.expires_at > now and data is not None:
                    yield SessionRecord(row.id, data, float(row.expires_at))
            if len(rows) < IMPORT_BATCH:
                return
            after = rows[-1].id

    def import_sessions(self, records: Iterable[SessionRecord]) -> int:
        """Upsert in batches of :data:`IMPORT_BATCH`, one transaction each; an existing
        session's version moves on, so a save that read it before retries its merge."""
        written = 0
        iterator = iter(records)
        while batch := list(itertools.islice(iterator, IMPORT_BATCH)):
            now = self._clock.now()
            checked = [(record, check_record(record)) for record in batch]
            rows = [
                {"id": r.id, "data": data, "version": 1, "expires_at": r.expires_at}
                for r, data in checked
                if r.expires_at > now
            ]
            if not rows:
                continue
            with _translate(), self._engine.begin() as conn:
                insert = _insert(conn)
                conn.execute(
                    insert.on_conflict_do_update(
                        index_elements=[sessions_table.c.id],
                        set_={
                            "data": insert.excluded.data,
                            "expires_at": insert.excluded.expires_at,
                            "version": sessions_table.c.version + 1,
                        },
                    ),
                    rows,
                )
            written += len(rows)
        return written

    def ping(self) -> None:
        with _translate(), self._engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def close(self) -> None:
        self._engine.dispose()


def _insert(conn: sa.Connection) -> Any:
    """An INSERT of the sessions table with ``ON CONFLICT`` support for the dialect."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(sessions_table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(sessions_table)


def _pending(session: Session) -> tuple[dict[str, JSONValue], frozenset[str]]:
    """The session's unsaved changes, checked; ``NotFound`` for an id no row can have."""
    changed, removed = session.changes
    check_json(changed, "session data")
    if not is_valid_session_id(session.id):
        raise NotFound("the session expired or was deleted")
    return changed, removed


def _merge_locked(
    conn: sa.Connection,
    session_id: str,
    changed: Mapping[str, JSONValue],
    removed: frozenset[str],
    now: float,
) -> tuple[JSONObject, int]:
    """Lock the live row, merge the changes onto it; return the merged data and the version
    read. ``NotFound`` if the session expired or was deleted."""
    row = _read(conn, session_id, now, lock=True)
    if row is None:
        raise NotFound("the session expired or was deleted")
    stored, version, _ = row
    return merge_changes(stored, changed, removed), version


def _read(
    conn: sa.Connection, session_id: str, now: float, *, lock: bool = False
) -> tuple[JSONObject, int, float] | None:
    """The live row's data, version and expiry, or ``None`` if absent, expired or unreadable.

    ``lock`` holds the row until the transaction ends, where the database has row locks.
    """
    t = sessions_table
    query = sa.select(t.c.data, t.c.version, t.c.expires_at).where(t.c.id == session_id)
    row = conn.execute(query.with_for_update() if lock else query).one_or_none()
    if row is None or row.expires_at <= now:
        return None
    data = decode_data(row.data)
    if data is None:
        logger.warning("a stored session's data is not a JSON object; treating it as missing")
        return None
    return data, int(row.version), float(row.expires_at)


def _decode(text: str) -> JSONObject:
    data = decode_data(text)
    assert data is not None  # encode_data always writes an object
    return data


@contextlib.contextmanager
def _translate() -> Iterator[None]:
    """Like ``translate_errors``, but constraint messages (which quote ids) are dropped."""
    try:
        with translate_errors():
            yield
    except Conflict as exc:
        if isinstance(exc.__cause__, sa_exc.IntegrityError):
            raise Conflict("a session id collided; try again") from None
        raise
