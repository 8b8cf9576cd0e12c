"""Engines from database URLs, and the one place SQLAlchemy errors become scalecore errors.

Backend: SQLAlchemy 2 Core (no ORM mapping of domain classes).
Install extra: none for SQLite; ``postgres`` (psycopg 3) for PostgreSQL.
Options: a database URL (``sqlite:///var/db.sqlite``, ``postgresql+psycopg://host/db``).

SQLite files get WAL journaling and a busy timeout, so several threads and processes of one
box can share a file. A PostgreSQL database named in a URL is created on first use when
``create_database=True`` (for tests and the embedded quick start; production databases are
provisioned by their operators).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from scalecore.errors import BackendUnavailable, ConfigError, Conflict

__all__ = ["create_tables", "make_engine", "statements_in_this_thread", "translate_errors"]

_counts = threading.local()


def statements_in_this_thread() -> int:
    """How many SQL statements this thread has sent through any engine of ``make_engine``.

    The count only grows; take it before and after a piece of work for the queries that
    work made (the web app does so per request for ``scalecore_http_db_queries_total``).
    """
    return int(getattr(_counts, "value", 0))


def _count_statement(*_args: Any) -> None:
    _counts.value = getattr(_counts, "value", 0) + 1


def make_engine(url: str, *, create_database: bool = False, **kwargs: Any) -> sa.Engine:
    """Return an engine for ``url``; raise ``ConfigError`` (key ``url``) if it is malformed.

    Nothing connects yet, except that ``create_database`` makes sure the database exists.
    Errors never repeat the URL, which may hold a password. A SQLite file's folder that
    cannot be created raises ``BackendUnavailable``.
    """
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError):
        raise ConfigError(
            "is not a database URL (like sqlite:///var/db.sqlite or "
            "postgresql+psycopg://user@host/db)",
            key="url",
        ) from None
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        kwargs.setdefault("pool_pre_ping", True)
        engine = sa.create_engine(parsed, **kwargs)
    except ImportError as exc:
        from scalecore.errors import MissingDriverError

        raise MissingDriverError(
            f"the driver for {parsed.drivername!r} is not installed; "
            "install scalecore[postgres] for PostgreSQL"
        ) from exc
    sa.event.listen(engine, "before_cursor_execute", _count_statement)
    if create_database and parsed.get_backend_name() == "postgresql":
        _create_postgres_database(engine)
    return engine


def _sqlite_engine(url: sa.URL, **kwargs: Any) -> sa.Engine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        try:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendUnavailable(
                f"cannot create the SQLite database's folder: {exc.strerror or type(exc).__name__}"
            ) from exc
    if database in ("", ":memory:"):
        kwargs.setdefault("poolclass", sa.StaticPool)
    kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
    engine = sa.create_engine(url, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy issue BEGIN itself, so "BEGIN IMMEDIATE" below takes the write
        # lock up front and concurrent writers wait instead of failing on upgrade.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    sa.event.listen(engine, "before_cursor_execute", _count_statement)
    return engine


def _create_postgres_database(engine: sa.Engine) -> None:
    name = engine.url.database
    if not name:
        return
    admin = sa.create_engine(engine.url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with translate_errors(), admin.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).scalar()
            if not exists:
                quoted = admin.dialect.identifier_preparer.quote(name)
                # Created concurrently by another process: PostgreSQL reports the race as
                # DuplicateDatabase, or, when both inserts reach pg_database at once, as a
                # unique violation of its name index.
                with contextlib.suppress(sa_exc.ProgrammingError, sa_exc.IntegrityError):
                    conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
    finally:
        admin.dispose()


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn SQLAlchemy and driver errors raised inside the block into scalecore errors.

    Integrity violations become ``Conflict``; lost connections, timeouts and every other
    database failure become ``BackendUnavailable``.
    """
    try:
        yield
    except sa_exc.IntegrityError as exc:
        raise Conflict(f"database constraint violated: {exc.orig}") from exc
    except sa_exc.SQLAlchemyError as exc:
        raise BackendUnavailable(f"database error: {type(exc).__name__}: {exc}") from exc


def create_tables(engine: sa.Engine, metadata: sa.MetaData) -> None:
    """Create ``metadata``'s missing tables and indexes; idempotent, and safe when several
    processes run it at once (the loser of a CREATE race simply checks again)."""
    with translate_errors():
        try:
            metadata.create_all(engine, checkfirst=True)
        except sa_exc.SQLAlchemyError:
            metadata.create_all(engine, checkfirst=True)
