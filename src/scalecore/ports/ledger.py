"""JobLedger: who runs scheduled job J for time slot T, so each slot runs once in a fleet."""

from __future__ import annotations

import abc
from typing import ClassVar

import attrs

from scalecore.capabilities import Capability

__all__ = ["Claim", "JobLedger"]


@attrs.frozen
class Claim:
    """A runner's hold on (job, slot) until ``expires_at`` (epoch seconds).

    ``token`` is a fencing token: it grows every time the slot changes hands, so work
    stamped with a stale token can be told from its successor's.
    """

    job: str
    slot: int
    owner: str
    token: int
    expires_at: float


class JobLedger(abc.ABC):
    """Run-once-per-slot bookkeeping for cron jobs run by every server.

    Before running job ``J`` for slot ``T`` (the slot's start, in epoch seconds) a runner
    claims ``(J, T)``. Exactly one live claim exists per slot; a claim whose holder died
    expires after its TTL and can be taken over; a completed slot is never claimed again.

    Capabilities: ``SHARED`` (one ledger for all servers), ``DURABLE``, ``PURGE``.
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    @abc.abstractmethod
    def claim(self, job: str, slot: int, owner: str, ttl: float) -> Claim | None:
        """Claim (job, slot) for ``owner`` for ``ttl`` seconds.

        Returns the new claim, or ``None`` if the slot is completed or held by a live claim.
        Taking over an expired claim returns a claim with a higher token than the old one.
        """

    @abc.abstractmethod
    def renew(self, claim: Claim, ttl: float) -> Claim:
        """Extend a held claim; raise ``LeaseLost`` if it expired and changed hands."""

    @abc.abstractmethod
    def complete(self, claim: Claim) -> None:
        """Mark the slot done. Raise ``LeaseLost`` if ``claim`` is no longer the holder."""

    @abc.abstractmethod
    def release(self, claim: Claim) -> None:
        """Give the slot up unfinished so another runner may claim it at once.

        A claim that is no longer held is ignored (owner-checked, idempotent).
        """

    @abc.abstractmethod
    def is_done(self, job: str, slot: int) -> bool:
        """Whether (job, slot) was completed."""

    def purge(self, before: float) -> int:
        """Forget slots that started before ``before``; return how many. Needs ``PURGE``."""
        from scalecore.capabilities import require

        require(self, Capability.PURGE, "purge")
        raise AssertionError("an adapter declaring PURGE must override purge")

    def create_schema(self) -> bool:
        """Create what the backend must hold before first use (tables), where missing, and
        return ``True``; a backend with nothing to create returns ``False``. Idempotent,
        safe from several processes at once. Called by ``scalecore db init``, ``scalecore
        run`` and the library entry on a fresh deployment."""
        return False

    def ping(self) -> None:
        """Raise ``BackendUnavailable`` unless the backend answers."""

    def close(self) -> None:
        """Release connections. Idempotent."""
