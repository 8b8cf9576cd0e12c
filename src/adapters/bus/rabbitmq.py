"""A bus on a RabbitMQ broker: durable queues, publisher confirms, retries and dead letters.

Backend: "rabbitmq"
Install extra: rabbitmq
Options:
    url: AMQP URL of the broker (default "amqp://guest:guest@127.0.0.1:5672/%2F"); never
        logged, since it may hold a password.
    exchange: the durable topic exchange every topic is published to (default "scalecore");
        it also prefixes every queue name, so two exchanges on one vhost never share a queue.
    prefetch: unacknowledged messages the broker may push to one subscription (default 10).
    max_attempts: deliveries per message and group before it is dead-lettered (default 5).
    retry_delays: seconds before each redelivery, the last one repeating (default
        [0.1, 0.5, 2.0]); timed by the broker, to the millisecond.
    workers: handler threads per subscription (default 1).
    heartbeat: AMQP heartbeat in seconds, 0 to disable (default 60).
    connect_timeout: seconds allowed to open a connection (default 10.0).
    publish_timeout: seconds ``publish`` waits for the broker's confirm, reconnections
        included, before it raises ``BackendUnavailable`` (default 30.0).
    clock: time source for ``published_at`` (injected; SystemClock). Retry delays are
        message TTLs kept by the broker, so a ManualClock does not move them.
Differs from the port: a delivery cut short by a dead worker or a lost connection comes
    back with the same ``attempt`` (the broker redelivers it; only a handler that raises
    moves it to the next attempt), so such deliveries do not count towards
    ``max_attempts``. ``request`` works whether or not this bus is started. Header names
    ``x-scalecore-attempt``, ``x-scalecore-published-at`` and ``x-scalecore-publish-mark``
    are used on the wire and never reach a handler.
Private helpers beside this module, used by no other adapter: ``_rabbitmq_connection``
    (pika errors translated, backoff, the administration connection), ``_rabbitmq_wire``
    (headers and properties), ``_rabbitmq_publisher`` and ``_rabbitmq_consumer``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import ClassVar, Final

import attrs
import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from adapters.bus import (
    CORRELATION_ID_HEADER,
    REPLY_TO_HEADER,
    RepliesOverTopics,
    ReplyWaiter,
    check_message_id,
    encode_payload,
    outgoing_headers,
    unpack_reply,
)
from adapters.bus._rabbitmq_connection import (
    CLOSE_WAIT,
    PIKA_ERRORS,
    Admin,
    message_count,
    queue_exists,
)
from adapters.bus._rabbitmq_consumer import Consumer
from adapters.bus._rabbitmq_publisher import Outgoing, Publisher
from adapters.bus._rabbitmq_wire import (
    Envelope,
    Undecodable,
    copy_properties,
    decode,
    milliseconds,
    properties_for,
)
from scalecore.busstats import BusStats
from scalecore.capabilities import Capability
from scalecore.clock import Clock, SystemClock
from scalecore.errors import BackendUnavailable, ConfigError, InvalidInput
from scalecore.ports.bus import (
    NAME_PATTERN,
    Handler,
    Message,
    QueueDepth,
    Subscription,
    validate_name,
)
from scalecore.retry import RetryPolicy
from scalecore.types import JSONValue
from scalecore.validate import check_int, check_seconds

__all__ = ["RabbitMqBus"]

logger = logging.getLogger(__name__)

_DEFAULT_URL: Final = "amqp://guest:guest@127.0.0.1:5672/%2F"
_MAX_QUEUE_NAME: Final = 255  # AMQP short string
_REPLY_GROUP: Final = "replies"


# -- options ------------------------------------------------------------------------------


def _check_url(url: object) -> str:
    if not isinstance(url, str) or not url.startswith(("amqp://", "amqps://")):
        raise ConfigError("must be an amqp:// or amqps:// URL", key="url")
    try:
        pika.URLParameters(url)
    except Exception as exc:  # pika raises several types for a bad URL
        # The URL may hold a password: say what is wrong, never echo it.
        raise ConfigError(f"is not a valid AMQP URL ({type(exc).__name__})", key="url") from None
    return url


def _check_exchange(exchange: object) -> str:
    if (
        not isinstance(exchange, str)
        or len(exchange) > 120
        or not NAME_PATTERN.fullmatch(exchange)
        or exchange.startswith("amq.")
    ):
        raise ConfigError(
            "must be dotted lowercase words of a-z, 0-9, '_' and '-', at most 120 "
            f"characters, not starting with 'amq.'; got {exchange!r}",
            key="exchange",
        )
    return exchange


# -- the adapter --------------------------------------------------------------------------


class _RabbitMqSubscription(Subscription):
    def __init__(self, bus: RabbitMqBus, topic: str, group: str, handler: Handler) -> None:
        self.topic = topic
        self.group = group
        self.handler = handler
        self.active = True
        self.consumer: Consumer | None = None
        self._bus = bus

    def cancel(self) -> None:
        self._bus._cancel(self)

    def __repr__(self) -> str:
        return f"<subscription {self.topic}/{self.group} active={self.active}>"


class RabbitMqBus(RepliesOverTopics):
    """Topics, consumer groups, retries and dead letters on a RabbitMQ broker; thread-safe.

    Topology, all durable, on a topic exchange (``exchange``): a queue per (topic, group)
    named ``<exchange>:<topic>:<group>`` bound with routing key ``<topic>``; beside it a
    dead-letter queue ``...:dead`` and, for each distinct retry delay, a queue
    ``...:retry<ms>`` whose messages expire after that delay back into the group's queue.
    Messages are persistent JSON with their id as AMQP ``message_id``.

    Connections: a pool for publishing, each lent to one calling thread at a time, which
    drives it until the broker confirms (kept alive while idle by a keeper thread);
    one for declarations and dead-letter reads, behind a lock; one per running
    subscription, with its own I/O thread and ``workers`` handler threads. All reconnect on
    their own, with backoff. ``stats`` is a :class:`~scalecore.busstats.BusStats`.
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.SHARED,
            Capability.DURABLE,
            Capability.DEAD_LETTER,
            Capability.REQUEST_REPLY,
        }
    )

    def __init__(
        self,
        *,
        url: str = _DEFAULT_URL,
        exchange: str = "scalecore",
        prefetch: int = 10,
        max_attempts: int = 5,
        retry_delays: Sequence[float] = (0.1, 0.5, 2.0),
        workers: int = 1,
        heartbeat: int = 60,
        connect_timeout: float = 10.0,
        publish_timeout: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        self._url = _check_url(url)
        self.exchange = _check_exchange(exchange)
        self.prefetch = check_int(prefetch, "prefetch", minimum=1, maximum=65535, error=ConfigError)
        self._policy = RetryPolicy.from_options(
            max_attempts=max_attempts, retry_delays=retry_delays
        )
        self.workers = check_int(workers, "workers", minimum=1, maximum=1024, error=ConfigError)
        self.heartbeat = check_int(
            heartbeat, "heartbeat", minimum=0, maximum=65535, error=ConfigError
        )
        self.connect_timeout = check_seconds(connect_timeout, "connect_timeout", error=ConfigError)
        self.publish_timeout = check_seconds(publish_timeout, "publish_timeout", error=ConfigError)
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigError(f"must be a Clock, not {type(clock).__name__}", key="clock")
        self._clock: Clock = clock or SystemClock()
        self._retry_ms = sorted({milliseconds(delay) for delay in self._policy.delays} - {0})
        self.stats = BusStats()
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._in_flight = 0
        self._running = False
        self._subscriptions: list[_RabbitMqSubscription] = []
        self._lingering: list[Consumer] = []  # stopped, perhaps still finishing handlers
        self._publisher: Publisher | None = None
        self._admin = Admin(self._blocking_connection)
        self._local = threading.local()
        self._reply_lock = threading.Lock()
        self._reply: tuple[str, Consumer] | None = None
        self._waiters: dict[str, ReplyWaiter] = {}

    @property
    def max_attempts(self) -> int:
        return self._policy.max_attempts

    @property
    def retry_delays(self) -> tuple[float, ...]:
        return self._policy.delays

    # -- connections --------------------------------------------------------------------

    def _parameters(self) -> pika.URLParameters:
        parameters = pika.URLParameters(self._url)
        parameters.heartbeat = self.heartbeat
        parameters.socket_timeout = self.connect_timeout
        parameters.stack_timeout = self.connect_timeout
        parameters.connection_attempts = 1  # we retry ourselves, with backoff
        parameters.client_properties = {"connection_name": "scalecore-bus"}
        return parameters

    def _blocking_connection(self) -> BlockingConnection:
        return BlockingConnection(self._parameters())

    def _get_publisher(self) -> Publisher:
        with self._lock:
            publisher = self._publisher
            # A forked child (a pre-forking web server) inherits the parent's publishing
            # connections and not the keeper thread: it opens its own. The pid is checked
            # first: a lock a parent's thread held at the fork is never released in the child.
            if publisher is None or publisher.pid != os.getpid() or publisher.closed:
                publisher = self._publisher = Publisher(
                    self._parameters, self.exchange, heartbeat=self.heartbeat
                )
            return publisher

    def _send(self, items: list[Outgoing]) -> None:
        self._get_publisher().send(items, self.publish_timeout)

    # -- names and topology -------------------------------------------------------------

    def _queue_name(self, *parts: str) -> str:
        # ':' cannot occur in a topic, group or exchange name, so names never collide.
        name = ":".join((self.exchange, *parts))
        if len(name) > _MAX_QUEUE_NAME:
            # Long names (three 120-character parts) are cut, and a digest keeps them apart.
            digest = hashlib.sha256(name.encode("ascii")).hexdigest()[:16]
            name = f"{name[: _MAX_QUEUE_NAME - len(digest) - 1]}~{digest}"
        return name

    def _main_queue(self, topic: str, group: str) -> str:
        return self._queue_name(topic, group)

    def _dead_queue(self, topic: str, group: str) -> str:
        return self._queue_name(topic, group, "dead")

    def _retry_queue(self, topic: str, group: str, delay_ms: int) -> str:
        return self._queue_name(topic, group, f"retry{delay_ms}")

    def _declare_group(self, channel: BlockingChannel, topic: str, group: str) -> None:
        main = self._main_queue(topic, group)
        channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
        channel.queue_declare(main, durable=True)
        channel.queue_bind(main, self.exchange, routing_key=topic)
        channel.queue_declare(self._dead_queue(topic, group), durable=True)
        for delay_ms in self._retry_ms:
            channel.queue_declare(
                self._retry_queue(topic, group, delay_ms),
                durable=True,
                arguments={
                    "x-message-ttl": delay_ms,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": main,
                },
            )

    # -- publishing ---------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: JSONValue,
        *,
        message_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Publish to ``topic`` and return once RabbitMQ has confirmed the message.

        Raises ``InvalidInput`` (publishing nothing) for a bad topic, payload, id or header,
        and ``BackendUnavailable`` when no confirm comes within ``publish_timeout`` seconds
        (reconnections included) or the broker refuses the message. A topic without groups
        drops the message, as the port says.
        """
        validate_name(topic)
        envelope = self._envelope(topic, payload, message_id, headers)
        self._publish([envelope])
        return envelope.to_message()

    def publish_many(self, topic: str, payloads: list[JSONValue]) -> list[Message]:
        """Publish every payload, checking them all first; one bad payload publishes none.

        The messages go out together and their confirms are awaited together.
        """
        validate_name(topic)
        if not isinstance(payloads, list | tuple):
            raise InvalidInput(f"payloads must be a list, not {type(payloads).__name__}")
        envelopes = [self._envelope(topic, payload, None, None) for payload in payloads]
        self._publish(envelopes)
        return [envelope.to_message() for envelope in envelopes]

    def _envelope(
        self,
        topic: str,
        payload: object,
        message_id: str | None,
        headers: Mapping[str, str] | None,
    ) -> Envelope:
        return Envelope(
            topic=topic,
            id=uuid.uuid4().hex if message_id is None else check_message_id(message_id),
            body=encode_payload(payload),
            published_at=self._clock.now(),
            headers=tuple(outgoing_headers(headers).items()),
        )

    def _publish(self, envelopes: list[Envelope], *, expiration_ms: int | None = None) -> None:
        if not envelopes:
            return
        items = [
            Outgoing(
                self.exchange,
                envelope.topic,
                envelope.body.encode("ascii"),
                properties_for(
                    envelope.id,
                    envelope.published_at,
                    dict(envelope.headers),
                    expiration_ms=expiration_ms,
                ),
            )
            for envelope in envelopes
        ]
        self._send(items)
        self.stats.record_published(envelopes[0].topic, len(envelopes))

    # -- queues and subscriptions -------------------------------------------------------

    def declare(self, topic: str, group: str) -> None:
        """Create the durable queues of (topic, group) if missing. Idempotent.

        Raises ``BackendUnavailable`` if the broker cannot be reached.
        """
        validate_name(topic)
        validate_name(group, "group")
        self._admin.run(
            lambda channel: self._declare_group(channel, topic, group),
            f"declaring {topic}/{group}",
        )

    def subscribe(self, topic: str, group: str, handler: Handler) -> Subscription:
        """Declare (topic, group) and attach ``handler``; deliveries start with the bus.

        Raises ``BackendUnavailable`` if the queue cannot be declared. On a running bus the
        new consumer is connected (or ``connect_timeout`` has passed) when this returns.
        """
        validate_name(topic)
        validate_name(group, "group")
        if not callable(handler):
            raise InvalidInput(f"handler must be callable, not {type(handler).__name__}")
        self.declare(topic, group)
        subscription = _RabbitMqSubscription(self, topic, group, handler)
        with self._lock:
            self._subscriptions.append(subscription)
            consumer = self._spawn(subscription) if self._running else None
        if consumer is not None:
            self._await_ready([consumer])
        return subscription

    def _spawn(self, subscription: _RabbitMqSubscription) -> Consumer:
        """Start a consumer for ``subscription``. Lock held."""
        topic, group = subscription.topic, subscription.group
        consumer = Consumer(
            self,
            topic=topic,
            group=group,
            queue_name=self._main_queue(topic, group),
            declare=lambda channel: self._declare_group(channel, topic, group),
            handler=subscription.handler,
            retrying=True,
            workers=self.workers,
        )
        subscription.consumer = consumer
        consumer.start()
        return consumer

    def _await_ready(self, consumers: list[Consumer]) -> None:
        deadline = time.monotonic() + self.connect_timeout
        for consumer in consumers:
            if not consumer.ready.wait(max(0.0, deadline - time.monotonic())):
                logger.warning(
                    "bus consumer not connected yet, still trying: topic=%s group=%s",
                    consumer.topic,
                    consumer.group,
                )

    def _cancel(self, subscription: _RabbitMqSubscription) -> None:
        with self._lock:
            if not subscription.active:
                return
            subscription.active = False
            self._subscriptions.remove(subscription)
            consumer, subscription.consumer = subscription.consumer, None
            if consumer is not None:
                self._linger(consumer)
        if consumer is not None:
            consumer.request_stop()

    def _linger(self, consumer: Consumer) -> None:
        """Keep a stopping consumer so close() can abandon it. Lock held."""
        self._lingering = [old for old in self._lingering if old.alive()]
        self._lingering.append(consumer)

    # -- running ------------------------------------------------------------------------

    def start(self) -> None:
        """Start consuming every subscription. Idempotent.

        Returns once each consumer is connected, or after ``connect_timeout`` seconds if the
        broker is unreachable; consumers not yet connected keep trying in the background.
        """
        with self._lock:
            if self._running:
                return
            self._running = True
            consumers = [self._spawn(subscription) for subscription in self._subscriptions]
        self._await_ready(consumers)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop consuming and wait up to ``timeout`` seconds for handlers in flight.

        Messages not yet handled go back to their queues. A handler still running when the
        timeout passes finishes on its thread and its outcome counts. Handlers running in
        the calling thread (stop called from a handler) are not waited for. Idempotent.
        """
        deadline = time.monotonic() + check_seconds(timeout, "timeout", allow_zero=True)
        own: int = getattr(self._local, "handling", 0)
        with self._lock:
            self._running = False
            consumers = []
            for subscription in self._subscriptions:
                if subscription.consumer is not None:
                    consumers.append(subscription.consumer)
                    self._linger(subscription.consumer)
                    subscription.consumer = None
        for consumer in consumers:
            consumer.request_stop()
        with self._lock:
            while self._in_flight > own:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._settled.wait(remaining)
        if own == 0:  # from inside a handler, our own consumer waits for us: do not join it
            for consumer in consumers:
                consumer.join(deadline)

    def _handling(self, change: int) -> None:
        with self._lock:
            self._in_flight += change
            self._settled.notify_all()

    def close(self) -> None:
        """Stop (waiting up to 10 s for handlers) and close every connection. Idempotent.

        The bus can be used again afterwards: it reconnects on demand.
        """
        self.stop()
        with self._lock:
            consumers, self._lingering = self._lingering, []
            publisher, self._publisher = self._publisher, None
        with self._reply_lock:
            if self._reply is not None:
                consumers.append(self._reply[1])
                self._reply = None
        for consumer in consumers:
            consumer.abandon()
        deadline = time.monotonic() + 5.0
        for consumer in consumers:
            consumer.join(deadline)
        # One wait for the broker to agree to close, shared by every connection.
        deadline = time.monotonic() + CLOSE_WAIT
        if publisher is not None:
            publisher.close(deadline)
        self._admin.close(deadline)

    def ping(self) -> None:
        """Raise ``BackendUnavailable`` unless the broker answers (and accepts the exchange)."""
        self._admin.run(
            lambda channel: channel.exchange_declare(
                self.exchange, exchange_type="topic", durable=True
            ),
            "pinging",
        )

    def delete_group(self, topic: str, group: str) -> None:
        """Delete the queues of (topic, group), messages and dead letters included.

        For retiring a group: a durable queue nobody consumes keeps every message published
        to its topic. Not on the port. Idempotent.
        """
        validate_name(topic)
        validate_name(group, "group")

        def delete(channel: BlockingChannel) -> None:
            names = [self._main_queue(topic, group), self._dead_queue(topic, group)]
            names += [self._retry_queue(topic, group, delay) for delay in self._retry_ms]
            for name in names:
                channel.queue_delete(name)

        self._admin.run(delete, f"deleting {topic}/{group}")

    # -- dead letters -------------------------------------------------------------------

    def depth(self, topic: str, group: str) -> QueueDepth:
        """Messages in the queue of (topic, group) and its retry queues (``ready``), and in
        its dead-letter queue (``dead``), as the broker counts them; unacknowledged
        deliveries are not counted."""
        validate_name(topic)
        validate_name(group, "group")
        ready_queues = [self._main_queue(topic, group)]
        ready_queues += [self._retry_queue(topic, group, delay) for delay in self._retry_ms]
        dead_queue = self._dead_queue(topic, group)

        def count(name: str) -> int:
            # One operation per queue: a missing queue closes the channel it was asked on.
            return self._admin.run(
                lambda channel: message_count(channel, name), f"counting the messages of {name}"
            )

        return QueueDepth(ready=sum(count(name) for name in ready_queues), dead=count(dead_queue))

    def dead_letters(self, topic: str, group: str) -> list[Message]:
        """The dead letters of (topic, group), oldest first, each with its last attempt.

        Reads them from the dead-letter queue and hands them straight back (they are
        unacknowledged, then requeued), so a concurrent reader in another process may see
        fewer. Messages no scalecore bus wrote are left out.
        """
        validate_name(topic)
        validate_name(group, "group")
        dead = self._dead_queue(topic, group)

        def read(channel: BlockingChannel) -> list[Message]:
            if not queue_exists(channel, dead):
                return []
            messages: list[Message] = []
            try:
                while True:
                    method, properties, body = channel.basic_get(dead, auto_ack=False)
                    if method is None or properties is None:
                        break
                    with contextlib.suppress(Undecodable):
                        messages.append(decode(topic, properties, body))
            finally:
                if channel.is_open:
                    channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
            return messages

        return self._admin.run(read, f"reading the dead letters of {topic}/{group}")

    def replay_dead_letters(self, topic: str, group: str) -> int:
        """Move the dead letters of (topic, group) back to its queue; return how many.

        They keep their ids and start again at attempt 1. Each is removed from the dead
        letters only once the broker has confirmed its copy, so a failure part-way leaves
        the rest in place (and may replay some twice). Raises ``BackendUnavailable`` then.
        """
        validate_name(topic)
        validate_name(group, "group")
        dead = self._dead_queue(topic, group)
        main = self._main_queue(topic, group)

        def replay(channel: BlockingChannel) -> int:
            if not queue_exists(channel, dead):
                return 0
            # Only what is there now: replayed messages that fail again come back here.
            count = channel.queue_declare(dead, passive=True).method.message_count
            taken: list[tuple[int, Outgoing]] = []
            try:
                for _ in range(count):
                    method, properties, body = channel.basic_get(dead, auto_ack=False)
                    if method is None or properties is None:
                        break
                    copy_ = Outgoing.internal(main, body or b"", copy_properties(properties, 1))
                    taken.append((method.delivery_tag, copy_))
                if taken:
                    self._send([item for _tag, item in taken])
                    channel.basic_ack(delivery_tag=taken[-1][0], multiple=True)
            except BaseException:
                if channel.is_open:
                    with contextlib.suppress(*PIKA_ERRORS):
                        channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
                raise
            return len(taken)

        return self._admin.run(
            replay, f"replaying the dead letters of {topic}/{group}", retry=False
        )

    # -- request / reply ----------------------------------------------------------------

    def request(self, topic: str, payload: JSONValue, *, timeout: float = 5.0) -> JSONValue:
        """Publish a request to ``topic`` and return the responder's result.

        Raises ``BackendUnavailable`` when no reply arrives within ``timeout`` seconds (no
        responder running, broker down) and when the responder raised (the message then
        carries its exception type and text). The request expires from the responders'
        queue after ``timeout``, so a late responder does not work for nobody. Works from
        inside a handler, and whether or not this bus is started.
        """
        validate_name(topic)
        wait = check_seconds(timeout, "timeout", allow_zero=True)
        began = time.monotonic()
        envelope = self._envelope(topic, payload, None, None)  # refuse a bad payload first
        reply_topic = self._reply_topic()
        correlation_id = uuid.uuid4().hex
        envelope = attrs.evolve(
            envelope,
            headers=((REPLY_TO_HEADER, reply_topic), (CORRELATION_ID_HEADER, correlation_id)),
        )
        waiter = ReplyWaiter()
        with self._lock:
            self._waiters[correlation_id] = waiter
        try:
            self._publish([envelope], expiration_ms=max(1, milliseconds(wait)))
            remaining = wait - (time.monotonic() - began)
            if not waiter.done.wait(max(0.0, remaining)):
                raise BackendUnavailable(f"no reply to a request on {topic!r} within {timeout} s")
        finally:
            with self._lock:
                self._waiters.pop(correlation_id, None)
        return unpack_reply(topic, waiter.reply)

    def _reply_topic(self) -> str:
        """This bus's private reply topic, with its consumer running; created on first use."""
        with self._reply_lock:
            if self._reply is None:
                topic = f"rpc-reply.{uuid.uuid4().hex}"
                name = self._queue_name(topic, _REPLY_GROUP)

                def declare(channel: BlockingChannel) -> None:
                    # Exclusive: it lives and dies with the consumer's connection, and is
                    # declared again (same name) after a reconnection.
                    channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
                    channel.queue_declare(name, exclusive=True, auto_delete=True)
                    channel.queue_bind(name, self.exchange, routing_key=topic)

                consumer = Consumer(
                    self,
                    topic=topic,
                    group=_REPLY_GROUP,
                    queue_name=name,
                    declare=declare,
                    handler=self._on_reply,
                    retrying=False,
                    workers=1,
                )
                consumer.start()
                if not consumer.ready.wait(self.connect_timeout):
                    consumer.abandon()
                    raise BackendUnavailable(
                        f"could not set up a reply queue within {self.connect_timeout:g} s"
                    )
                self._reply = (topic, consumer)
            return self._reply[0]

    def _on_reply(self, message: Message) -> None:
        correlation_id = message.headers.get(CORRELATION_ID_HEADER, "")
        with self._lock:
            waiter = self._waiters.get(correlation_id)
        if waiter is not None:  # else the requester gave up; a late reply is dropped
            waiter.reply = message.payload
            waiter.done.set()
