"""The outbox relay: moves events committed with their changes onto the bus, at least once.

A change and the event announcing it are written in one database transaction (see
:class:`~scalecore.photofeed.ports.PhotoRepository`), so an event exists exactly when its
change was committed. The relay then publishes it. The failure story:

- the process dies before publishing: the event stays unsent and a later relay (the upload
  itself, or the ``photofeed.relay-outbox`` cron job) publishes it;
- the bus refuses the publish: the claim is released, the error raised, a later run retries;
- the process dies after publishing but before marking the event sent: its claim lapses
  after ``lease`` seconds, another relay publishes the event again under the same message
  id, and consumers, idempotent per message id, ignore the repeat.

Several relays may run at once, in one process or many: each claims a disjoint batch.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection

from scalecore.clock import Clock, SystemClock
from scalecore.errors import ConfigError, ScalecoreError
from scalecore.photofeed.models import OutboxEvent
from scalecore.photofeed.ports import OutboxRepository
from scalecore.ports.bus import Bus

__all__ = ["OutboxRelay"]

logger = logging.getLogger(__name__)


class OutboxRelay:
    """Publishes pending outbox events, each with ``message_id`` = the event's id.

    ``lease`` (seconds) is how long a claimed batch stays hidden from other relays; set it
    well above the time a batch takes to publish. ``batch`` is the default claim size.
    Thread-safe (it keeps no state between calls).
    """

    def __init__(
        self,
        *,
        outbox: OutboxRepository,
        bus: Bus,
        clock: Clock | None = None,
        lease: float = 60.0,
        batch: int = 100,
    ) -> None:
        if isinstance(lease, bool) or not isinstance(lease, int | float) or not lease > 0:
            raise ConfigError(f"must be seconds > 0, got {lease!r}", key="lease")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ConfigError(f"must be an integer >= 1, got {batch!r}", key="batch")
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
