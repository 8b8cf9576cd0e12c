"""The JobLedger contract, run against every adapter.

Fixtures: ``make_ledger()`` builds another ledger on the same backend (same file, same
server) with the test's clock; ``ledger`` is the first one; ``advance(seconds)`` moves time
for all of them. A new adapter adds an entry to ``FACTORIES`` and passes this file unchanged.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, rule, run_state_machine_as_test

from adapters.ledger.memory import MemoryJobLedger
from adapters.ledger.sql import SqlJobLedger, ledger_table
from adapters.sql.engine import make_engine
from scalecore.capabilities import Capability
from scalecore.clock import ManualClock
from scalecore.errors import ConfigError, InvalidInput, LeaseLost, UnsupportedOperation
from scalecore.ports.ledger import Claim, JobLedger

Factory = Callable[[], JobLedger]

SLOT = 1_700_000_000 // 60 * 60


def _memory(request: pytest.FixtureRequest, clock: ManualClock) -> Factory:
    return lambda: MemoryJobLedger(clock=clock)


def _sql(url: str, clock: ManualClock, *, create_database: bool = False) -> Factory:
    def make() -> JobLedger:
        ledger = SqlJobLedger(url=url, clock=clock, create_database=create_database)
        ledger.create_schema()
        return ledger

    return make


def _sql_sqlite(request: pytest.FixtureRequest, clock: ManualClock) -> Factory:
    tmp_path = request.getfixturevalue("tmp_path")
    return _sql(f"sqlite:///{tmp_path / 'ledger.db'}", clock)


def _sql_postgres(request: pytest.FixtureRequest, clock: ManualClock) -> Factory:
    url: str = request.getfixturevalue("ledger_postgres_url")
    make = _sql(url, clock, create_database=True)
    make().close()  # the table exists from here on
    engine = make_engine(url)
    try:
        with engine.begin() as conn:  # one database per run; a clean table per test
            conn.execute(ledger_table.delete())
    finally:
        engine.dispose()
    return make


#: backend id -> how to build ledgers on one shared backend, with the test's clock.
FACTORIES: dict[str, Callable[[pytest.FixtureRequest, ManualClock], Factory]] = {
    "memory": _memory,
    "sql-sqlite": _sql_sqlite,
    "sql-postgres": _sql_postgres,
}

PARAMS = [
    pytest.param("memory", id="memory"),
    pytest.param("sql-sqlite", id="sql-sqlite"),
    pytest.param("sql-postgres", id="sql-postgres", marks=pytest.mark.integration),
]


@pytest.fixture(scope="session")
def ledger_postgres_url(scratch_database: Callable[[str], str]) -> str:
    """A PostgreSQL database of its own for this test run, dropped afterwards."""
    return scratch_database("ledger")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def advance(clock: ManualClock) -> Callable[[float], None]:
    """Move every ledger's time forward by ``seconds``."""
    return clock.advance


@pytest.fixture(params=PARAMS)
def make_ledger(request: pytest.FixtureRequest, clock: ManualClock) -> Iterator[Factory]:
    """Build ledgers on one backend; each call is a new instance (a new "server")."""
    build = FACTORIES[request.param](request, clock)
    made: list[JobLedger] = []

    def make() -> JobLedger:
        ledger = build()
        made.append(ledger)
        return ledger

    yield make
    for ledger in made:
        ledger.close()


@pytest.fixture
def ledger(make_ledger: Factory) -> JobLedger:
    return make_ledger()


def _claim(ledger: JobLedger, owner: str, ttl: float = 30, slot: int = SLOT) -> Claim:
    claim = ledger.claim("job", slot, owner, ttl)
    assert claim is not None, f"{owner} could not claim"
    return claim


# --------------------------------------------------------------------------- claiming


def test_the_first_claim_gets_token_one_and_blocks_others(
    ledger: JobLedger, clock: ManualClock
) -> None:
    claim = ledger.claim("job", SLOT, "a", 30)
    assert claim == Claim("job", SLOT, "a", 1, clock.now() + 30)
    assert ledger.claim("job", SLOT, "b", 30) is None
    assert ledger.claim("job", SLOT, "a", 30) is None  # not re-entrant either
    assert not ledger.is_done("job", SLOT)


def test_slots_and_jobs_are_independent(ledger: JobLedger) -> None:
    _claim(ledger, "a")
    assert ledger.claim("job", SLOT + 60, "b", 30) is not None
    assert ledger.claim("other", SLOT, "b", 30) is not None


def test_a_completed_slot_is_done_and_never_claimed_again(
    ledger: JobLedger, advance: Callable[[float], None]
) -> None:
    claim = _claim(ledger, "a")
    ledger.complete(claim)
    assert ledger.is_done("job", SLOT)
    ledger.complete(claim)  # the holder completing twice is harmless
    for owner in ("a", "b"):
        assert ledger.claim("job", SLOT, owner, 30) is None
    advance(3600)
    assert ledger.claim("job", SLOT, "b", 30) is None
    assert ledger.is_done("job", SLOT)
    assert not ledger.is_done("job", SLOT + 60)
    assert not ledger.is_done("never", SLOT)


def test_an_expired_claim_is_taken_over_with_a_higher_token(
    ledger: JobLedger, advance: Callable[[float], None]
) -> None:
    stale = _claim(ledger, "a", ttl=10)
    advance(9)
    assert ledger.claim("job", SLOT, "b", 10) is None
    advance(2)
    second = _claim(ledger, "b", ttl=10)
    assert second.token == 2
    advance(11)
    third = _claim(ledger, "a", ttl=10)  # the first owner again, but a new claim
    assert third.token == 3
    for lost in (stale, second):
        with pytest.raises(LeaseLost):
            ledger.complete(lost)
        with pytest.raises(LeaseLost):
            ledger.renew(lost, 10)
        ledger.release(lost)  # ignored: not the holder
    assert ledger.claim("job", SLOT, "c", 10) is None  # third still holds it
    ledger.complete(third)
    assert ledger.is_done("job", SLOT)


def test_an_expired_claim_nobody_took_over_may_still_complete(
    ledger: JobLedger, advance: Callable[[float], None]
) -> None:
    claim = _claim(ledger, "a", ttl=10)
    advance(60)
    renewed = ledger.renew(claim, 10)  # holding is owner and token, not the clock
    assert renewed.token == claim.token
    ledger.complete(renewed)
    assert ledger.is_done("job", SLOT)


def test_renew_extends_the_claim(
    ledger: JobLedger, advance: Callable[[float], None], clock: ManualClock
) -> None:
    claim = _claim(ledger, "a", ttl=10)
    advance(8)
    renewed = ledger.renew(claim, 10)
    assert renewed == attrs.evolve(claim, expires_at=clock.now() + 10)
    advance(8)  # 16 s after the claim, 8 after the renewal
    assert ledger.claim("job", SLOT, "b", 10) is None
    ledger.complete(claim)  # the old Claim object still names the holder
    assert ledger.is_done("job", SLOT)
    with pytest.raises(LeaseLost):
        ledger.renew(claim, 10)  # a completed slot cannot be renewed


def test_release_frees_the_slot_at_once_and_is_idempotent(ledger: JobLedger) -> None:
    first = _claim(ledger, "a")
    ledger.release(first)
    ledger.release(first)
    with pytest.raises(LeaseLost):
        ledger.complete(first)
    with pytest.raises(LeaseLost):
        ledger.renew(first, 30)
    second = _claim(ledger, "b")
    assert second.token == 2
    ledger.release(first)  # the old holder cannot release the new claim
    assert ledger.claim("job", SLOT, "c", 30) is None
    ledger.complete(second)
    ledger.release(second)  # releasing a completed slot does not undo it
    assert ledger.is_done("job", SLOT)
    assert ledger.claim("job", SLOT, "c", 30) is None


def test_forged_claims_are_not_the_holder(ledger: JobLedger) -> None:
    real = _claim(ledger, "a")
    for forged in (
        attrs.evolve(real, token=2),
        attrs.evolve(real, owner="b"),
        attrs.evolve(real, slot=SLOT + 60),
        attrs.evolve(real, job="other"),
    ):
        with pytest.raises(LeaseLost):
            ledger.complete(forged)
        with pytest.raises(LeaseLost):
            ledger.renew(forged, 30)
        ledger.release(forged)
    assert ledger.claim("job", SLOT, "b", 30) is None
    assert not ledger.is_done("job", SLOT)


@pytest.mark.parametrize(
    ("job", "slot", "owner", "ttl"),
    [
        ("", SLOT, "a", 30),
        (None, SLOT, "a", 30),
        ("j" * 201, SLOT, "a", 30),
        ("job", SLOT, "", 30),
        ("job", SLOT, 5, 30),
        ("job", 1.5, "a", 30),
        ("job", "1", "a", 30),
        ("job", True, "a", 30),
        ("job", 2**63, "a", 30),
        ("job", SLOT, "a", 0),
        ("job", SLOT, "a", -1),
        ("job", SLOT, "a", float("nan")),
        ("job", SLOT, "a", float("inf")),
        ("job", SLOT, "a", "30"),
    ],
)
def test_bad_arguments_are_invalid_input(
    ledger: JobLedger, job: Any, slot: Any, owner: Any, ttl: Any
) -> None:
    with pytest.raises(InvalidInput):
        ledger.claim(job, slot, owner, ttl)
    assert ledger.claim("job", SLOT, "a", 30) is not None  # nothing was claimed


def test_renew_and_friends_check_their_arguments(ledger: JobLedger) -> None:
    claim = _claim(ledger, "a")
    with pytest.raises(InvalidInput):
        ledger.renew(claim, 0)
    for bad in (None, ("job", SLOT), "claim"):
        for operation in (ledger.complete, ledger.release):
            with pytest.raises(InvalidInput):
                operation(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        ledger.is_done("", SLOT)


# --------------------------------------------------------------------------- races


def _race(ledgers: list[JobLedger], threads: int, slots: list[int]) -> Counter[int]:
    """``threads`` threads (spread over ``ledgers``) all claim every slot at once."""
    won: Counter[int] = Counter()
    lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def run(index: int) -> None:
        ledger = ledgers[index % len(ledgers)]
        try:
            for slot in slots:
                barrier.wait()
                claim = ledger.claim("race", slot, f"runner-{index}", 30)
                if claim is not None:
                    with lock:
                        won[slot] += 1
                    ledger.complete(claim)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors, errors
    return won


def test_threads_racing_for_a_slot_claim_it_exactly_once(make_ledger: Factory) -> None:
    first = make_ledger()
    ledgers = [first, make_ledger()] if Capability.SHARED in first.capabilities else [first]
    slots = [SLOT + 60 * i for i in range(15)]
    won = _race(ledgers, threads=6, slots=slots)
    assert won == dict.fromkeys(slots, 1)
    assert all(first.is_done("race", slot) for slot in slots)


def test_racing_takeovers_of_an_expired_claim_are_exactly_once(
    make_ledger: Factory, advance: Callable[[float], None]
) -> None:
    first = make_ledger()
    ledgers = [first, make_ledger()] if Capability.SHARED in first.capabilities else [first]
    slots = [SLOT + 60 * i for i in range(10)]
    for slot in slots:  # a runner claimed each slot and died
        assert first.claim("race", slot, "dead", 5) is not None
    advance(6)
    won = _race(ledgers, threads=6, slots=slots)
    assert won == dict.fromkeys(slots, 1)


# --------------------------------------------------------------------------- capabilities


def test_shared_iff_declared(make_ledger: Factory) -> None:
    one, two = make_ledger(), make_ledger()
    claim = one.claim("job", SLOT, "a", 30)
    assert claim is not None
    if Capability.SHARED in one.capabilities:
        assert two.claim("job", SLOT, "b", 30) is None
        two.complete(claim)  # the claim is the same claim on every instance
        assert one.is_done("job", SLOT)
    else:
        assert two.claim("job", SLOT, "b", 30) is not None
        with pytest.raises(LeaseLost):
            two.complete(claim)


def test_durable_claims_survive_a_restart(make_ledger: Factory) -> None:
    ledger = make_ledger()
    if Capability.DURABLE not in ledger.capabilities:
        return  # not durable: no promise either way
    ledger.complete(_claim(ledger, "a"))
    ledger.close()
    assert make_ledger().is_done("job", SLOT)


def test_purge_iff_declared(ledger: JobLedger) -> None:
    if Capability.PURGE not in ledger.capabilities:
        with pytest.raises(UnsupportedOperation):
            ledger.purge(SLOT)
        return
    for slot in (SLOT - 120, SLOT - 60):
        ledger.complete(_claim(ledger, "a", slot=slot))
    _claim(ledger, "a", slot=SLOT - 60 - 1)  # held, not done: forgotten too
    kept = _claim(ledger, "a", slot=SLOT)
    assert ledger.purge(SLOT) == 3
    assert ledger.purge(SLOT) == 0
    assert not ledger.is_done("job", SLOT - 120)
    assert ledger.claim("job", SLOT - 120, "b", 30) is not None  # forgotten: claimable again
    assert ledger.claim("job", SLOT, "b", 30) is None
    ledger.complete(kept)
    with pytest.raises(InvalidInput):
        ledger.purge("yesterday")  # type: ignore[arg-type]


def test_ping_and_close_are_harmless(make_ledger: Factory) -> None:
    ledger = make_ledger()
    ledger.ping()
    ledger.close()
    ledger.close()


def test_create_schema_is_idempotent_and_the_ledger_works_after_it(make_ledger: Factory) -> None:
    """``create_schema()`` says whether the backend keeps tables, the same each time, and
    leaves a working ledger (``db init`` and the library entry call it on every start)."""
    ledger = make_ledger()
    first = ledger.create_schema()
    assert isinstance(first, bool)
    assert ledger.create_schema() is first
    ledger.ping()


def test_sql_options_are_checked(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="url"):
        SqlJobLedger(url="")
    with pytest.raises(ConfigError, match="url"):
        SqlJobLedger(url="::nonsense::")
    with pytest.raises(ConfigError, match="url") as caught:
        SqlJobLedger(url="postgresql://user:hunter2@host:port/db")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ConfigError, match="create_database"):
        SqlJobLedger(url=f"sqlite:///{tmp_path / 'l.db'}", create_database=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="clock"):
        SqlJobLedger(url=f"sqlite:///{tmp_path / 'l.db'}", clock=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="clock"):
        MemoryJobLedger(clock="now")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- model-based


@attrs.define
class _Record:
    owner: str | None
    token: int
    expires_at: float
    done: bool = False


def test_stateful_against_a_model(ledger: JobLedger, clock: ManualClock) -> None:
    """Random claim/renew/complete/release/advance sequences match a dict of records."""

    class LedgerMachine(RuleBasedStateMachine):
        claims = Bundle("claims")

        def __init__(self) -> None:
            super().__init__()
            # Examples share the ledger: a fresh prefix keeps their jobs apart.
            self.prefix = uuid.uuid4().hex[:8]
            self.model: dict[tuple[str, int], _Record] = {}

        def holds(self, claim: Claim) -> _Record | None:
            record = self.model.get((claim.job, claim.slot))
            if record and record.owner == claim.owner and record.token == claim.token:
                return record
            return None

        @rule(
            target=claims,
            job=st.sampled_from(["j1", "j2"]),
            slot=st.sampled_from([0, 60]),
            owner=st.sampled_from(["a", "b", "c"]),
            ttl=st.sampled_from([10.0, 30.0]),
        )
        def claim(self, job: str, slot: int, owner: str, ttl: float) -> Claim:
            name = self.prefix + job
            got = ledger.claim(name, slot, owner, ttl)
            record = self.model.get((name, slot))
            now = clock.now()
            if record is None:
                expected: int | None = 1
            elif record.done or (record.owner is not None and now < record.expires_at):
                expected = None
            else:
                expected = record.token + 1
            if expected is None:
                assert got is None
                return Claim(name, slot, owner, 0, 0.0)  # a claim that never held
            assert got == Claim(name, slot, owner, expected, now + ttl)
            self.model[(name, slot)] = _Record(owner, expected, now + ttl)
            return got

        @rule(target=claims, claim=claims, ttl=st.sampled_from([10.0, 30.0]))
        def renew(self, claim: Claim, ttl: float) -> Claim:
            record = self.holds(claim)
            if record is None or record.done:
                with pytest.raises(LeaseLost):
                    ledger.renew(claim, ttl)
                return claim
            renewed = ledger.renew(claim, ttl)
            record.expires_at = clock.now() + ttl
            assert renewed == attrs.evolve(claim, expires_at=record.expires_at)
            return renewed

        @rule(claim=claims)
        def complete(self, claim: Claim) -> None:
            record = self.holds(claim)
            if record is None:
                with pytest.raises(LeaseLost):
                    ledger.complete(claim)
                return
            ledger.complete(claim)
            record.done = True

        @rule(claim=claims)
        def release(self, claim: Claim) -> None:
            ledger.release(claim)
            record = self.holds(claim)
            if record is not None and not record.done:
                record.owner = None

        @rule(job=st.sampled_from(["j1", "j2"]), slot=st.sampled_from([0, 60]))
        def is_done(self, job: str, slot: int) -> None:
            record = self.model.get((self.prefix + job, slot))
            assert ledger.is_done(self.prefix + job, slot) == bool(record and record.done)

        @rule(seconds=st.sampled_from([1.0, 9.0, 31.0]))
        def advance(self, seconds: float) -> None:
            clock.advance(seconds)

    run_state_machine_as_test(
        LedgerMachine, settings=settings(max_examples=25, stateful_step_count=30, deadline=None)
    )
