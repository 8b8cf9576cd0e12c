"""Publishing for :mod:`adapters.bus.rabbitmq`: one connection owned by one I/O thread,
publisher confirms, unconfirmed messages sent again after a reconnection. Private to that
adapter."""

from __future__ import annotations

import itertools
import logging
import os
import threading
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
import pika
import pika.spec
from pika.adapters.select_connection import IOLoop, SelectConnection

from adapters.bus._rabbitmq_connection import PIKA_ERRORS, Backoff, describe
from adapters.bus._rabbitmq_wire import MARK_HEADER
from scalecore.errors import BackendUnavailable

logger = logging.getLogger("adapters.bus.rabbitmq")  # one logger for the whole adapter


# -- publishing: one connection, one I/O thread ----------------------------------------------


class Batch:
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
class Outgoing:
    """One message to publish. ``mandatory`` ones carry a token to match a Basic.Return."""

    exchange: str
    routing_key: str
    body: bytes
    properties: pika.BasicProperties
    mandatory: bool = False
    batch: Batch | None = None
    returned: bool = False

    @classmethod
    def internal(cls, queue: str, body: bytes, properties: pika.BasicProperties) -> Outgoing:
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


class Publisher:
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
        self._inbox: deque[Outgoing] = deque()
        self._closed = False
        self._ioloop = IOLoop()
        # Everything below is touched by the I/O thread only.
        self._connection: SelectConnection | None = None
        self._channel: Any = None  # pika.channel.Channel once open in confirm mode
        self._ready = False
        self._closing = False
        self._outbox: deque[Outgoing] = deque()
        self._unconfirmed: dict[int, Outgoing] = {}
        self._by_token: dict[str, Outgoing] = {}
        self._next_tag = 1
        self._backoff = Backoff()
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

    def send(self, items: list[Outgoing], timeout: float) -> None:
        """Return once the broker has confirmed every item; raise ``BackendUnavailable``
        if one is refused, returned as unroutable, or not confirmed within ``timeout``."""
        if not items:
            return
        batch = Batch(len(items))
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
        except PIKA_ERRORS as exc:
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
        self.last_error = describe(exc)
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
        except PIKA_ERRORS as exc:
            self.last_error = describe(exc)  # the connection is going; _on_closed follows

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
        self.last_error = describe(exc)
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
            except PIKA_ERRORS as exc:
                # The channel is closing under us; its close callback requeues the rest.
                self.last_error = describe(exc)
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
            except PIKA_ERRORS:
                self._ioloop.stop()
                return
            # Belt and braces: a close that never completes must not keep the thread.
            self._ioloop.call_later(2.0, self._ioloop.stop)
        else:
            self._ioloop.stop()

    @staticmethod
    def _fail_all(items: list[Outgoing], error: str) -> None:
        for item in items:
            if item.batch is not None:
                item.batch.settle(error)
