"""Cron slots and the fleet scheduler: each slot runs once, dead runners are taken over."""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.ledger.memory import MemoryJobLedger
from scalecore.clock import ManualClock
from scalecore.cron import (
    CronJob,
    CronSchedule,
    IntervalSchedule,
    JobContext,
    Outcome,
    Scheduler,
    next_slot_after,
    parse_schedule,
    slot_for,
)
from scalecore.errors import BackendUnavailable, InvalidInput, LeaseLost

# 2023-11-14T22:13:20Z, a Tuesday.
T0 = 1_700_000_000


def utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("spec", "seconds"),
    [
        ("every 30s", 30),
        ("every 5m", 300),
        ("every 1h", 3600),
        ("every 2d", 172800),
        ("EVERY 5 M", 300),
        ("  every   10s ", 10),
    ],
)
def test_every_parses_to_an_interval(spec: str, seconds: int) -> None:
    schedule = parse_schedule(spec)
    assert isinstance(schedule, IntervalSchedule)
    assert schedule.seconds == seconds
    assert str(schedule) == spec


def test_cron_fields_lists_ranges_steps_and_names() -> None:
    schedule = parse_schedule("5/20,1 9-17/4 1,15 jan-mar,DEC mon-fri,7")
    assert isinstance(schedule, CronSchedule)
    assert schedule.minutes == (1, 5, 25, 45)
    assert schedule.hours == {9, 13, 17}
    assert schedule.days == {1, 15}
    assert schedule.months == {1, 2, 3, 12}
    assert schedule.weekdays == {0, 1, 2, 3, 4, 5}  # 7 is Sunday, stored as 0


def test_macros_expand() -> None:
    assert parse_schedule("@hourly").slot_for(utc("2024-05-05T10:59:59")) == utc("2024-05-05T10:00")
    assert parse_schedule("@daily").slot_for(utc("2024-05-05T10:59")) == utc("2024-05-05T00:00")
    assert parse_schedule("@monthly").slot_for(utc("2024-05-05T10:59")) == utc("2024-05-01T00:00")
    assert parse_schedule("@weekly").slot_for(utc("2024-05-08T10:00")) == utc("2024-05-05T00:00")
    assert parse_schedule("@yearly").slot_for(utc("2024-05-05T10:59")) == utc("2024-01-01T00:00")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "must not be empty"),
        ("every", "every <number><unit>"),
        ("every 5", "every <number><unit>"),
        ("every 5x", "every <number><unit>"),
        ("every -5m", "every <number><unit>"),
        ("every 0s", "must be positive"),
        ("* * * *", "5 fields"),
        ("* * * * * *", "5 fields"),
        ("60 * * * *", "minute field '60': 60 is outside 0-59"),
        ("* 24 * * *", "hour field"),
        ("* * 0 * *", "day-of-month field '0'"),
        ("* * * 13 *", "month field"),
        ("* * * * 8", "day-of-week field"),
        ("*/0 * * * *", "step '0' must be a positive number"),
        ("*/x * * * *", "step 'x'"),
        ("30-10 * * * *", "runs backwards"),
        ("1,,2 * * * *", "empty list item"),
        ("* * * foo *", "'foo' is not a number 1-12 or a name"),
        ("* * * * funday", "'funday' is not a number 0-7"),
        ("0 0 30 feb *", "no chosen month has those days"),
        ("0 0 31 4,6,9,11 *", "no chosen month has those days"),
        ("@reboot", "unknown macro"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(InvalidInput, match="schedule") as caught:
        parse_schedule(spec)
    assert message in str(caught.value)


def test_a_non_string_spec_is_refused() -> None:
    with pytest.raises(InvalidInput, match="string"):
        parse_schedule(5)  # type: ignore[arg-type]


def test_day_fields_or_when_both_restricted_and_when_one_is_star() -> None:
    # Both restricted: the 1st of the month OR any Sunday (Vixie cron).
    either = parse_schedule("0 0 1 * sun")
    assert either.next_slot_after(utc("2024-05-01T00:00")) == utc("2024-05-05T00:00")  # Sunday
    assert either.next_slot_after(utc("2024-05-26T00:00")) == utc("2024-06-01T00:00")  # the 1st
    # Day-of-week starts with '*': both must match.
    both = parse_schedule("0 0 1 * */2")  # the 1st, on Sun/Tue/Thu/Sat
    slot = both.next_slot_after(utc("2024-05-01T00:00"))
    day = datetime.fromtimestamp(slot, UTC)
    assert day.day == 1
    assert (day.weekday() + 1) % 7 in {0, 2, 4, 6}


def test_known_slots() -> None:
    assert slot_for("every 5m", T0) == utc("2023-11-14T22:10")
    assert next_slot_after("every 5m", T0) == utc("2023-11-14T22:15")
    assert slot_for("*/5 * * * *", T0) == utc("2023-11-14T22:10")
    assert slot_for("30 9 * * mon-fri", T0) == utc("2023-11-14T09:30")
    assert next_slot_after("30 9 * * mon-fri", utc("2023-11-17T10:00")) == utc("2023-11-20T09:30")
    assert slot_for("0 0 29 2 *", T0) == utc("2020-02-29T00:00")
    assert next_slot_after("0 0 29 2 *", T0) == utc("2024-02-29T00:00")
    # A slot boundary belongs to the slot it starts.
    assert slot_for("every 1h", utc("2024-01-01T10:00")) == utc("2024-01-01T10:00")
    assert next_slot_after("every 1h", utc("2024-01-01T10:00")) == utc("2024-01-01T11:00")
    # Before the epoch too.
    assert slot_for("every 1h", -1) == -3600
    assert slot_for("@daily", -1) == -86400


# --------------------------------------------------------------------------- slot properties

FIELD_CHOICES = (
    ["*", "*/5", "0", "0,30", "10-20/5", "59"],
    ["*", "9-17", "*/6", "0", "23"],
    ["*", "1", "1,15", "*/10", "31", "29"],
    ["*", "1-6", "feb", "*/3", "dec"],
    ["*", "mon-fri", "sun", "6", "*/3"],
)


@st.composite
def schedules(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return f"every {draw(st.integers(1, 3 * 86400))}s"
    while True:
        fields = [draw(st.sampled_from(choices)) for choices in FIELD_CHOICES]
        spec = " ".join(fields)
        try:
            parse_schedule(spec)
        except InvalidInput:  # e.g. the 31st of February only
            continue
        return spec


def _matches(schedule: CronSchedule, epoch: int) -> bool:
    dt = datetime.fromtimestamp(epoch, UTC)
    day = dt.day in schedule.days
    weekday = (dt.weekday() + 1) % 7 in schedule.weekdays
    day_ok = (
        (day or weekday)
        if schedule.day_restricted and schedule.weekday_restricted
        else (day and weekday)
    )
    return (
        epoch % 60 == 0
        and dt.minute in schedule.minutes
        and dt.hour in schedule.hours
        and dt.month in schedule.months
        and day_ok
    )


@settings(max_examples=300, deadline=None)
@given(spec=schedules(), now=st.floats(0, 4_102_444_800, allow_nan=False))
def test_slot_contains_now_and_is_stable_within_the_slot(spec: str, now: float) -> None:
    schedule = parse_schedule(spec)
    slot = slot_for(schedule, now)
    following = next_slot_after(schedule, now)
    assert slot <= now < following
    # Every instant of the slot maps back to it, and the next slot follows it directly.
    assert slot_for(schedule, slot) == slot
    assert slot_for(schedule, following - 0.001) == slot
    assert slot_for(schedule, following) == following
    assert next_slot_after(schedule, slot) == following
    if isinstance(schedule, CronSchedule):
        assert _matches(schedule, slot)
        assert _matches(schedule, following)
        if following - slot <= 2 * 86400:  # cheap enough to check every minute between
            assert not any(_matches(schedule, t) for t in range(slot + 60, following, 60))
    else:
        assert isinstance(schedule, IntervalSchedule)
        assert slot % schedule.seconds == 0
        assert following - slot == schedule.seconds


# --------------------------------------------------------------------------- the scheduler


def _recorder(runs: Counter[tuple[str, int]], name: str) -> CronJob:
    def job(context: JobContext) -> None:
        runs[(context.job.name, context.slot)] += 1

    return CronJob(name=name, schedule=SCHEDULES[name], function=job, claim_ttl=20)


SCHEDULES = {"fast": "every 30s", "cron": "*/2 * * * *", "slow": "every 1h"}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(st.floats(0.5, 45), min_size=10, max_size=80),
    seed=st.integers(0, 2**32 - 1),
)
def test_four_schedulers_run_each_job_exactly_once_per_slot(steps: list[float], seed: int) -> None:
    clock = ManualClock(start=T0)
    ledger = MemoryJobLedger(clock=clock)
    runs: Counter[tuple[str, int]] = Counter()
    jobs = [_recorder(runs, name) for name in SCHEDULES]
    schedulers = [Scheduler(ledger, jobs, owner=f"server-{i}", clock=clock) for i in range(4)]
    order = random.Random(seed)
    seen: set[tuple[str, int]] = set()
    for step in steps:
        clock.advance(step)
        for name, spec in SCHEDULES.items():
            seen.add((name, slot_for(spec, clock.now())))
        for scheduler in order.sample(schedulers, k=len(schedulers)):
            scheduler.run_due()
    assert set(runs) == seen
    assert all(count == 1 for count in runs.values()), runs
    for name, slot in seen:
        assert ledger.is_done(name, slot)


def test_four_schedulers_in_threads_run_each_slot_once() -> None:
    clock = ManualClock(start=T0)
    ledger = MemoryJobLedger(clock=clock)
    runs: Counter[tuple[str, int]] = Counter()
    lock = threading.Lock()

    def job(context: JobContext) -> None:
        with lock:
            runs[(context.job.name, context.slot)] += 1

    jobs = [CronJob(name=name, schedule=spec, function=job) for name, spec in SCHEDULES.items()]
    schedulers = [Scheduler(ledger, jobs, owner=f"server-{i}", clock=clock) for i in range(4)]
    rounds = 40
    start, done = threading.Barrier(5), threading.Barrier(5)

    def serve(scheduler: Scheduler) -> None:
        for _ in range(rounds):
            start.wait()
            scheduler.run_due()
            done.wait()

    threads = [threading.Thread(target=serve, args=(s,)) for s in schedulers]
    for thread in threads:
        thread.start()
    expected = set()
    for _ in range(rounds):
        clock.advance(31)
        expected |= {(name, slot_for(spec, clock.now())) for name, spec in SCHEDULES.items()}
        start.wait()
        done.wait()
    for thread in threads:
        thread.join()
    assert set(runs) == expected
    assert set(runs.values()) == {1}


def test_a_dead_runners_slot_is_taken_over_after_its_ttl_with_a_higher_token() -> None:
    clock = ManualClock(start=T0)
    ledger = MemoryJobLedger(clock=clock)
    tokens: list[int] = []
    job = CronJob(
        name="report", schedule="every 1h", function=lambda c: tokens.append(c.token), claim_ttl=60
    )
    scheduler = Scheduler(ledger, [job], owner="alive", clock=clock)
    slot = slot_for(job.schedule, clock.now())
    # A runner claims the slot and dies before completing it.
    stale = ledger.claim("report", slot, "dead", 60)
    assert stale is not None
    assert stale.token == 1

    assert scheduler.run_due().outcome_of("report") is Outcome.BUSY
    clock.advance(59)
    assert scheduler.run_due().outcome_of("report") is Outcome.BUSY
    clock.advance(2)
    report = scheduler.run_due()
    assert report.outcome_of("report") is Outcome.RAN
    assert report.runs[0].token == 2
    assert tokens == [2]
    assert ledger.is_done("report", slot)
    # The stale holder comes back: its work must not count.
    with pytest.raises(LeaseLost):
        ledger.complete(stale)
    with pytest.raises(LeaseLost):
        ledger.renew(stale, 60)


def test_a_job_outliving_its_claim_loses_it_and_the_successor_runs_with_a_higher_token() -> None:
    clock = ManualClock(start=T0)
    ledger = MemoryJobLedger(clock=clock)
    seen: list[tuple[str, int]] = []
    slow_runner: Scheduler
    other: Scheduler

    def work(context: JobContext) -> None:
        seen.append((context.job.name, context.token))
        if context.token == 1:
            clock.advance(31)  # longer than claim_ttl: another server takes over meanwhile
            assert other.run_due().outcome_of("sync") is Outcome.RAN

    job = CronJob(name="sync", schedule="every 1h", function=work, claim_ttl=30)
    slow_runner = Scheduler(ledger, [job], owner="slow", clock=clock)
    other = Scheduler(ledger, [job], owner="other", clock=clock)
    report = slow_runner.run_due()
    assert report.outcome_of("sync") is Outcome.LEASE_LOST
    assert report.runs[0].token == 1
    assert seen == [("sync", 1), ("sync", 2)]
    assert ledger.is_done("sync", report.runs[0].slot)


def test_renewing_from_the_job_keeps_the_claim() -> None:
    clock = ManualClock(start=T0)
    ledger = MemoryJobLedger(clock=clock)
    other: Scheduler

    def long_work(context: JobContext) -> None:
        for _ in range(3):
            clock.advance(20)
            context.renew()
            assert other.run_due().outcome_of("long") is Outcome.BUSY

    job = CronJob(name="long", schedule="every 1h", function=long_work, claim_ttl=30)
    runner = Scheduler(ledger, [job], owner="runner", clock=clock)
    other = Scheduler(ledger, [job], owner="other", clock=clock)
    assert runner.run_due().outcome_of("long") is Outcome.RAN
    assert other.run_due().outcome_of("long") is Outcome.DONE


def test_a_job_whose_renew_fails_reports_the_lost_lease() -> None:
    clock = ManualClock(start=T0)
    ledger = MemoryJobLedger(clock=clock)
    other: Scheduler

    def work(context: JobContext) -> None:
        clock.advance(31)
        if context.token == 1:
            assert other.run_due().outcome_of("sync") is Outcome.RAN
            context.renew()  # raises LeaseLost: stop working

    job = CronJob(name="sync", schedule="every 1h", function=work, claim_ttl=30)
    runner = Scheduler(ledger, [job], owner="runner", clock=clock)
    other = Scheduler(ledger, [job], owner="other", clock=clock)
    report = runner.run_due()
    assert report.outcome_of("sync") is Outcome.LEASE_LOST
    assert report.runs[0].error is not None
    assert report.runs[0].error.startswith("LeaseLost")
    assert ledger.is_done("sync", report.runs[0].slot)  # the release did not undo it


def test_a_failed_job_is_released_and_retried_by_the_next_poll() -> None:
    clock = ManualClock(start=T0)
    ledger = MemoryJobLedger(clock=clock)
    attempts: list[int] = []

    def flaky(context: JobContext) -> None:
        attempts.append(context.token)
        if len(attempts) == 1:
            raise RuntimeError("boom")

    job = CronJob(name="flaky", schedule="every 5m", function=flaky)
    first = Scheduler(ledger, [job], owner="a", clock=clock)
    second = Scheduler(ledger, [job], owner="b", clock=clock)
    failed = first.run_due()
    assert failed.outcome_of("flaky") is Outcome.FAILED
    assert failed.runs[0].error == "RuntimeError: boom"
    assert second.run_due().outcome_of("flaky") is Outcome.RAN  # no TTL wait after a release
    assert attempts == [1, 2]
    assert first.run_due().outcome_of("flaky") is Outcome.DONE


def test_only_the_current_slot_runs_missed_slots_are_skipped() -> None:
    clock = ManualClock(start=T0)
    ledger = MemoryJobLedger(clock=clock)
    slots: list[int] = []
    job = CronJob(name="tick", schedule="every 1m", function=lambda c: slots.append(c.slot))
    scheduler = Scheduler(ledger, [job], clock=clock)
    first = slot_for("every 1m", clock.now())
    scheduler.run_due()
    clock.advance(60 * 5)
    scheduler.run_due()
    scheduler.run_due()
    assert slots == [first, first + 300]
    assert not ledger.is_done("tick", first + 60)


def test_run_due_accepts_an_explicit_now_and_reports_every_job() -> None:
    clock = ManualClock(start=T0)
    runs: Counter[tuple[str, int]] = Counter()
    jobs = [_recorder(runs, name) for name in SCHEDULES]
    scheduler = Scheduler(MemoryJobLedger(clock=clock), jobs, clock=clock)
    report = scheduler.run_due(now=T0 + 3600)
    assert report.now == T0 + 3600
    assert sorted(report.ran) == sorted(SCHEDULES)
    assert {run.slot for run in report.runs} == {
        slot_for(spec, T0 + 3600) for spec in SCHEDULES.values()
    }
    assert {run.outcome for run in scheduler.run_due(now=T0 + 3600).runs} == {Outcome.DONE}


class _BrokenLedger(MemoryJobLedger):
    """A ledger whose database is down for one job."""

    def is_done(self, job: str, slot: int) -> bool:
        if job == "victim":
            raise BackendUnavailable("database is down")
        return super().is_done(job, slot)


def test_a_ledger_failure_is_reported_and_other_jobs_still_run() -> None:
    clock = ManualClock(start=T0)
    ran: list[str] = []
    jobs = [
        CronJob(name=name, schedule="every 1m", function=lambda c: ran.append(c.job.name))
        for name in ("victim", "survivor")
    ]
    report = Scheduler(_BrokenLedger(clock=clock), jobs, clock=clock).run_due()
    assert report.outcome_of("victim") is Outcome.ERROR
    assert report.outcome_of("survivor") is Outcome.RAN
    assert ran == ["survivor"]


def test_run_forever_polls_until_stopped() -> None:
    clock = ManualClock(start=T0)
    stop = threading.Event()
    slots: list[int] = []

    def tick(context: JobContext) -> None:
        slots.append(context.slot)
        clock.advance(1)  # the next pass sees the next slot
        if len(slots) == 3:
            stop.set()

    job = CronJob(name="tick", schedule="every 1s", function=tick)
    scheduler = Scheduler(MemoryJobLedger(clock=clock), [job], clock=clock)
    scheduler.run_forever(stop, poll_interval=0.01)
    assert slots == [T0, T0 + 1, T0 + 2]
    # Already stopped: returns at once, runs nothing.
    scheduler.run_forever(stop, poll_interval=0.01)
    assert len(slots) == 3
    with pytest.raises(InvalidInput, match="poll_interval"):
        scheduler.run_forever(threading.Event(), poll_interval=0)


def test_cron_job_and_scheduler_validate_their_arguments() -> None:
    def noop(context: JobContext) -> None:
        return None

    job = CronJob(name="ok", schedule="every 5m", function=noop)
    assert isinstance(job.schedule, IntervalSchedule)
    assert job.claim_ttl == 300.0
    with pytest.raises(InvalidInput, match="non-empty name"):
        CronJob(name=" ", schedule="every 5m", function=noop)
    with pytest.raises(InvalidInput, match="printable"):
        CronJob(name="a\nb", schedule="every 5m", function=noop)
    with pytest.raises(InvalidInput, match="schedule"):
        CronJob(name="x", schedule="every day", function=noop)
    for bad_ttl in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(InvalidInput, match="claim_ttl"):
            CronJob(name="x", schedule="every 5m", function=noop, claim_ttl=bad_ttl)
    with pytest.raises(InvalidInput, match="unique"):
        Scheduler(MemoryJobLedger(), [job, job])
    with pytest.raises(InvalidInput, match="owner"):
        Scheduler(MemoryJobLedger(), [job], owner="")
    assert Scheduler(MemoryJobLedger(), [job]).owner  # a default unique to the process


def test_stats_count_runs_and_the_slots_that_ended_undone() -> None:
    clock = ManualClock(start=utc("2024-01-01T00:00:10"))
    ledger = MemoryJobLedger(clock=clock)
    healthy = {"ok": True}

    def job(_context: JobContext) -> None:
        if not healthy["ok"]:
            raise RuntimeError("down")

    scheduler = Scheduler(
        ledger, [CronJob(name="tick", schedule="every 1m", function=job)], clock=clock
    )
    scheduler.run_due()  # 00:00 runs
    clock.advance(60)
    healthy["ok"] = False
    scheduler.run_due()  # 00:01 fails (and is retried at every poll of that minute)
    scheduler.run_due()
    assert scheduler.stats.missed() == {}
    clock.advance(60)
    scheduler.run_due()  # 00:02: 00:01 ended undone
    assert scheduler.stats.missed() == {"tick": 1}
    clock.advance(180)
    healthy["ok"] = True
    scheduler.run_due()  # 00:05: 00:02 ended undone, 00:03 and 00:04 were never looked at
    assert scheduler.stats.missed() == {"tick": 4}
    assert scheduler.stats.runs() == {("tick", "ran"): 2, ("tick", "failed"): 3}
    clock.advance(60)
    scheduler.run_due()  # 00:06: 00:05 ran
    assert scheduler.stats.missed() == {"tick": 4}


def test_a_slot_another_scheduler_completed_is_not_missed() -> None:
    clock = ManualClock(start=utc("2024-01-01T00:00:10"))
    ledger = MemoryJobLedger(clock=clock)
    jobs = [CronJob(name="tick", schedule="every 1m", function=lambda _c: None)]
    first = Scheduler(ledger, jobs, owner="a", clock=clock)
    second = Scheduler(ledger, jobs, owner="b", clock=clock)
    for _ in range(3):
        second.run_due()  # sees the slot claimed or done by the first one
        first.run_due()
        clock.advance(60)
    first.run_due()
    second.run_due()
    assert first.stats.missed() == second.stats.missed() == {}
    assert sum(s.stats.runs().get(("tick", "ran"), 0) for s in (first, second)) == 4
