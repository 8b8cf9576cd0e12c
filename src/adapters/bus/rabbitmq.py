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
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import logging
import os
import queue
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Final, Literal, TypeVar

import attrs
import pika
import pika.exceptions
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.adapters.select_connection import IOLoop, SelectConnection

from adapters.bus import (
    CORRELATION_ID_HEADER,
    REPLY_TO_HEADER,
    RepliesOverTopics,
    ReplyWaiter,
    check_message_id,
    decode_payload,
    encode_payload,
    outgoing_headers,
    unpack_reply,
)
from scalecore import propagation
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
from scalecore.validate import check_int, check_seconds, is_int

__all__ = ["RabbitMqBus"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Delivery attempt of a message, an AMQP integer.
ATTEMPT_HEADER: Final = "x-scalecore-attempt"
#: ``published_at`` as ``repr(float)``: the AMQP timestamp property has whole seconds only.
PUBLISHED_AT_HEADER: Final = "x-scalecore-published-at"
#: Marks an internal mandatory publish, so a Basic.Return can be matched to it.
MARK_HEADER: Final = "x-scalecore-publish-mark"
_INTERNAL_HEADERS: Final = frozenset({ATTEMPT_HEADER, PUBLISHED_AT_HEADER, MARK_HEADER})
#: Headers the broker adds when it dead-letters a message (our retry queues do).
_BROKER_HEADER_PREFIXES: Final = ("x-death", "x-first-death-", "x-last-death-")

_DEFAULT_URL: Final = "amqp://guest:guest@127.0.0.1:5672/%2F"
_MAX_QUEUE_NAME: Final = 255  # AMQP short string
_PERSISTENT: Final = 2
_REPLY_GROUP: Final = "replies"
#: Longest a consumer's I/O loop sleeps before looking at its stop flag again. Stops and
#: acks wake it at once through add_callback_threadsafe; this is only the safety net.
_POLL: Final = 0.5
#: Reconnection backoff: first delay, and the ceiling the doubling stops at.
_BACKOFF_FIRST: Final = 0.1
_BACKOFF_CAP: Final = 2.0

#: Every exception pika raises for a broker, connection or protocol problem.
_PIKA_ERRORS: Final = (pika.exceptions.AMQPError, pika.exceptions.ChannelError, OSError)


# -- errors, in one place ---------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    """A short, password-free description of a pika or socket failure."""
    if isinstance(exc, pika.exceptions.ConnectionClosed | pika.exceptions.ChannelClosed):
        return f"{type(exc).__name__}: {exc.reply_code} {exc.reply_text}"
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"


def _unavailable(exc: BaseException, doing: str) -> BackendUnavailable:
    return BackendUnavailable(f"RabbitMQ failed while {doing}: {_describe(exc)}")


def _is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, pika.exceptions.ChannelClosedByBroker) and exc.reply_code == 404


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


# -- wire format --------------------------------------------------------------------------


class _Undecodable(Exception):
    """A delivery that no handler can be given (not written by a scalecore bus)."""


def _properties(
    message_id: str,
    published_at: float,
    headers: Mapping[str, str],
    *,
    expiration_ms: int | None = None,
) -> pika.BasicProperties:
    table: dict[str, object] = dict(headers)
    table[ATTEMPT_HEADER] = 1
    table[PUBLISHED_AT_HEADER] = repr(published_at)
    return pika.BasicProperties(
        content_type="application/json",
        delivery_mode=_PERSISTENT,
        message_id=message_id,
        timestamp=int(published_at),
        headers=table,
        expiration=None if expiration_ms is None else str(expiration_ms),
    )


def _copy_properties(properties: pika.BasicProperties, attempt: int) -> pika.BasicProperties:
    """The properties of a message as re-published for ``attempt``, broker headers dropped."""
    headers = {
        name: value
        for name, value in (properties.headers or {}).items()
        if name != MARK_HEADER and not name.startswith(_BROKER_HEADER_PREFIXES)
    }
    headers[ATTEMPT_HEADER] = attempt
    result = copy.copy(properties)
    result.headers = headers
    return result


def _attempt_of(properties: pika.BasicProperties) -> int:
    attempt = (properties.headers or {}).get(ATTEMPT_HEADER)
    if not is_int(attempt) or attempt < 1:
        return 1
    return attempt


def _decode(topic: str, properties: pika.BasicProperties, body: bytes | None) -> Message:
    """The message a handler gets; ``_Undecodable`` if the delivery is not one of ours."""
    message_id = properties.message_id
    if not isinstance(message_id, str) or not message_id:
        raise _Undecodable("it has no message id")
    headers = properties.headers or {}
    try:
        payload = decode_payload(body or b"")
    except ValueError as exc:
        raise _Undecodable("its body is not JSON") from exc
    published = headers.get(PUBLISHED_AT_HEADER)
    try:
        published_at = float(published) if isinstance(published, str) else None
    except ValueError:
        published_at = None
    if published_at is None:
        published_at = float(properties.timestamp or 0)
    return Message(
        topic=topic,
        payload=payload,
        id=message_id,
        attempt=_attempt_of(properties),
        published_at=published_at,
        headers={
            name: value
            for name, value in headers.items()
            if isinstance(value, str)
            and name not in _INTERNAL_HEADERS
            and not name.startswith(_BROKER_HEADER_PREFIXES)
        },
    )


@attrs.frozen
class _Envelope:
    """A message checked and serialised for publishing, not yet sent."""

    topic: str
    id: str
    body: str
    published_at: float
    headers: tuple[tuple[str, str], ...]

    def to_message(self) -> Message:
        return Message(
            topic=self.topic,
            payload=decode_payload(self.body),
            id=self.id,
            attempt=1,
            published_at=self.published_at,
            headers=dict(self.headers),
        )


# -- reconnection backoff ------------------------------------------------------------------


class _Backoff:
    """Doubling delays with jitter, from 0.1 s up to 2 s, so a fleet does not reconnect in step."""

    def __init__(self) -> None:
        self._next = _BACKOFF_FIRST

    def next(self) -> float:
        delay = self._next * random.uniform(0.8, 1.2)
        self._next = min(self._next * 2, _BACKOFF_CAP)
        return delay

    def reset(self) -> None:
        self._next = _BACKOFF_FIRST


# -- publishing: one connection, one I/O thread ----------------------------------------------


class _Batch:
    """Messages one caller waits for; settled from the publisher's I/O thread."""

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.error: str | None = None
        self.cancelled = False  # the caller gave up: skip what is not sent yet
        self.done = threading.Event()

    def settle(self, error: str | None) -> None:
        if self.done.is_set():
            return
        if error is not None:
            self.error = error
            self.cancelled = True
            self.done.set()
            return
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set()


@attrs.define(eq=False)
class _Outgoing:
    """One message to publish. ``mandatory`` ones carry a token to match a Basic.Return."""

    exchange: str
    routing_key: str
    body: bytes
    properties: pika.BasicProperties
    mandatory: bool = False
    batch: _Batch | None = None
    returned: bool = False

    @classmethod
    def internal(cls, queue: str, body: bytes, properties: pika.BasicProperties) -> _Outgoing:
        """A message for one queue by name (default exchange), refused if the queue is gone."""
        properties.headers = dict(properties.headers or {})
        properties.headers[MARK_HEADER] = uuid.uuid4().hex
        return cls("", queue, body, properties, mandatory=True)

    @property
    def token(self) -> str | None:
        if not self.mandatory:
            return None
        token = (self.properties.headers or {}).get(MARK_HEADER)
        return token if isinstance(token, str) else None


class _Publisher:
    """Publishes with confirms on one connection owned by a dedicated I/O thread.

    Callers hand messages over through a locked inbox and ``add_callback_threadsafe``; only
    the I/O thread touches pika. Every message stays in hand until the broker confirms it:
    when the connection or channel drops, the unconfirmed ones go back to the front of the
    queue and are sent again on the next connection (so a message may arrive twice, never
    zero times once confirmed). Confirms for a batch arrive as they come, ``multiple`` ones
    included, so a bulk publish waits for roughly one round trip, not one per message.
    """

    def __init__(self, parameters: Callable[[], pika.URLParameters], exchange: str) -> None:
        self._parameters = parameters
        self._exchange = exchange
        self._lock = threading.Lock()
        self._inbox: deque[_Outgoing] = deque()
        self._closed = False
        self._ioloop = IOLoop()
        # Everything below is touched by the I/O thread only.
        self._connection: SelectConnection | None = None
        self._channel: Any = None  # pika.channel.Channel once open in confirm mode
        self._ready = False
        self._closing = False
        self._outbox: deque[_Outgoing] = deque()
        self._unconfirmed: dict[int, _Outgoing] = {}
        self._by_token: dict[str, _Outgoing] = {}
        self._next_tag = 1
        self._backoff = _Backoff()
        self.last_error = "not connected yet"
        self.pid = os.getpid()
        self._thread = threading.Thread(
            target=self._run, name="rabbitmq-bus:publisher", daemon=True
        )
        self._thread.start()

    @property
    def closed(self) -> bool:
        with self._lock:
            return self._closed

    # -- caller side ----------------------------------------------------------------------

    def send(self, items: list[_Outgoing], timeout: float) -> None:
        """Return once the broker has confirmed every item; raise ``BackendUnavailable``
        if one is refused, returned as unroutable, or not confirmed within ``timeout``."""
        if not items:
            return
        batch = _Batch(len(items))
        for item in items:
            item.batch = batch
        with self._lock:
            if self._closed:
                raise BackendUnavailable("the bus's publisher is closed")
            self._inbox.extend(items)
            self._ioloop.add_callback_threadsafe(self._take_inbox)
        if not batch.done.wait(timeout):
            batch.cancelled = True
            raise BackendUnavailable(
                f"RabbitMQ did not confirm the message within {timeout:g} s "
                f"(last problem: {self.last_error}); it may or may not have been published"
            )
        if batch.error is not None:
            raise BackendUnavailable(batch.error)

    def close(self, timeout: float = 5.0) -> None:
        """Fail whatever is still waiting, close the connection, end the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._ioloop.add_callback_threadsafe(self._shutdown)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # -- I/O thread ---------------------------------------------------------------------

    def _run(self) -> None:
        self._ioloop.add_callback_threadsafe(self._connect)
        try:
            self._ioloop.start()
        except Exception:  # a bug in a callback: fail the waiters rather than hang them
            logger.exception("the bus publisher's I/O loop failed")
        finally:
            with self._lock:
                self._closed = True
                left = list(self._inbox)
                self._inbox.clear()
            left += list(self._outbox) + list(self._unconfirmed.values())
            self._fail_all(left, "the bus's publisher was closed")
            self._ioloop.close()

    def _take_inbox(self) -> None:
        with self._lock:
            items = list(self._inbox)
            self._inbox.clear()
        if self._closing:
            self._fail_all(items, "the bus's publisher was closed")
            return
        self._outbox.extend(items)
        self._flush()

    def _connect(self) -> None:
        if self._closing:
            return
        try:
            self._connection = SelectConnection(
                self._parameters(),
                on_open_callback=self._on_open,
                on_open_error_callback=self._on_open_error,
                on_close_callback=self._on_closed,
                custom_ioloop=self._ioloop,
            )
        except _PIKA_ERRORS as exc:
            self._lost(exc)

    def _on_open(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: Any) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.exchange_declare(
            exchange=self._exchange,
            exchange_type="topic",
            durable=True,
            callback=lambda _frame: channel.confirm_delivery(
                ack_nack_callback=self._on_confirm, callback=self._on_confirm_mode
            ),
        )

    def _on_confirm_mode(self, _frame: Any) -> None:
        self._next_tag = 1  # delivery tags restart at 1 on every channel
        self._ready = True
        self._backoff.reset()
        self._flush()

    def _on_open_error(self, _connection: Any, exc: BaseException) -> None:
        self._connection = None
        self._lost(exc)

    def _on_closed(self, _connection: Any, exc: BaseException) -> None:
        self._connection = None
        self._channel_gone()
        self._lost(exc)

    def _on_channel_closed(self, channel: Any, exc: BaseException) -> None:
        if channel is not self._channel:
            return
        self._channel_gone()
        self.last_error = _describe(exc)
        connection = self._connection
        if self._closing or connection is None or not connection.is_open:
            return  # _on_closed follows and reconnects
        logger.warning("bus publisher channel closed (%s); reopening", self.last_error)
        self._ioloop.call_later(self._backoff.next(), self._reopen_channel)

    def _reopen_channel(self) -> None:
        connection = self._connection
        if self._closing or self._channel is not None or connection is None:
            return
        try:
            connection.channel(on_open_callback=self._on_channel_open)
        except _PIKA_ERRORS as exc:
            self.last_error = _describe(exc)  # the connection is going; _on_closed follows

    def _channel_gone(self) -> None:
        """Put every unconfirmed message back at the front of the queue, oldest first."""
        self._ready = False
        self._channel = None
        pending = list(self._unconfirmed.values())
        self._unconfirmed.clear()
        self._by_token.clear()
        for item in pending:
            item.returned = False
        self._outbox.extendleft(reversed(pending))

    def _lost(self, exc: BaseException) -> None:
        self.last_error = _describe(exc)
        if self._closing:
            self._ioloop.stop()
            return
        delay = self._backoff.next()
        logger.warning(
            "bus publisher lost RabbitMQ (%s); reconnecting in %.1f s", self.last_error, delay
        )
        self._ioloop.call_later(delay, self._connect)

    def _flush(self) -> None:
        while self._ready and self._outbox:
            item = self._outbox.popleft()
            if item.batch is not None and item.batch.cancelled:
                continue
            try:
                self._channel.basic_publish(
                    item.exchange,
                    item.routing_key,
                    item.body,
                    item.properties,
                    mandatory=item.mandatory,
                )
            except _PIKA_ERRORS as exc:
                # The channel is closing under us; its close callback requeues the rest.
                self.last_error = _describe(exc)
                self._outbox.appendleft(item)
                return
            self._unconfirmed[self._next_tag] = item
            token = item.token
            if token is not None:
                self._by_token[token] = item
            self._next_tag += 1

    def _on_return(self, _channel: Any, _method: Any, properties: Any, _body: bytes) -> None:
        # RabbitMQ sends Basic.Return before the Basic.Ack of the same message.
        token = (properties.headers or {}).get(MARK_HEADER)
        item = self._by_token.get(token) if isinstance(token, str) else None
        if item is not None:
            item.returned = True

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        if method.multiple:
            tags = list(
                itertools.takewhile(lambda tag: tag <= method.delivery_tag, self._unconfirmed)
            )
        else:
            tags = [method.delivery_tag] if method.delivery_tag in self._unconfirmed else []
        for tag in tags:
            item = self._unconfirmed.pop(tag)
            token = item.token
            if token is not None:
                self._by_token.pop(token, None)
            if item.batch is None:
                continue
            if not acked:
                item.batch.settle("RabbitMQ refused (nacked) the message")
            elif item.returned:
                item.batch.settle(f"RabbitMQ has no queue {item.routing_key!r} to route to")
            else:
                item.batch.settle(None)

    def _shutdown(self) -> None:
        self._closing = True
        self._fail_all(list(self._outbox) + list(self._unconfirmed.values()), "the bus was closed")
        self._outbox.clear()
        self._unconfirmed.clear()
        connection = self._connection
        if connection is not None and not (connection.is_closed or connection.is_closing):
            try:
                connection.close()  # _on_closed (or _on_open_error) stops the loop
            except _PIKA_ERRORS:
                self._ioloop.stop()
                return
            # Belt and braces: a close that never completes must not keep the thread.
            self._ioloop.call_later(2.0, self._ioloop.stop)
        else:
            self._ioloop.stop()

    @staticmethod
    def _fail_all(items: list[_Outgoing], error: str) -> None:
        for item in items:
            if item.batch is not None:
                item.batch.settle(error)


# -- administration: a blocking connection behind a lock -----------------------------------


class _Admin:
    """Declarations, dead-letter reads and pings on one lock-guarded blocking connection.

    An idle connection may have been dropped by the broker (missed heartbeats, restart):
    an idempotent operation is retried once on a fresh connection before it fails.
    """

    def __init__(self, connect: Callable[[], BlockingConnection]) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._pid = os.getpid()

    def run(
        self, operation: Callable[[BlockingChannel], T], doing: str, *, retry: bool = True
    ) -> T:
        with self._lock:
            for attempt in (1, 2):
                try:
                    return operation(self._open_channel())
                except pika.exceptions.ChannelClosedByBroker as exc:
                    # The broker refused the operation itself: trying again would not help.
                    self._channel = None
                    raise _unavailable(exc, doing) from exc
                except _PIKA_ERRORS as exc:
                    self._reset()
                    if attempt == 2 or not retry:
                        raise _unavailable(exc, doing) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _open_channel(self) -> BlockingChannel:
        if self._pid != os.getpid():  # forked: the socket belongs to the parent
            self._connection = self._channel = None
            self._pid = os.getpid()
        if self._connection is None or not self._connection.is_open:
            self._reset()
            self._connection = self._connect()
        if self._channel is None or not self._channel.is_open:
            self._channel = self._connection.channel()
        return self._channel

    def _reset(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        _close_quietly(connection)

    def close(self) -> None:
        with self._lock:
            self._reset()


def _close_quietly(connection: BlockingConnection | None) -> None:
    if connection is not None and connection.is_open:
        with contextlib.suppress(*_PIKA_ERRORS):
            connection.close()


# -- consuming: per subscription, one I/O thread and its handler threads ---------------------


@attrs.frozen(eq=False)
class _Delivery:
    channel: BlockingChannel
    tag: int
    properties: pika.BasicProperties
    body: bytes


_Action = Literal["ack", "requeue", "reject"]


class _Consumer:
    """Consumes one queue on its own connection; handlers run on ``workers`` threads.

    Only the I/O thread touches the connection: handler threads queue their ack (or nack)
    and wake it with ``add_callback_threadsafe``. An ack is applied only on the channel the
    message came from: after a reconnection the broker redelivers instead. A stop lets the
    handlers already running finish and applies their acks before the connection closes
    (which returns every other unacknowledged message to the queue); ``abandon`` closes at
    once.
    """

    def __init__(
        self,
        bus: RabbitMqBus,
        *,
        topic: str,
        group: str,
        queue_name: str,
        declare: Callable[[BlockingChannel], None],
        handler: Handler,
        retrying: bool,
        workers: int,
    ) -> None:
        self.topic = topic
        self.group = group
        self.queue_name = queue_name
        self.ready = threading.Event()
        self._bus = bus
        self._declare = declare
        self._handler = handler
        self._retrying = retrying
        self._stopping = threading.Event()
        self._abandoned = threading.Event()
        self._lock = threading.Lock()
        self._busy = 0
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._actions: deque[tuple[_Delivery, _Action]] = deque()
        self._deliveries: queue.SimpleQueue[_Delivery | None] = queue.SimpleQueue()
        self._backoff = _Backoff()
        name = f"rabbitmq-bus:{topic}/{group}"
        self._threads = [threading.Thread(target=self._run, name=name, daemon=True)]
        self._threads += [
            threading.Thread(target=self._work, name=f"{name}#{index}", daemon=True)
            for index in range(workers)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def request_stop(self) -> None:
        """Take no new delivery; finish the ones being handled, then disconnect."""
        self._stopping.set()
        self._wake()

    def abandon(self) -> None:
        """Disconnect now; messages being handled will be redelivered."""
        self._abandoned.set()
        self.request_stop()

    def join(self, deadline: float) -> None:
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current and thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))

    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def _wake(self) -> None:
        with self._lock:
            connection = self._connection
        if connection is not None:
            with contextlib.suppress(*_PIKA_ERRORS):
                connection.add_callback_threadsafe(_nothing)

    # -- I/O thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    self._session()
                    return
                except _PIKA_ERRORS as exc:
                    if self._stopping.is_set():
                        return
                    delay = self._backoff.next()
                    logger.warning(
                        "bus consumer lost RabbitMQ: topic=%s group=%s (%s); retrying in %.1f s",
                        self.topic,
                        self.group,
                        _describe(exc),
                        delay,
                    )
                if self._stopping.wait(delay):
                    return
        finally:
            for _ in self._threads[1:]:
                self._deliveries.put(None)

    def _session(self) -> None:
        connection = self._bus._blocking_connection()
        try:
            channel = connection.channel()
            channel.basic_qos(prefetch_count=self._bus.prefetch)
            self._declare(channel)
            cancelled: list[object] = []  # the broker cancels a consumer whose queue is deleted
            channel.add_on_cancel_callback(cancelled.append)
            with self._lock:  # before consuming, so no delivery looks stale to a worker
                self._connection, self._channel = connection, channel
            consumer_tag = channel.basic_consume(self.queue_name, self._on_message, auto_ack=False)
            self.ready.set()
            self._backoff.reset()
            while not self._stopping.is_set():
                connection.process_data_events(time_limit=_POLL)
                self._apply_actions()
                if cancelled:  # reconnect, which declares the queue again
                    raise pika.exceptions.ConsumerCancelled(f"queue {self.queue_name} is gone")
            if not self._abandoned.is_set():
                channel.basic_cancel(consumer_tag)
                while not self._abandoned.is_set() and self._busy_count():
                    connection.process_data_events(time_limit=_POLL)
                    self._apply_actions()
                self._apply_actions()
        finally:
            with self._lock:
                self._connection = self._channel = None
            _close_quietly(connection)

    def _busy_count(self) -> int:
        with self._lock:
            return self._busy

    def _on_message(
        self,
        channel: BlockingChannel,
        method: pika.spec.Basic.Deliver,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        self._deliveries.put(_Delivery(channel, method.delivery_tag, properties, body))

    def _apply_actions(self) -> None:
        while True:
            with self._lock:
                if not self._actions:
                    return
                delivery, action = self._actions.popleft()
                current = self._channel
            if current is None or delivery.channel is not current or not current.is_open:
                continue  # from an earlier connection: the broker redelivers it
            if action == "ack":
                current.basic_ack(delivery.tag)
            else:
                current.basic_nack(delivery.tag, requeue=action == "requeue")

    def _post(self, delivery: _Delivery, action: _Action) -> None:
        with self._lock:
            self._actions.append((delivery, action))
        self._wake()

    # -- handler threads ----------------------------------------------------------------

    def _work(self) -> None:
        while True:
            delivery = self._deliveries.get()
            if delivery is None:
                return
            # Counted before the check, so a stop() that sets the flag first then waits
            # for the count cannot miss a handler about to start.
            self._bus._handling(+1)
            with self._lock:
                skip = self._stopping.is_set() or delivery.channel is not self._channel
                if not skip:
                    self._busy += 1
            if skip:  # left unacknowledged: back to the queue when the channel closes
                self._bus._handling(-1)
                continue
            try:
                self._process(delivery)
            finally:
                with self._lock:
                    self._busy -= 1
                self._bus._handling(-1)
                self._wake()

    def _process(self, delivery: _Delivery) -> None:
        try:
            message = _decode(self.topic, delivery.properties, delivery.body)
        except _Undecodable as exc:
            logger.error(
                "bus dropped a message no scalecore bus wrote (%s): topic=%s group=%s",
                exc,
                self.topic,
                self.group,
            )
            self._post(delivery, "reject")
            return
        failed = True
        local = self._bus._local
        local.handling = getattr(local, "handling", 0) + 1
        # The message's request id (and trace context) is current for the handler's lines.
        scope = propagation.handling(message)
        scope.__enter__()
        try:
            self._handler(message)
            failed = False
        except Exception:
            # The payload may hold personal data: log where the message is, never what.
            logger.warning(
                "bus handler failed: topic=%s group=%s message_id=%s attempt=%d/%d",
                self.topic,
                self.group,
                message.id,
                message.attempt,
                self._bus.max_attempts,
                exc_info=True,
            )
        finally:
            # Also reached on BaseException (a dying worker): the message is then retried.
            local.handling -= 1
            self._settle(delivery, message, failed=failed)
            scope.__exit__(None, None, None)

    def _settle(self, delivery: _Delivery, message: Message, *, failed: bool) -> None:
        if not failed or not self._retrying:
            self._post(delivery, "ack")
            self._bus.stats.record_handled(self.topic, self.group, "ok")
            return
        bus = self._bus
        dead = bus._policy.exhausted(message.attempt)
        if dead:
            target, attempt = bus._dead_queue(self.topic, self.group), message.attempt
        else:
            delay_ms = _milliseconds(bus._policy.delay_for(message.attempt))
            target = (
                bus._retry_queue(self.topic, self.group, delay_ms)
                if delay_ms
                else bus._main_queue(self.topic, self.group)
            )
            attempt = message.attempt + 1
        outgoing = _Outgoing.internal(
            target, delivery.body, _copy_properties(delivery.properties, attempt)
        )
        try:
            bus._send([outgoing])
        except BackendUnavailable as exc:
            # Not moved: hand it back to the queue as it is, to be delivered again.
            logger.warning(
                "bus could not schedule a retry, requeueing: topic=%s group=%s message_id=%s (%s)",
                self.topic,
                self.group,
                message.id,
                exc,
            )
            self._post(delivery, "requeue")
            bus.stats.record_handled(self.topic, self.group, "retry")
            return
        self._post(delivery, "ack")
        bus.stats.record_handled(self.topic, self.group, "dead" if dead else "retry")
        if dead:
            logger.error(
                "bus message dead-lettered after %d attempts: topic=%s group=%s message_id=%s",
                message.attempt,
                self.topic,
                self.group,
                message.id,
            )


def _nothing() -> None:
    """Scheduled only to wake a consumer's I/O loop."""


def _milliseconds(seconds: float) -> int:
    return round(seconds * 1000)


# -- the adapter --------------------------------------------------------------------------


class _RabbitMqSubscription(Subscription):
    def __init__(self, bus: RabbitMqBus, topic: str, group: str, handler: Handler) -> None:
        self.topic = topic
        self.group = group
        self.handler = handler
        self.active = True
        self.consumer: _Consumer | None = None
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

    Connections: one for publishing, owned by an I/O thread (publisher confirms, batched);
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
        self._retry_ms = sorted({_milliseconds(delay) for delay in self._policy.delays} - {0})
        self.stats = BusStats()
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._in_flight = 0
        self._running = False
        self._subscriptions: list[_RabbitMqSubscription] = []
        self._lingering: list[_Consumer] = []  # stopped, perhaps still finishing handlers
        self._publisher: _Publisher | None = None
        self._admin = _Admin(self._blocking_connection)
        self._local = threading.local()
        self._reply_lock = threading.Lock()
        self._reply: tuple[str, _Consumer] | None = None
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

    def _get_publisher(self) -> _Publisher:
        with self._lock:
            publisher = self._publisher
            # A forked child (a pre-forking web server) inherits the parent's publisher
            # without its thread: it gets its own.
            if publisher is None or publisher.closed or publisher.pid != os.getpid():
                publisher = self._publisher = _Publisher(self._parameters, self.exchange)
            return publisher

    def _send(self, items: list[_Outgoing]) -> None:
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
    ) -> _Envelope:
        return _Envelope(
            topic=topic,
            id=uuid.uuid4().hex if message_id is None else check_message_id(message_id),
            body=encode_payload(payload),
            published_at=self._clock.now(),
            headers=tuple(outgoing_headers(headers).items()),
        )

    def _publish(self, envelopes: list[_Envelope], *, expiration_ms: int | None = None) -> None:
        if not envelopes:
            return
        items = [
            _Outgoing(
                self.exchange,
                envelope.topic,
                envelope.body.encode("ascii"),
                _properties(
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

    def _spawn(self, subscription: _RabbitMqSubscription) -> _Consumer:
        """Start a consumer for ``subscription``. Lock held."""
        topic, group = subscription.topic, subscription.group
        consumer = _Consumer(
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

    def _await_ready(self, consumers: list[_Consumer]) -> None:
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

    def _linger(self, consumer: _Consumer) -> None:
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
        if publisher is not None:
            publisher.close()
        self._admin.close()

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
                lambda channel: _message_count(channel, name), f"counting the messages of {name}"
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
            if not _queue_exists(channel, dead):
                return []
            messages: list[Message] = []
            try:
                while True:
                    method, properties, body = channel.basic_get(dead, auto_ack=False)
                    if method is None or properties is None:
                        break
                    with contextlib.suppress(_Undecodable):
                        messages.append(_decode(topic, properties, body))
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
            if not _queue_exists(channel, dead):
                return 0
            # Only what is there now: replayed messages that fail again come back here.
            count = channel.queue_declare(dead, passive=True).method.message_count
            taken: list[tuple[int, _Outgoing]] = []
            try:
                for _ in range(count):
                    method, properties, body = channel.basic_get(dead, auto_ack=False)
                    if method is None or properties is None:
                        break
                    copy_ = _Outgoing.internal(main, body or b"", _copy_properties(properties, 1))
                    taken.append((method.delivery_tag, copy_))
                if taken:
                    self._send([item for _tag, item in taken])
                    channel.basic_ack(delivery_tag=taken[-1][0], multiple=True)
            except BaseException:
                if channel.is_open:
                    with contextlib.suppress(*_PIKA_ERRORS):
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
            self._publish([envelope], expiration_ms=max(1, _milliseconds(wait)))
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

                consumer = _Consumer(
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


def _queue_exists(channel: BlockingChannel, name: str) -> bool:
    """Whether queue ``name`` exists; a missing one closes ``channel`` (the admin reopens it)."""
    try:
        channel.queue_declare(name, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if _is_not_found(exc):
            return False
        raise
    return True


def _message_count(channel: BlockingChannel, name: str) -> int:
    """Messages ready in queue ``name``; 0 if it does not exist (which closes ``channel``:
    the admin reopens it)."""
    try:
        return int(channel.queue_declare(name, passive=True).method.message_count)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if _is_not_found(exc):
            return 0
        raise
