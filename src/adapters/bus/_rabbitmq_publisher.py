"""Publishing for :mod:`adapters.bus.rabbitmq`: publisher confirms on connections driven by
the publishing thread itself, unconfirmed messages sent again after a reconnection. Private to
that adapter."""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import attrs
import pika
import pika.spec
from pika.adapters.select_connection import IOLoop, SelectConnection

from adapters.bus._rabbitmq_connection import CLOSE_WAIT, PIKA_ERRORS, Backoff, describe
from adapters.bus._rabbitmq_wire import MARK_HEADER
from scalecore.errors import BackendUnavailable

logger = logging.getLogger("adapters.bus.rabbitmq")  # one logger for the whole adapter

#: Seconds an idle publishing connection is kept, beyond the most recently used one.
IDLE_CLOSE: Final = 120.0
#: Seconds between the keeper's rounds when heartbeats are off (``heartbeat = 0``).
_TEND_WITHOUT_HEARTBEATS: Final = 15.0

#: Seconds a connection whose broker does not answer the close is still driven on a daemon
#: thread, waiting for the answer or for the missed heartbeats to end it.
_LINGER: Final = 300.0


class Batch:
    """The messages of one ``send``: settled as their confirms arrive."""

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.error: str | None = None
        self.done = False
        self.cancelled = False  # the caller gave up: skip what is not sent yet

    def settle(self, error: str | None) -> None:
        if self.done:
            return
        if error is not None:
            self.error = error
            self.done = self.cancelled = True
            return
        self.remaining -= 1
        self.done = self.remaining == 0


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
    """Publishes with confirms from the calling thread, on a pool of connections.

    ``send`` takes an idle :class:`Link` (or opens one), publishes on it and drives its I/O
    on the calling thread until the broker has confirmed every message: no hand-off to
    another thread and back, so a confirmed publish costs what bare pika's does. Threads
    publishing at the same time use different links, so the pool grows to the most threads
    that published at once; links beyond the most recently used one close after
    ``IDLE_CLOSE`` seconds without use, so it shrinks again after a burst.

    A keeper thread tends the idle links every quarter heartbeat (15 s without heartbeats):
    heartbeats go out and come in, and a link whose connection dropped meanwhile (a broker
    restart) is closed and left out, so the next publish opens a fresh one. A link whose
    send failed or timed out is not reused either. Each link has a lock: whoever drives it
    (a sender, the keeper) holds it, so a link is never driven by two threads at once.
    """

    def __init__(
        self, parameters: Callable[[], pika.URLParameters], exchange: str, *, heartbeat: int
    ) -> None:
        self._parameters = parameters
        self._exchange = exchange
        self._tend_every = heartbeat / 4 if heartbeat > 0 else _TEND_WITHOUT_HEARTBEATS
        self._lock = threading.Lock()
        self._idle: list[Link] = []  # most recently used last
        self._busy: set[Link] = set()
        self._closed = False
        self._keeper: threading.Thread | None = None
        self._stopping = threading.Event()
        self.pid = os.getpid()

    @property
    def closed(self) -> bool:
        with self._lock:
            return self._closed

    @property
    def connections(self) -> int:
        """Links open or opening, idle and busy."""
        with self._lock:
            return len(self._idle) + len(self._busy)

    def send(self, items: list[Outgoing], timeout: float) -> None:
        """Return once the broker has confirmed every item; raise ``BackendUnavailable``
        if one is refused, returned as unroutable, or not confirmed within ``timeout``
        seconds (reconnections included)."""
        if not items:
            return
        deadline = time.monotonic() + timeout
        link = self._take()
        try:
            link.send(items, deadline, timeout)
        finally:
            self._give_back(link)

    def close(self, deadline: float) -> None:
        """Close the idle links (waiting for the broker until ``deadline`` at most, then
        finishing on a daemon thread) and the busy ones as their sends return; stop the
        keeper. Idempotent; a send after this raises ``BackendUnavailable``."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            keeper = self._keeper
        self._stopping.set()
        for link in idle:  # all at once: a broker that does not answer costs one wait
            with link.driver:
                link.begin_close()
        for link in idle:
            with link.driver:
                link.finish_close(deadline)
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(max(0.0, deadline - time.monotonic()))

    def _take(self) -> Link:
        with self._lock:
            if self._closed:
                raise BackendUnavailable("the bus's publisher is closed")
            link = self._idle.pop() if self._idle else None
            if link is not None:
                self._busy.add(link)
        if link is None:
            try:
                link = Link(self._parameters, self._exchange)  # connects outside the lock
            except OSError as exc:  # no file descriptors left, say
                raise BackendUnavailable(
                    f"cannot open a connection to RabbitMQ: {describe(exc)}"
                ) from exc
            with self._lock:
                self._busy.add(link)
                if self._keeper is None:
                    self._keeper = threading.Thread(
                        target=self._keep, name="rabbitmq-bus:publish-keeper", daemon=True
                    )
                    self._keeper.start()
        link.driver.acquire()  # the keeper may be tending it: that takes no time
        return link

    def _give_back(self, link: Link) -> None:
        link.driver.release()
        with self._lock:
            self._busy.discard(link)
            # A link whose send timed out may sit on a half-open connection: not reused.
            keep = not link.failed and not self._closed and not link.closed
            if keep:
                self._idle.append(link)
        if not keep:
            _retire(link)

    def _keep(self) -> None:
        while not self._stopping.wait(self._tend_every):
            with self._lock:
                idle = list(self._idle)
            now = time.monotonic()
            for position, link in enumerate(reversed(idle)):  # most recently used first
                if not link.driver.acquire(blocking=False):
                    continue  # a sender has it
                try:
                    surplus = position > 0 and now - link.last_used > IDLE_CLOSE
                    if not surplus:
                        link.tend()
                    if surplus or link.closed or not link.ready:
                        with self._lock:
                            if link not in self._idle:
                                continue  # a sender took it meanwhile: it copes
                            self._idle.remove(link)
                        link.close(CLOSE_WAIT)
                finally:
                    link.driver.release()


def _retire(link: Link) -> None:
    """Close a link on a daemon thread: the sender that gave it back does not wait."""
    if link.closed:
        return

    def close() -> None:
        with link.driver:
            link.close(CLOSE_WAIT)

    threading.Thread(target=close, name="rabbitmq-bus:publisher-close", daemon=True).start()


class Link:
    """One connection and confirm-mode channel, driven by whichever thread is sending on it.

    Not thread-safe: the :class:`Publisher` lends a link to one thread at a time. Every
    message stays in hand until the broker confirms it: when the connection or channel drops,
    the unconfirmed ones go back to the front of the queue and are sent again on the next
    connection (so a message may arrive twice, never zero times once confirmed). Confirms for
    a batch arrive as they come, ``multiple`` ones included, so a bulk publish waits for
    roughly one round trip, not one per message.
    """

    def __init__(self, parameters: Callable[[], pika.URLParameters], exchange: str) -> None:
        self._parameters = parameters
        self._exchange = exchange
        self._ioloop = IOLoop()
        self._ioloop.activate_poller()
        self._connection: SelectConnection | None = None
        self._channel: Any = None  # pika.channel.Channel once open in confirm mode
        self._ready = False
        self._channel_opening = False
        self._closing = False
        self.closed = False
        self.failed = False  # a send timed out on it
        #: Held by whoever drives this link: a sender, the keeper, a closer.
        self.driver = threading.Lock()
        self._outbox: deque[Outgoing] = deque()
        self._unconfirmed: dict[int, Outgoing] = {}
        self._by_token: dict[str, Outgoing] = {}
        self._next_tag = 1
        self._backoff = Backoff()
        self.last_error = "not connected yet"
        self.last_used = time.monotonic()
        self._connect()

    # -- the sending thread's side ----------------------------------------------------------

    def send(self, items: list[Outgoing], deadline: float, timeout: float) -> None:
        """Publish ``items`` and drive this link until all are confirmed or ``deadline``."""
        batch = Batch(len(items))
        for item in items:
            item.batch = batch
        self._outbox.extend(items)
        self._flush()
        try:
            self._drive(lambda: batch.done, deadline)
        except Exception as exc:  # a bug in a pika callback: retire this link, fail the send
            logger.exception("the bus publisher's I/O failed")
            self._abandon()
            batch.settle(f"the bus's publisher failed: {describe(exc)}")
        finally:
            self.last_used = time.monotonic()
        if not batch.done:
            batch.cancelled = True
            self.failed = True
            raise BackendUnavailable(
                f"RabbitMQ did not confirm the message within {timeout:g} s "
                f"(last problem: {self.last_error}); it may or may not have been published"
            )
        if batch.error is not None:
            raise BackendUnavailable(batch.error)

    @property
    def ready(self) -> bool:
        """Whether the channel is open in confirm mode, so a send goes out at once."""
        return self._ready

    def tend(self) -> None:
        """Do what is due without waiting: read what arrived, send heartbeats, reconnect."""
        try:
            wake = self._ioloop.call_later(0, _nothing)
            try:
                self._ioloop.poll()
                self._ioloop.process_timeouts()
            finally:
                self._ioloop.remove_timeout(wake)
        except Exception:  # a bug in a pika callback: retire this link
            logger.exception("the bus publisher's I/O failed")
            self._abandon()

    def close(self, timeout: float) -> None:
        """Fail whatever is still waiting and close the connection, waiting at most
        ``timeout`` seconds for the broker to agree. Idempotent."""
        self.begin_close()
        self.finish_close(time.monotonic() + timeout)

    def begin_close(self) -> None:
        """Fail whatever is still waiting and ask the broker to close the connection."""
        if self.closed or self._closing:
            return
        self._closing = True
        self._fail_all(list(self._outbox) + list(self._unconfirmed.values()), "the bus was closed")
        self._outbox.clear()
        self._unconfirmed.clear()
        connection = self._connection
        if connection is not None and not (connection.is_closed or connection.is_closing):
            try:
                connection.close()  # _on_closed clears self._connection
            except PIKA_ERRORS:
                self._connection = None

    def finish_close(self, deadline: float) -> None:
        """Wait until ``deadline`` at most for the close to complete, then release the loop."""
        if self.closed:
            return
        self.begin_close()
        try:
            self._drive(lambda: self._connection is None, deadline)
        except Exception:  # closing anyway
            logger.exception("the bus publisher's I/O failed while closing")
        if self._connection is None:
            self._abandon()
            return
        # The broker has not answered: finish on a daemon thread, which the missed heartbeats
        # end at the latest, rather than holding the caller or dropping an open socket.
        self.closed = True
        threading.Thread(
            target=self._linger, name="rabbitmq-bus:publisher-close", daemon=True
        ).start()

    def _linger(self) -> None:
        try:
            self._drive(lambda: self._connection is None, time.monotonic() + _LINGER)
        except Exception:  # closing anyway
            logger.exception("the bus publisher's I/O failed while closing")
        self._abandon()

    def _abandon(self) -> None:
        """Release the loop and its sockets without talking to the broker any more."""
        self.closed = self._closing = True
        self._connection = self._channel = None
        self._ready = False
        self._ioloop.close()

    def _drive(self, done: Callable[[], bool], deadline: float) -> None:
        if done():
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        # The loop waits for I/O until its next timer: this one bounds the wait.
        wake = self._ioloop.call_later(remaining, _nothing)
        try:
            while not done() and time.monotonic() < deadline:
                self._ioloop.poll()
                self._ioloop.process_timeouts()
        finally:
            self._ioloop.remove_timeout(wake)

    # -- pika callbacks, run while a sender drives the link -------------------------------

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
        self._open_channel(connection)

    def _open_channel(self, connection: Any) -> None:
        self._channel_opening = True
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: Any) -> None:
        self._channel_opening = False
        if self._closing or channel.connection is not self._connection:
            channel.close()  # opened for a connection since replaced: never a second one
            return
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.exchange_declare(
            exchange=self._exchange,
            exchange_type="topic",
            durable=True,
            callback=functools.partial(self._on_declared, channel),
        )

    def _on_declared(self, channel: Any, _frame: Any) -> None:
        if channel is not self._channel or not channel.is_open:
            return  # closed meanwhile: its close callback has taken over
        channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_confirm_mode)

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
        self._ioloop.call_later(
            self._backoff.next(), functools.partial(self._reopen_channel, connection)
        )

    def _reopen_channel(self, connection: Any) -> None:
        if (
            self._closing
            or connection is not self._connection  # the connection was replaced meanwhile
            or self._channel is not None
            or self._channel_opening
            or connection is None
            or not connection.is_open
        ):
            return
        try:
            self._open_channel(connection)
        except PIKA_ERRORS as exc:
            self.last_error = describe(exc)  # the connection is going; _on_closed follows

    def _channel_gone(self) -> None:
        """Put every unconfirmed message back at the front of the queue, oldest first."""
        self._ready = False
        self._channel = None
        self._channel_opening = False
        pending = list(self._unconfirmed.values())
        self._unconfirmed.clear()
        self._by_token.clear()
        for item in pending:
            item.returned = False
        self._outbox.extendleft(reversed(pending))

    def _lost(self, exc: BaseException) -> None:
        self.last_error = describe(exc)
        if self._closing:
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

    @staticmethod
    def _fail_all(items: list[Outgoing], error: str) -> None:
        for item in items:
            if item.batch is not None:
                item.batch.settle(error)


def _nothing() -> None:
    """A timer callback whose only job is to end the loop's wait."""
