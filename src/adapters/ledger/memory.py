"""A job ledger in a dict of this process: for one server, development and tests.

Backend: "memory"
Install extra: none
Options: clock (injected).
Differs from the port: claims live in this process only (not SHARED, not DURABLE): it
    keeps the schedulers of one process from running a slot twice, but a second server
    has its own ledger and runs every slot again. Completed slots are kept until purge
    (PURGE) forgets them.
"""

from __future__ import annotations

import threading
from typing import ClassVar

import attrs

from adapters.ledger import check_before, check_claim, check_claim_args
from scalecore.capabilities import Capability
from scalecore.clock import Clock, SystemClock
from scalecore.errors import ConfigError, LeaseLost
from scalecore.ports.ledger import Claim, JobLedger
from scalecore.validate import check_seconds

__all__ = ["MemoryJobLedger"]


@attrs.define
class _Slot:
    owner: str | None  # None: released, anyone may claim at once
    token: int
    expires_at: float
    done: bool = False


class MemoryJobLedger(JobLedger):
    """Claims in a dict guarded by one lock; every operation is atomic and thread-safe.

    A claim whose TTL ran out still lets its holder renew or complete it until another
    runner takes the slot over: holding is decided by owner and token, not by the clock.
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.PURGE})

    def __init__(self, *, clock: Clock | None = None) -> None:
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigError(f"must be a Clock, not {type(clock).__name__}", key="clock")
        self._clock: Clock = clock or SystemClock()
        self._slots: dict[tuple[str, int], _Slot] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<MemoryJobLedger slots={len(self._slots)}>"

    def claim(self, job: str, slot: int, owner: str, ttl: float) -> Claim | None:
        check_claim_args(job, slot, owner)
        seconds = check_seconds(ttl, "ttl")
        with self._lock:
            now = self._clock.now()
            record = self._slots.get((job, slot))
            if record is None:
                record = self._slots[(job, slot)] = _Slot(owner, 1, now + seconds)
            elif record.done or (record.owner is not None and now < record.expires_at):
                return None
            else:
                record.owner, record.token, record.expires_at = (
                    owner,
                    record.token + 1,
                    now + seconds,
                )
            return Claim(job, slot, owner, record.token, record.expires_at)

    def renew(self, claim: Claim, ttl: float) -> Claim:
        check_claim(claim)
        seconds = check_seconds(ttl, "ttl")
        with self._lock:
            record = self._held(claim)
            if record.done:
                raise LeaseLost(f"job {claim.job!r} slot {claim.slot} is already completed")
            record.expires_at = self._clock.now() + seconds
            return attrs.evolve(claim, expires_at=record.expires_at)

    def complete(self, claim: Claim) -> None:
        check_claim(claim)
        with self._lock:
            self._held(claim).done = True

    def release(self, claim: Claim) -> None:
        check_claim(claim)
        with self._lock:
            record = self._slots.get((claim.job, claim.slot))
            if record is not None and not record.done and _holds(record, claim):
                record.owner = None

    def is_done(self, job: str, slot: int) -> bool:
        check_claim_args(job, slot, "-")
        with self._lock:
            record = self._slots.get((job, slot))
            return record is not None and record.done

    def purge(self, before: float) -> int:
        limit = check_before(before)
        with self._lock:
            old = [key for key in self._slots if key[1] < limit]
            for key in old:
                del self._slots[key]
            return len(old)

    def _held(self, claim: Claim) -> _Slot:
        record = self._slots.get((claim.job, claim.slot))
        if record is None or not _holds(record, claim):
            raise LeaseLost(
                f"claim on job {claim.job!r} slot {claim.slot} (token {claim.token}) "
                "is no longer held"
            )
        return record

    def ping(self) -> None:
        """Always answers: the ledger is this process."""

    def close(self) -> None:
        """Nothing to release."""


def _holds(record: _Slot, claim: Claim) -> bool:
    return record.owner == claim.owner and record.token == claim.token
