"""Cron for a fleet: schedules, time slots, and a scheduler every server can run at once.

Every server runs a :class:`Scheduler` over the same jobs and the same
:class:`~scalecore.ports.ledger.JobLedger`. A schedule cuts time into *slots*; a slot is
named by its start in epoch seconds (UTC). Before running job ``J`` for slot ``T`` a
scheduler claims ``(J, T)`` in the ledger, and only the claimer runs it, so each slot runs
once however many servers poll. A runner that dies holding a claim loses it when the claim's
TTL runs out; the next poll of any server takes the slot over with a higher fencing token.

Schedules are written one of two ways:

``every <n><unit>``
    Fixed intervals aligned to the Unix epoch: ``every 30s``, ``every 5m``, ``every 1h``,
    ``every 1d`` (units ``s``, ``m``, ``h``, ``d``). ``every 5m`` has slots at :00, :05, ...
    of every hour, on every server, whatever time the servers started.
A five-field cron expression, in UTC
    ``minute hour day-of-month month day-of-week`` with ``*``, lists (``1,15``), ranges
    (``9-17``), steps (``*/5``, ``10-50/20``, ``5/15``) and names (``jan``-``dec``,
    ``sun``-``sat``; Sunday is 0 or 7), or one of ``@hourly``, ``@daily``, ``@midnight``,
    ``@weekly``, ``@monthly``, ``@yearly``, ``@annually``. Slots are whole minutes. As in
    Vixie cron, when both day fields are restricted (neither starts with ``*``) a day
    matches if *either* matches.

Only the current slot is ever run: a slot that passed while no scheduler was polling (every
server down, a poll longer than the slot) is skipped, not caught up.
"""

from __future__ import annotations

import abc
import enum
import logging
import math
import os
import platform
import re
import secrets
import threading
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import attrs

from scalecore.clock import Clock, SystemClock
from scalecore.errors import InvalidInput, LeaseLost, ScalecoreError
from scalecore.ports.ledger import Claim, JobLedger
from scalecore.validate import check_seconds

__all__ = [
    "CronJob",
    "CronSchedule",
    "CronStats",
    "IntervalSchedule",
    "JobContext",
    "JobRun",
    "Outcome",
    "RunReport",
    "Schedule",
    "Scheduler",
    "next_slot_after",
    "parse_schedule",
    "slot_for",
]

logger = logging.getLogger(__name__)

#: The most slots counted as missed in one step, should the clock jump far ahead.
_MAX_MISSED_STEP = 10_000

#: Longest job name; the SQL ledger stores names in a column of this size.
MAX_JOB_NAME = 200

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE = timedelta(minutes=1)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EVERY = re.compile(r"every\s+(\d+)\s*([smhd])", re.IGNORECASE)
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
#: Longest month in a leap year, by month number; the satisfiability check uses it.
_MONTH_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


# --------------------------------------------------------------------------- schedules


class Schedule(abc.ABC):
    """A way of cutting time into slots, each named by its start (integer epoch seconds).

    Build one with :func:`parse_schedule`. Promises, for every time ``t``:
    ``slot_for(t) <= t < next_slot_after(t)``, and every ``t'`` in
    ``[slot_for(t), next_slot_after(t))`` has the same slot.
    """

    spec: str

    @abc.abstractmethod
    def slot_for(self, now: float) -> int:
        """Return the start of the most recent slot at or before ``now``."""

    @abc.abstractmethod
    def next_slot_after(self, when: float) -> int:
        """Return the start of the first slot strictly after ``when``."""

    def __str__(self) -> str:
        return self.spec


@attrs.frozen
class IntervalSchedule(Schedule):
    """Slots of ``seconds`` length aligned to the Unix epoch (``every 5m``)."""

    spec: str
    seconds: int

    def slot_for(self, now: float) -> int:
        whole = math.floor(now)
        return whole - whole % self.seconds

    def next_slot_after(self, when: float) -> int:
        return self.slot_for(when) + self.seconds


@attrs.frozen
class CronSchedule(Schedule):
    """Whole-minute slots matching a five-field cron expression, in UTC."""

    spec: str
    minutes: tuple[int, ...]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # cron numbering: 0 = Sunday
    day_restricted: bool  # the day-of-month field does not start with '*'
    weekday_restricted: bool  # the day-of-week field does not start with '*'

    def slot_for(self, now: float) -> int:
        dt = _to_datetime(math.floor(now) // 60 * 60)
        # Each step moves to the last minute of the previous month, day or hour that could
        # still match, so the walk is bounded by months and days, not by minutes.
        while True:
            if dt.month not in self.months:
                dt = dt.replace(day=1, hour=0, minute=0) - _MINUTE
            elif not self._day_matches(dt):
                dt = dt.replace(hour=0, minute=0) - _MINUTE
            elif dt.hour not in self.hours:
                dt = dt.replace(minute=0) - _MINUTE
            else:
                index = bisect_right(self.minutes, dt.minute)
                if index == 0:
                    dt = dt.replace(minute=0) - _MINUTE
                else:
                    return _to_epoch(dt.replace(minute=self.minutes[index - 1]))

    def next_slot_after(self, when: float) -> int:
        dt = _to_datetime(math.floor(when) // 60 * 60) + _MINUTE
        while True:
            if dt.month not in self.months:
                year, month = (dt.year + 1, 1) if dt.month == 12 else (dt.year, dt.month + 1)
                dt = dt.replace(year=year, month=month, day=1, hour=0, minute=0)
            elif not self._day_matches(dt):
                dt = dt.replace(hour=0, minute=0) + timedelta(days=1)
            elif dt.hour not in self.hours:
                dt = dt.replace(minute=0) + timedelta(hours=1)
            else:
                index = bisect_left(self.minutes, dt.minute)
                if index == len(self.minutes):
                    dt = dt.replace(minute=0) + timedelta(hours=1)
                else:
                    return _to_epoch(dt.replace(minute=self.minutes[index]))

    def _day_matches(self, dt: datetime) -> bool:
        day = dt.day in self.days
        weekday = (dt.weekday() + 1) % 7 in self.weekdays  # Python: Monday = 0
        if self.day_restricted and self.weekday_restricted:
            return day or weekday
        return day and weekday


def _to_datetime(epoch: int) -> datetime:
    # Arithmetic from the epoch works for negative timestamps on every platform.
    return _EPOCH + timedelta(seconds=epoch)


def _to_epoch(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(seconds=1)


def parse_schedule(spec: Schedule | str) -> Schedule:
    """Parse ``every <n><s|m|h|d>`` or a cron expression; a :class:`Schedule` passes through.

    Raises ``InvalidInput`` naming the spec and what is wrong with it.
    """
    if isinstance(spec, Schedule):
        return spec
    if not isinstance(spec, str):
        raise InvalidInput(f"a schedule is a string, not {type(spec).__name__}")
    text = " ".join(spec.split())
    if not text:
        raise InvalidInput("a schedule must not be empty")
    if text.lower().startswith("every"):
        match = _EVERY.fullmatch(text)
        if not match:
            raise InvalidInput(
                f"bad schedule {spec!r}: write 'every <number><unit>' with unit s, m, h or d, "
                "like 'every 5m'"
            )
        seconds = int(match.group(1)) * _UNITS[match.group(2).lower()]
        if seconds <= 0:
            raise InvalidInput(f"bad schedule {spec!r}: the interval must be positive")
        return IntervalSchedule(spec=spec, seconds=seconds)
    if text.startswith("@"):
        expanded = _MACROS.get(text.lower())
        if expanded is None:
            raise InvalidInput(
                f"bad schedule {spec!r}: unknown macro; known: {', '.join(sorted(_MACROS))}"
            )
        return _parse_cron(spec, expanded)
    return _parse_cron(spec, text)


def _parse_cron(spec: str, text: str) -> CronSchedule:
    fields = text.split(" ")
    if len(fields) != 5:
        raise InvalidInput(
            f"bad schedule {spec!r}: a cron expression has 5 fields "
            f"(minute hour day-of-month month day-of-week), not {len(fields)}; "
            "or write 'every 5m'"
        )
    minute, hour, day, month, weekday = fields
    minutes = _parse_field(spec, minute, "minute", 0, 59, ())
    hours = _parse_field(spec, hour, "hour", 0, 23, ())
    days = _parse_field(spec, day, "day-of-month", 1, 31, ())
    months = _parse_field(spec, month, "month", 1, 12, _MONTH_NAMES)
    weekdays = frozenset(
        d % 7 for d in _parse_field(spec, weekday, "day-of-week", 0, 7, _DAY_NAMES)
    )
    day_restricted = not day.startswith("*")
    weekday_restricted = not weekday.startswith("*")
    # When only day-of-month decides, it must fall inside at least one chosen month.
    if (day_restricted and not weekday_restricted) and not any(
        d <= _MONTH_DAYS[m] for m in months for d in days
    ):
        raise InvalidInput(f"bad schedule {spec!r}: no chosen month has those days")
    return CronSchedule(
        spec=spec,
        minutes=tuple(sorted(minutes)),
        hours=frozenset(hours),
        days=frozenset(days),
        months=frozenset(months),
        weekdays=weekdays,
        day_restricted=day_restricted,
        weekday_restricted=weekday_restricted,
    )


def _parse_field(
    spec: str, text: str, what: str, low: int, high: int, names: Sequence[str]
) -> set[int]:
    def bad(reason: str) -> InvalidInput:
        return InvalidInput(f"bad schedule {spec!r}: {what} field {text!r}: {reason}")

    def number(token: str) -> int:
        lowered = token.lower()
        if lowered in names:
            return names.index(lowered) + (low if low == 1 else 0)
        if not token.isdigit():
            allowed = f"a number {low}-{high}" + (f" or a name ({names[0]}...)" if names else "")
            raise bad(f"{token!r} is not {allowed}")
        value = int(token)
        if not low <= value <= high:
            raise bad(f"{value} is outside {low}-{high}")
        return value

    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise bad("empty list item")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise bad(f"step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = number(first), number(last)
            if start > end:
                raise bad(f"range {base!r} runs backwards")
        else:
            start = number(base)
            end = high if slash else start
        values.update(range(start, end + 1, step))
    return values


def slot_for(schedule: Schedule | str, now: float) -> int:
    """Return the start (epoch seconds, UTC) of the most recent slot at or before ``now``."""
    return parse_schedule(schedule).slot_for(now)


def next_slot_after(schedule: Schedule | str, when: float) -> int:
    """Return the start (epoch seconds, UTC) of the first slot strictly after ``when``."""
    return parse_schedule(schedule).next_slot_after(when)


# --------------------------------------------------------------------------- jobs


class JobContext:
    """What a job function is given: the slot it runs for and the claim it runs under.

    Stamp external effects with :attr:`token` (the claim's fencing token): if the claim is
    lost, a successor runs the same slot with a higher token, and a store that remembers
    the highest token seen can refuse the stale writer. A job that may outlive its
    ``claim_ttl`` calls :meth:`renew` now and then.
    """

    def __init__(self, job: CronJob, claim: Claim, ledger: JobLedger) -> None:
        self.job = job
        self._claim = claim
        self._ledger = ledger

    @property
    def claim(self) -> Claim:
        """The claim as last renewed."""
        return self._claim

    @property
    def slot(self) -> int:
        """The slot's start, epoch seconds (UTC)."""
        return self._claim.slot

    @property
    def token(self) -> int:
        """The claim's fencing token; a successor holding this slot has a higher one."""
        return self._claim.token

    def renew(self, ttl: float | None = None) -> None:
        """Extend the claim by ``ttl`` (default: the job's ``claim_ttl``) from now.

        Raises ``LeaseLost`` if another runner took the slot over; the job should stop.
        """
        self._claim = self._ledger.renew(
            self._claim, ttl if ttl is not None else self.job.claim_ttl
        )


#: What a job runs: called with its :class:`JobContext`; its return value is ignored.
JobFunction = Callable[[JobContext], object]


def _check_job_name(_instance: object, _attribute: object, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("a cron job needs a non-empty name")
    if len(value) > MAX_JOB_NAME or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidInput(
            f"cron job name {value!r} must be at most {MAX_JOB_NAME} printable characters"
        )


def _check_ttl(_instance: object, _attribute: object, value: float) -> None:
    check_seconds(value, "claim_ttl")


@attrs.frozen
class CronJob:
    """A named function to run once per slot of ``schedule`` across the whole fleet.

    ``claim_ttl`` (seconds) is how long a runner's claim lasts: if the runner dies, another
    server takes the slot over that long after the claim. Pick it longer than the job's
    normal run time, or renew it from the job (:meth:`JobContext.renew`). Raises
    ``InvalidInput`` for an empty name, a bad schedule or a non-positive TTL.
    """

    name: str = attrs.field(validator=_check_job_name)
    schedule: Schedule = attrs.field(converter=parse_schedule)
    function: JobFunction
    claim_ttl: float = attrs.field(default=300.0, validator=_check_ttl)


# --------------------------------------------------------------------------- the scheduler


class Outcome(enum.StrEnum):
    """What happened to one job in one :meth:`Scheduler.run_due` pass."""

    #: This scheduler ran the job and recorded the slot as done.
    RAN = "ran"
    #: The job raised; its claim was released so any scheduler may retry at its next poll.
    FAILED = "failed"
    #: The slot was already completed (by anyone).
    DONE = "done"
    #: Another runner holds a live claim on the slot.
    BUSY = "busy"
    #: The job ran, but its claim expired and was taken over before it finished (or its
    #: renew raised ``LeaseLost``); the new holder, with a higher token, runs the slot.
    LEASE_LOST = "lease_lost"
    #: The ledger failed (``BackendUnavailable``); see ``error``.
    ERROR = "error"


@attrs.frozen
class JobRun:
    """One job's outcome in one pass: ``token`` is set when this scheduler held a claim."""

    job: str
    slot: int
    outcome: Outcome
    token: int | None = None
    error: str | None = None


@attrs.frozen
class RunReport:
    """The outcome of every job in one :meth:`Scheduler.run_due` pass at time ``now``."""

    now: float
    runs: tuple[JobRun, ...]

    @property
    def ran(self) -> list[str]:
        """Names of the jobs this pass ran to completion."""
        return [run.job for run in self.runs if run.outcome is Outcome.RAN]

    def outcome_of(self, job: str) -> Outcome:
        """The outcome for ``job``; raises ``KeyError`` if it is not scheduled here."""
        for run in self.runs:
            if run.job == job:
                return run.outcome
        raise KeyError(job)


class CronStats:
    """Counters of one scheduler, safe to read from another thread (metrics).

    ``runs`` counts, per (job, outcome), the passes in which this scheduler did something
    with a job: ``ran``, ``failed``, ``lease_lost`` or ``error`` (``done`` and ``busy``,
    which every poll sees, are not counted). ``missed`` counts, per job, the slots that
    ended without being completed by anyone, as seen by this scheduler while it ran: the
    job kept failing, the ledger was down, or the scheduler was too busy to look at the
    slot at all. Slots before this scheduler started are not its business.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: Counter[tuple[str, str]] = Counter()
        self._missed: Counter[str] = Counter()

    def record_run(self, job: str, outcome: Outcome) -> None:
        with self._lock:
            self._runs[(job, str(outcome))] += 1

    def record_missed(self, job: str, count: int = 1) -> None:
        with self._lock:
            self._missed[job] += count

    def runs(self) -> dict[tuple[str, str], int]:
        """(job, outcome) -> passes, a copy."""
        with self._lock:
            return dict(self._runs)

    def missed(self) -> dict[str, int]:
        """job -> missed slots, a copy."""
        with self._lock:
            return dict(self._missed)


_COUNTED = frozenset({Outcome.RAN, Outcome.FAILED, Outcome.LEASE_LOST, Outcome.ERROR})


class StopEvent(Protocol):
    """What :meth:`Scheduler.run_forever` needs to be stopped (``threading.Event`` fits)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


def default_owner() -> str:
    """A runner name unique to this process: host, pid and a random suffix."""
    return f"{platform.node() or 'host'}:{os.getpid()}:{secrets.token_hex(4)}"


class Scheduler:
    """Runs each job once per slot of its schedule, coordinated through a JobLedger.

    Run one on every server, over the same jobs and a ledger they share (a ``SHARED`` one
    in a fleet): each slot runs on exactly one of them, provided the ledger answers and no
    job outlives its claim. A job that raises is retried at the next poll (of any server);
    a runner that dies mid-job leaves a claim that expires after ``claim_ttl`` and is taken
    over. Jobs whose work must never repeat should check the fencing token
    (:attr:`JobContext.token`) where they write.

    Not thread-safe: call :meth:`run_due` from one thread (run several schedulers instead).
    """

    def __init__(
        self,
        ledger: JobLedger,
        jobs: Iterable[CronJob],
        *,
        owner: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.jobs: tuple[CronJob, ...] = tuple(jobs)
        names = [job.name for job in self.jobs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise InvalidInput(f"cron job names must be unique; repeated: {duplicates}")
        if owner is not None and (not isinstance(owner, str) or not owner):
            raise InvalidInput("a scheduler's owner must be a non-empty string")
        self.owner = owner or default_owner()
        self.ledger = ledger
        self.clock: Clock = clock or SystemClock()
        # Slots this scheduler saw completed: polls within the same slot skip the ledger.
        self._known_done: dict[str, int] = {}
        # The slot of each job at the previous pass, to notice slots that ended undone.
        self._last_slot: dict[str, int] = {}
        #: Runs and missed slots, for metrics.
        self.stats = CronStats()

    def run_due(self, now: float | None = None) -> RunReport:
        """Run every job whose current slot is not done and can be claimed; report each.

        ``now`` (epoch seconds) defaults to the clock. Only the slot containing ``now`` is
        considered for each job. Never raises for a job's or the ledger's failure: those
        are reported (``FAILED``, ``ERROR``, ``LEASE_LOST``) and logged.
        """
        at = self.clock.now() if now is None else now
        runs = []
        for job in self.jobs:
            self._count_missed(job, job.schedule.slot_for(at))
            run = self._run_one(job, at)
            if run.outcome in _COUNTED:
                self.stats.record_run(job.name, run.outcome)
            runs.append(run)
        return RunReport(now=at, runs=tuple(runs))

    def _count_missed(self, job: CronJob, slot: int) -> None:
        """Count the slots of ``job`` that ended since the previous pass undone."""
        last = self._last_slot.get(job.name)
        self._last_slot[job.name] = slot
        if last is None or slot <= last:
            return
        missed = 0
        if self._known_done.get(job.name) != last:
            try:
                done = self.ledger.is_done(job.name, last)
            except ScalecoreError:
                done = False  # it was not recorded as done: as missed as it gets
            missed += 0 if done else 1
        # Slots that began and ended between two passes were never even looked at.
        between = job.schedule.next_slot_after(last)
        while between < slot and missed < _MAX_MISSED_STEP:
            missed += 1
            between = job.schedule.next_slot_after(between)
        if missed:
            logger.warning("cron: job %s missed %d slot(s) before slot %s", job.name, missed, slot)
            self.stats.record_missed(job.name, missed)

    def _run_one(self, job: CronJob, now: float) -> JobRun:
        slot = job.schedule.slot_for(now)
        if self._known_done.get(job.name) == slot:
            return JobRun(job.name, slot, Outcome.DONE)
        try:
            if self.ledger.is_done(job.name, slot):
                self._known_done[job.name] = slot
                return JobRun(job.name, slot, Outcome.DONE)
            claim = self.ledger.claim(job.name, slot, self.owner, job.claim_ttl)
        except ScalecoreError as exc:
            logger.warning("cron: ledger failed before job %s, slot %s: %s", job.name, slot, exc)
            return JobRun(job.name, slot, Outcome.ERROR, error=str(exc))
        if claim is None:
            return JobRun(job.name, slot, Outcome.BUSY)
        context = JobContext(job, claim, self.ledger)
        try:
            job.function(context)
        except Exception as exc:
            logger.exception("cron: job %s failed for slot %s", job.name, slot)
            self._release(context.claim)  # ignored by the ledger if the claim was lost
            # A LeaseLost from the job (its renew failed) means a successor owns the slot.
            outcome = Outcome.LEASE_LOST if isinstance(exc, LeaseLost) else Outcome.FAILED
            return JobRun(job.name, slot, outcome, context.token, f"{type(exc).__name__}: {exc}")
        try:
            self.ledger.complete(context.claim)
        except LeaseLost as exc:
            logger.warning(
                "cron: job %s ran for slot %s but its claim (token %s) was taken over",
                job.name,
                slot,
                context.token,
            )
            return JobRun(job.name, slot, Outcome.LEASE_LOST, context.token, str(exc))
        except ScalecoreError as exc:
            logger.warning(
                "cron: job %s ran for slot %s but was not recorded: %s", job.name, slot, exc
            )
            return JobRun(job.name, slot, Outcome.ERROR, context.token, str(exc))
        self._known_done[job.name] = slot
        return JobRun(job.name, slot, Outcome.RAN, context.token)

    def _release(self, claim: Claim) -> None:
        try:
            self.ledger.release(claim)
        except ScalecoreError as exc:
            # The claim then expires after its TTL instead; nothing else to do.
            logger.warning("cron: could not release job %s slot %s: %s", claim.job, claim.slot, exc)

    def next_due(self, now: float | None = None) -> int:
        """The earliest start of a slot after ``now`` among all jobs (epoch seconds)."""
        at = self.clock.now() if now is None else now
        return min(job.schedule.next_slot_after(at) for job in self.jobs)

    def run_forever(self, stop_event: StopEvent, poll_interval: float = 1.0) -> None:
        """Call :meth:`run_due` until ``stop_event`` is set, waiting between passes.

        Waits at most ``poll_interval`` seconds (real time, on ``stop_event``), less when a
        slot starts sooner; polling is what notices released and expired claims. Returns
        once ``stop_event`` is set; a pass already running finishes first.
        """
        check_seconds(poll_interval, "poll_interval")
        while not stop_event.is_set():
            self.run_due()
            if not self.jobs:
                stop_event.wait(poll_interval)
                continue
            now = self.clock.now()
            stop_event.wait(min(float(poll_interval), max(self.next_due(now) - now, 0.0)))
