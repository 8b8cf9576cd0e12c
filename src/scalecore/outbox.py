"""The outbox relay: moves events committed with their changes onto the bus, at least once.

A change and the event announcing it are written in one database transaction (an outbox
adapter's ``add``, inside the application's own transaction), so an event exists exactly
when its change was committed. The relay then publishes it. The failure story:

- the process dies before publishing: the event stays unsent and a later relay (the writer's
  own relay, or a cron job that runs ``relay_pending``) publishes it;
- the bus refuses the publish: the claim is released, the error raised, a later run retries;
- the process dies after publishing but before marking the event sent: its claim lapses
  after ``lease`` seconds, another relay publishes the event again under the same message
  id, and consumers, idempotent per message id, ignore the repeat.

Several relays may run at once, in one process or many: each claims a disjoint batch.
"""

from __future__ import annotations

import abc
import logging
import uuid
from collections.abc import Collection
from typing import ClassVar

import attrs

from scalecore.capabilities import Capability
from scalecore.clock import Clock, SystemClock
from scalecore.errors import ConfigError, ScalecoreError
from scalecore.ports.bus import Bus
from scalecore.types import JSONObject
from scalecore.validate import check_int, check_seconds

__all__ = ["Outbox", "OutboxEvent", "OutboxRelay"]

logger = logging.getLogger(__name__)


@attrs.frozen
class OutboxEvent:
    """An event recorded in the same transaction as the change it announces.

    ``id`` is an id (:mod:`scalecore.ids`) of the changed row's logical shard, so the event
    lives beside the row it is about, and becomes the bus message id, which makes a second
    publish of the same event recognisable to consumers.
    """

    id: str
    topic: str
    payload: JSONObject = attrs.field(eq=True, hash=False)
    created_at: float


class Outbox(abc.ABC):
    """Events waiting to be published, claimed by relays with a lease.

    An application writes each event in the same database transaction as the change it
    announces (the SQL adapter's ``add``), so an event exists exactly when its change was
    committed; the :class:`OutboxRelay` then publishes it.

    A claim hides events from other claimants until its lease runs out or it is released,
    so relays running at once in several processes split the work. A relay that dies
    after publishing but before :meth:`mark_sent` leaves its events to be claimed again
    when the lease expires: they are published twice, under the same message id.
    """

    @abc.abstractmethod
    def claim(
        self,
        claimant: str,
        *,
        limit: int,
        now: float,
        lease: float,
        ids: Collection[str] | None = None,
    ) -> list[OutboxEvent]:
        """Claim up to ``limit`` unsent events that no live claim holds, oldest first within
        a shard, for ``lease`` seconds from ``now``; only those in ``ids`` when given.

        Two concurrent claims never return the same event (while the lease lasts).
        """

    @abc.abstractmethod
    def mark_sent(self, ids: Collection[str], *, now: float) -> None:
        """Record the events as published; they are never claimed again. Idempotent."""

    @abc.abstractmethod
    def release(self, ids: Collection[str], claimant: str) -> None:
        """Give up ``claimant``'s claim on unsent events so they can be claimed at once.
        Events claimed by someone else meanwhile are left alone."""

    @abc.abstractmethod
    def pending_count(self) -> int:
        """How many events are not yet sent (claimed or not)."""

    @abc.abstractmethod
    def oldest_pending_at(self) -> float | None:
        """``created_at`` of the oldest event not yet sent (claimed or not); ``None`` when
        every event is sent. With :meth:`pending_count`, what an operator watches: a relay
        that stopped shows as an age that keeps growing."""

    @abc.abstractmethod
    def purge_sent(self, before: float) -> int:
        """Delete events sent before ``before``; return how many."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def ping(self) -> None:
        """Raise ``BackendUnavailable`` unless the store answers (readiness checks)."""

    def close(self) -> None:
        """Release connections. Idempotent."""


class OutboxRelay:
    """Publishes pending outbox events, each with ``message_id`` = the event's id.

    ``lease`` (seconds) is how long a claimed batch stays hidden from other relays; set it
    well above the time a batch takes to publish. ``batch`` is the default claim size.
    Thread-safe (it keeps no state between calls).
    """

    def __init__(
        self,
        *,
        outbox: Outbox,
        bus: Bus,
        clock: Clock | None = None,
        lease: float = 60.0,
        batch: int = 100,
    ) -> None:
        check_seconds(lease, "lease", error=ConfigError)
        check_int(batch, "batch", minimum=1, error=ConfigError)
        self.outbox = outbox
        self.bus = bus
        self.lease = float(lease)
        self.batch = batch
        self._clock: Clock = clock or SystemClock()

    def relay_once(self, limit: int | None = None) -> int:
        """Publish up to ``limit`` (default ``batch``) pending events; return how many.

        Raises ``BackendUnavailable`` if the outbox or the bus fails; events published
        before the failure are marked sent, the rest of the batch is released.
        """
        return self._relay(limit if limit is not None else self.batch, None)

    def relay_events(self, ids: Collection[str]) -> int:
        """Publish the given events now if they are still pending and unclaimed; return
        how many. Fails like :meth:`relay_once`."""
        if not ids:
            return 0
        return self._relay(len(ids), ids)

    def relay_pending(self, *, max_batches: int = 100) -> int:
        """Relay batch after batch until one comes back short (or ``max_batches`` ran);
        return how many events were published in all."""
        total = 0
        for _ in range(max_batches):
            sent = self.relay_once()
            total += sent
            if sent < self.batch:
                break
        return total

    def _relay(self, limit: int, ids: Collection[str] | None) -> int:
        claimant = uuid.uuid4().hex
        events = self.outbox.claim(
            claimant, limit=limit, now=self._clock.now(), lease=self.lease, ids=ids
        )
        sent: list[str] = []
        try:
            for event in events:
                self._publish(event)
                sent.append(event.id)
        except ScalecoreError:
            unsent = [event.id for event in events if event.id not in set(sent)]
            try:
                self.outbox.release(unsent, claimant)
            except ScalecoreError:  # the lease runs out by itself
                logger.warning("outbox: could not release %d claimed events", len(unsent))
            raise
        finally:
            if sent:
                # If this fails the events are published again after the lease: harmless.
                self.outbox.mark_sent(sent, now=self._clock.now())
        return len(sent)

    def _publish(self, event: OutboxEvent) -> None:
        self.bus.publish(event.topic, event.payload, message_id=event.id)
