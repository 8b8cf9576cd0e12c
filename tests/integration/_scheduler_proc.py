"""A scheduler process for the fault tests: runs cron jobs over a shared SQL ledger.

Usage: python _scheduler_proc.py LEDGER_URL OWNER SECONDS JOB [stall]

Job "tick" runs every second and records (slot, owner, token) in the ``runs`` table of the
ledger's database. Job "slow" runs once a day; with ``stall`` this process records that it
started the job and then hangs, so the test can kill it while it holds the claim.
"""

from __future__ import annotations

import sys
import threading
import time

import sqlalchemy as sa

from adapters.ledger.sql import SqlJobLedger
from adapters.sql.engine import make_engine
from scalecore.cron import CronJob, JobContext, Scheduler

RUNS = sa.Table(
    "runs",
    sa.MetaData(),
    sa.Column("job", sa.String(40)),
    sa.Column("slot", sa.BigInteger),
    sa.Column("owner", sa.String(40)),
    sa.Column("token", sa.Integer),
    sa.Column("state", sa.String(10)),
)


def main(url: str, owner: str, seconds: float, job_name: str, stall: bool) -> None:
    engine = make_engine(url)
    ledger = SqlJobLedger(url=url)

    def record(context: JobContext, state: str) -> None:
        with engine.begin() as conn:
            conn.execute(
                RUNS.insert().values(
                    job=context.job.name,
                    slot=context.slot,
                    owner=owner,
                    token=context.token,
                    state=state,
                )
            )

    def tick(context: JobContext) -> None:
        record(context, "done")

    def slow(context: JobContext) -> None:
        record(context, "started")
        if stall:
            time.sleep(3600)  # killed here, holding the claim
        record(context, "done")

    jobs = {
        "tick": CronJob(name="tick", schedule="every 1s", function=tick, claim_ttl=5),
        "slow": CronJob(name="slow", schedule="every 1d", function=slow, claim_ttl=2),
    }
    scheduler = Scheduler(ledger, [jobs[job_name]], owner=owner)
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    scheduler.run_forever(stop, poll_interval=0.05)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], "stall" in sys.argv[5:])
