"""Several scheduler processes over one PostgreSQL ledger: each slot runs exactly once."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from adapters.ledger.sql import SqlJobLedger
from adapters.sql.engine import make_engine

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).with_name("_scheduler_proc.py")
sys.path.insert(0, str(SCRIPT.parent))
from _scheduler_proc import RUNS  # noqa: E402


@pytest.fixture
def ledger_url(scratch_database: Callable[[str], str]) -> str:
    url = scratch_database("cron")
    engine = make_engine(url, create_database=True)
    ledger = SqlJobLedger(url=url)
    ledger.create_schema()
    ledger.close()
    RUNS.metadata.create_all(engine)
    engine.dispose()
    return url


def spawn(url: str, owner: str, seconds: float, job: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), url, owner, str(seconds), job, *extra],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def runs(url: str) -> list[sa.Row[tuple[str, int, str, int, str]]]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = list(conn.execute(sa.select(RUNS)))
    engine.dispose()
    return rows  # type: ignore[return-value]


def test_four_schedulers_run_each_slot_exactly_once(ledger_url: str) -> None:
    procs = [spawn(ledger_url, f"runner-{i}", 6, "tick") for i in range(4)]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    rows = [row for row in runs(ledger_url) if row.job == "tick"]
    per_slot = collections.Counter(row.slot for row in rows)
    assert per_slot, "no slot ran at all"
    assert max(per_slot.values()) == 1, f"slots run twice: {per_slot.most_common(3)}"
    slots = sorted(per_slot)
    # Every second between the first and last slot ran: no slot was lost either.
    assert slots == list(range(slots[0], slots[-1] + 1))
    assert len(slots) >= 4
    assert len({row.owner for row in rows}) > 1, "one runner did all the work"


def test_a_killed_claim_holder_is_taken_over_once(ledger_url: str) -> None:
    victim = spawn(ledger_url, "victim", 60, "slow", "stall")
    deadline = time.monotonic() + 30
    while not any(row.state == "started" for row in runs(ledger_url)):
        assert time.monotonic() < deadline, "the victim never started the job"
        assert victim.poll() is None
        time.sleep(0.1)
    survivors = [spawn(ledger_url, f"survivor-{i}", 8, "slow") for i in range(3)]
    time.sleep(0.5)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    for proc in survivors:
        assert proc.wait(timeout=60) == 0
    rows = runs(ledger_url)
    done = [row for row in rows if row.state == "done"]
    assert len(done) == 1, f"expected one completion, got {done}"
    assert done[0].owner.startswith("survivor-")
    assert done[0].token == 2  # the victim held token 1; the takeover fenced it off
    ledger = SqlJobLedger(url=ledger_url)
    try:
        assert ledger.is_done("slow", done[0].slot)
    finally:
        ledger.close()
