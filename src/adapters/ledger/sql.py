"""A job ledger in a SQL table (SQLite or PostgreSQL): one ledger for every server.

Backend: "sql"
Install extra: none for SQLite; postgres for PostgreSQL
Options: url (database URL, required: "sqlite:///var/ledger.db",
    "postgresql+psycopg://user@host/db"); create_database (create a missing PostgreSQL
    database on start; default false); clock (injected).
Differs from the port: completed slots stay in the table until purge (PURGE) forgets them:
    schedule it. The table must exist: run create_schema() (``scalecore db init``) once.
    Expiry compares the stored expiry with the local clock of the server asking, so the
    servers' clocks must be synchronised (NTP) to well within the claim TTLs.

One table, ``scalecore_job_ledger(job, slot, owner, token, expires_at, done)`` keyed by
(job, slot). A claim is race-free across threads, processes and hosts on both databases
without locks held between statements: a fresh slot is claimed by an INSERT (the primary
key lets exactly one racer in), an expired or released one by a conditional
``UPDATE ... WHERE done = false AND (owner = '' OR expires_at <= :now)`` whose row count
says who won. Renew, complete and release are UPDATEs conditioned on owner and token.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from adapters.ledger import MAX_NAME_LENGTH, check_before, check_claim, check_claim_args
from adapters.sql.engine import create_tables, make_engine, translate_errors
from scalecore.capabilities import Capability
from scalecore.clock import Clock, SystemClock
from scalecore.errors import ConfigError, LeaseLost
from scalecore.ports.ledger import Claim, JobLedger
from scalecore.validate import check_seconds

__all__ = ["SqlJobLedger", "ledger_table", "metadata"]

#: The owner of a released slot: no real owner is empty, so nobody holds it.
_RELEASED = ""

metadata = sa.MetaData()

ledger_table = sa.Table(
    "scalecore_job_ledger",
    metadata,
    sa.Column("job", sa.String(MAX_NAME_LENGTH), primary_key=True),
    sa.Column("slot", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("owner", sa.String(MAX_NAME_LENGTH), nullable=False),
    sa.Column("token", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("done", sa.Boolean, nullable=False),
    sa.Index("ix_scalecore_job_ledger_slot", "slot"),
)


class SqlJobLedger(JobLedger):
    """Claims in one SQL table; safe for many threads, processes and hosts at once.

    A claim whose TTL ran out still lets its holder renew or complete it until another
    runner takes the slot over: holding is decided by owner and token, not by the clock.
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.SHARED, Capability.DURABLE, Capability.PURGE}
    )

    def __init__(
        self, *, url: str, create_database: bool = False, clock: Clock | None = None
    ) -> None:
        if not isinstance(url, str) or not url:
            raise ConfigError("must be a database URL string", key="url")
        if not isinstance(create_database, bool):
            raise ConfigError(
                f"must be true or false, not {create_database!r}", key="create_database"
            )
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigError(f"must be a Clock, not {type(clock).__name__}", key="clock")
        self._clock: Clock = clock or SystemClock()
        self._engine = make_engine(url, create_database=create_database)

    def __repr__(self) -> str:
        return f"<SqlJobLedger {self._engine.url.render_as_string(hide_password=True)}>"

    def create_schema(self) -> bool:
        """Create the ledger table and its index if missing (idempotent)."""
        create_tables(self._engine, metadata)
        return True

    def claim(self, job: str, slot: int, owner: str, ttl: float) -> Claim | None:
        check_claim_args(job, slot, owner)
        seconds = check_seconds(ttl, "ttl")
        t = ledger_table
        with translate_errors():
            now = self._clock.now()
            expires_at = now + seconds
            try:
                with self._engine.begin() as conn:
                    conn.execute(
                        t.insert().values(
                            job=job,
                            slot=slot,
                            owner=owner,
                            token=1,
                            expires_at=expires_at,
                            done=False,
                        )
                    )
                return Claim(job, slot, owner, 1, expires_at)
            except sa_exc.IntegrityError:
                pass  # the slot has a row: take it over below if it is free
            with self._engine.begin() as conn:
                taken = conn.execute(
                    t.update()
                    .where(
                        t.c.job == job,
                        t.c.slot == slot,
                        t.c.done == sa.false(),
                        sa.or_(t.c.owner == _RELEASED, t.c.expires_at <= now),
                    )
                    .values(owner=owner, token=t.c.token + 1, expires_at=expires_at)
                )
                if taken.rowcount != 1:
                    return None
                # Our UPDATE holds the row (PostgreSQL) or the database (SQLite) until
                # commit, so this reads our own token.
                token = conn.execute(
                    sa.select(t.c.token).where(t.c.job == job, t.c.slot == slot)
                ).scalar_one()
        return Claim(job, slot, owner, int(token), expires_at)

    def renew(self, claim: Claim, ttl: float) -> Claim:
        check_claim(claim)
        seconds = check_seconds(ttl, "ttl")
        expires_at = self._clock.now() + seconds
        t = ledger_table
        with translate_errors(), self._engine.begin() as conn:
            result = conn.execute(
                t.update()
                .where(*_held_by(claim), t.c.done == sa.false())
                .values(expires_at=expires_at)
            )
        if result.rowcount != 1:
            raise _lost(claim)
        return attrs.evolve(claim, expires_at=expires_at)

    def complete(self, claim: Claim) -> None:
        check_claim(claim)
        with translate_errors(), self._engine.begin() as conn:
            result = conn.execute(ledger_table.update().where(*_held_by(claim)).values(done=True))
        if result.rowcount != 1:
            raise _lost(claim)

    def release(self, claim: Claim) -> None:
        check_claim(claim)
        t = ledger_table
        with translate_errors(), self._engine.begin() as conn:
            conn.execute(
                t.update().where(*_held_by(claim), t.c.done == sa.false()).values(owner=_RELEASED)
            )

    def is_done(self, job: str, slot: int) -> bool:
        check_claim_args(job, slot, "-")
        t = ledger_table
        with translate_errors(), self._engine.connect() as conn:
            done = conn.execute(
                sa.select(t.c.done).where(t.c.job == job, t.c.slot == slot)
            ).scalar_one_or_none()
        return bool(done)

    def purge(self, before: float) -> int:
        limit = check_before(before)
        t = ledger_table
        with translate_errors(), self._engine.begin() as conn:
            return int(conn.execute(t.delete().where(t.c.slot < limit)).rowcount)

    def ping(self) -> None:
        with translate_errors(), self._engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def close(self) -> None:
        self._engine.dispose()


def _held_by(claim: Claim) -> tuple[sa.ColumnElement[bool], ...]:
    t = ledger_table
    return (
        t.c.job == claim.job,
        t.c.slot == claim.slot,
        t.c.owner == claim.owner,
        t.c.token == claim.token,
    )


def _lost(claim: Claim) -> LeaseLost:
    return LeaseLost(
        f"claim on job {claim.job!r} slot {claim.slot} (token {claim.token}) is no longer held"
    )
