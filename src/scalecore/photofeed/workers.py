"""Bus consumers of the photo feed: the feed worker (and, re-exported, the outbox relay).

:class:`FeedWorker` consumes "photo.uploaded" and "photo.deleted" in the consumer group
``feed-fanout`` and fans each out to the owner's followers' feeds. Run it in as many
processes as you like: the group shares the messages.

Idempotence per message id is built in twice. The feed entries are LWW state merged with
the event's own timestamps, so applying a message again (a redelivery, the relay's second
publish after a crash, a dead letter replayed) leaves the feeds as they were, in any
process. On top of that each worker remembers the ids of the last messages it handled and
skips a repeat without touching the database, which makes duplicates cheap as well as
harmless.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from scalecore.errors import ConfigError
from scalecore.photofeed.events import TOPOLOGY
from scalecore.photofeed.outbox import OutboxRelay
from scalecore.photofeed.service import PhotoFeed
from scalecore.ports.bus import Bus, Message, Subscription
from scalecore.validate import check_int

__all__ = ["FeedWorker", "OutboxRelay"]

logger = logging.getLogger(__name__)


class FeedWorker:
    """Applies photo events to feeds through :meth:`PhotoFeed.apply_photo_event`.

    ``remember`` is how many handled message ids are kept to skip exact repeats.
    Thread-safe: one worker may serve several bus threads.
    """

    def __init__(self, service: PhotoFeed, *, remember: int = 10_000) -> None:
        check_int(remember, "remember", minimum=0, error=ConfigError)
        self.service = service
        self.remember = remember
        self._handled: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        #: Photo events applied (repeats skipped by id are not counted), by topic.
        self.applied: dict[str, int] = {}
        #: Feed entries written by those events (fan-out work).
        self.feeds_written = 0

    def handle(self, message: Message) -> None:
        """Apply one message. Returns normally when the feeds reflect it (acknowledge).

        Raises ``BackendUnavailable`` when a store fails (the bus redelivers later) and
        ``InvalidInput`` for a malformed message, which therefore ends in the dead letters
        after the bus's attempts, where it can be inspected and replayed.
        """
        with self._lock:
            if message.id in self._handled:
                self._handled.move_to_end(message.id)
                return
        try:
            written = self.service.apply_photo_event(message.topic, message.payload)
        except Exception:
            logger.warning(
                "feed worker: message %s on %s failed (attempt %d)",
                message.id,
                message.topic,
                message.attempt,
                exc_info=True,
            )
            raise
        photo = message.payload.get("photo_id") if isinstance(message.payload, dict) else None
        logger.info(
            "feed worker: %s photo %s -> %d feeds (message %s)",
            message.topic,
            photo,
            written,
            message.id,
        )
        with self._lock:
            self.applied[message.topic] = self.applied.get(message.topic, 0) + 1
            self.feeds_written += written
        if self.remember:
            with self._lock:
                self._handled[message.id] = None
                while len(self._handled) > self.remember:
                    self._handled.popitem(last=False)

    def counters(self) -> tuple[dict[str, int], int]:
        """A consistent copy of (:attr:`applied`, :attr:`feeds_written`), for metrics."""
        with self._lock:
            return dict(self.applied), self.feeds_written

    def attach(self, bus: Bus) -> list[Subscription]:
        """Subscribe :meth:`handle` to every (topic, group) of ``TOPOLOGY`` on ``bus``."""
        return [bus.subscribe(topic, group, self.handle) for topic, group in TOPOLOGY]
