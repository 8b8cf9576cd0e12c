"""Bus: topics with consumer groups, at-least-once delivery, retries and dead letters."""

from __future__ import annotations

import abc
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import ClassVar

import attrs

from scalecore.busstats import BusStats
from scalecore.capabilities import Capability
from scalecore.errors import InvalidInput
from scalecore.types import JSONValue

__all__ = [
    "NAME_PATTERN",
    "Bus",
    "Handler",
    "Message",
    "QueueDepth",
    "Subscription",
    "validate_name",
]

#: Topic and group names: dotted lowercase words, safe as RabbitMQ exchange/queue names.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)*")
_MAX_NAME = 120


def validate_name(name: object, what: str = "topic") -> str:
    """Return ``name`` if it is a valid topic or group name, else raise ``InvalidInput``."""
    if not isinstance(name, str) or len(name) > _MAX_NAME or not NAME_PATTERN.fullmatch(name):
        raise InvalidInput(
            f"{what} name must be dotted lowercase words of a-z, 0-9, '_' and '-' "
            f"(at most {_MAX_NAME} characters), got {name!r}"
        )
    return name


@attrs.frozen
class Message:
    """One message as a handler receives it.

    ``id`` is stable across redeliveries and replays, so a handler can be idempotent by
    remembering the ids it has applied. ``attempt`` counts deliveries to this group,
    starting at 1.
    """

    topic: str
    payload: JSONValue
    id: str = attrs.field(factory=lambda: uuid.uuid4().hex)
    attempt: int = 1
    published_at: float = attrs.field(factory=time.time)
    headers: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class QueueDepth:
    """How many messages wait in the queue of one (topic, group), at one moment.

    ``ready`` counts those waiting for a consumer, retries waiting out their delay
    included (the consumer lag, in messages); ``dead`` those in the dead letters.
    """

    ready: int
    dead: int


#: A message handler. Returning normally acknowledges the message; raising any exception
#: means "not done": the message is redelivered, up to the bus's ``max_attempts``.
Handler = Callable[[Message], None]


class Subscription(abc.ABC):
    """A handler attached to one (topic, group); cancelling it stops new deliveries."""

    topic: str
    group: str

    @abc.abstractmethod
    def cancel(self) -> None:
        """Stop delivering to this handler; messages in flight are redelivered. Idempotent."""


class Bus(abc.ABC):
    """Topics with consumer groups and at-least-once delivery.

    Every group subscribed to (or declared on) a topic receives every message published to
    that topic afterwards; handlers in one group share the group's messages. A message is
    done when its handler returns; if the handler raises, or its worker dies, the message is
    delivered again (after the configured retry delays). After ``max_attempts`` failed
    deliveries it goes to the group's dead letters, from which :meth:`replay_dead_letters`
    puts it back. Messages published to a topic with no group are dropped.

    Capabilities: ``SHARED`` (other processes see the same topics), ``DURABLE`` (queued
    messages survive a restart), ``DEAD_LETTER``, ``REQUEST_REPLY``.
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    #: Counters of this bus in this process: messages published per topic, deliveries per
    #: (topic, group, outcome). Every adapter sets it in its constructor; metrics read it.
    stats: BusStats

    @abc.abstractmethod
    def publish(
        self,
        topic: str,
        payload: JSONValue,
        *,
        message_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Publish ``payload`` (JSON) to ``topic`` and return the message as sent.

        The current request id (:mod:`scalecore.requestid`), if any, is added to the
        headers as ``x-request-id`` unless ``headers`` names one; a handler runs with the
        id of its message current, so its log lines carry it.

        Returns only once the message is safe: queued for every group on an in-process bus,
        confirmed by the broker on a distributed one. Raises ``BackendUnavailable`` if that
        cannot be achieved; then the message may or may not have been delivered.
        """

    def publish_many(self, topic: str, payloads: list[JSONValue]) -> list[Message]:
        """Publish several messages; returns once all are safe (adapters may batch confirms)."""
        return [self.publish(topic, payload) for payload in payloads]

    @abc.abstractmethod
    def declare(self, topic: str, group: str) -> None:
        """Make the (topic, group) queue exist, so messages published before any consumer
        starts are kept for it. Idempotent."""

    @abc.abstractmethod
    def subscribe(self, topic: str, group: str, handler: Handler) -> Subscription:
        """Attach ``handler`` to the (topic, group) queue, declaring it if needed.

        Deliveries begin once the bus is started (:meth:`start`).
        """

    @abc.abstractmethod
    def start(self) -> None:
        """Begin delivering messages to subscribed handlers. Idempotent."""

    @abc.abstractmethod
    def stop(self, timeout: float = 10.0) -> None:
        """Stop delivering, waiting up to ``timeout`` for handlers in flight. Idempotent."""

    @abc.abstractmethod
    def depth(self, topic: str, group: str) -> QueueDepth:
        """How many messages wait in the (topic, group) queue and in its dead letters.

        Zeros for a queue that does not exist. Raises ``BackendUnavailable`` if the broker
        does not answer. For metrics: cheap enough to call at every scrape.
        """

    def dead_letters(self, topic: str, group: str) -> list[Message]:
        """Return the dead letters of (topic, group), oldest first, without removing them.

        Needs the ``DEAD_LETTER`` capability.
        """
        from scalecore.capabilities import require

        require(self, Capability.DEAD_LETTER, "dead_letters")
        raise AssertionError("an adapter declaring DEAD_LETTER must override dead_letters")

    def replay_dead_letters(self, topic: str, group: str) -> int:
        """Move the dead letters of (topic, group) back to its queue; return how many.

        Replayed messages keep their ids and start again at attempt 1. Needs ``DEAD_LETTER``.
        """
        from scalecore.capabilities import require

        require(self, Capability.DEAD_LETTER, "replay_dead_letters")
        raise AssertionError("an adapter declaring DEAD_LETTER must override replay_dead_letters")

    def request(self, topic: str, payload: JSONValue, *, timeout: float = 5.0) -> JSONValue:
        """Send a request to the responder of ``topic`` and return its reply.

        Raises ``BackendUnavailable`` if no reply comes within ``timeout``. Needs
        ``REQUEST_REPLY``.
        """
        from scalecore.capabilities import require

        require(self, Capability.REQUEST_REPLY, "request")
        raise AssertionError("an adapter declaring REQUEST_REPLY must override request")

    def respond(self, topic: str, responder: Callable[[JSONValue], JSONValue]) -> Subscription:
        """Answer requests on ``topic`` with ``responder``'s return value. Needs
        ``REQUEST_REPLY``."""
        from scalecore.capabilities import require

        require(self, Capability.REQUEST_REPLY, "respond")
        raise AssertionError("an adapter declaring REQUEST_REPLY must override respond")

    def create_schema(self) -> bool:
        """Create what the backend must hold before first use (tables), where missing, and
        return ``True``; a backend with nothing to create returns ``False``. Idempotent,
        safe from several processes at once. Called by ``scalecore db init``, ``scalecore
        run`` and the library entry on a fresh deployment."""
        return False

    def ping(self) -> None:
        """Raise ``BackendUnavailable`` unless the broker answers."""

    def close(self) -> None:
        """Stop and release connections. Idempotent."""
        self.stop()
