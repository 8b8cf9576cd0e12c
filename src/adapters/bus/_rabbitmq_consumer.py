"""Consuming for :mod:`adapters.bus.rabbitmq`: per subscription, one connection and I/O
thread plus its handler threads; acks, retries and dead letters. Private to that adapter."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Literal

import attrs
import pika
import pika.exceptions
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from adapters.bus._rabbitmq_connection import PIKA_ERRORS, Backoff, close_quietly, describe
from adapters.bus._rabbitmq_publisher import Outgoing
from adapters.bus._rabbitmq_wire import Undecodable, copy_properties, decode, milliseconds
from scalecore import propagation
from scalecore.errors import BackendUnavailable
from scalecore.ports.bus import Handler, Message

if TYPE_CHECKING:  # the bus imports this module
    from adapters.bus.rabbitmq import RabbitMqBus


logger = logging.getLogger("adapters.bus.rabbitmq")  # one logger for the whole adapter

#: Longest a consumer's I/O loop sleeps before looking at its stop flag again. Stops and
#: acks wake it at once through add_callback_threadsafe; this is only the safety net.
_POLL: Final = 0.5


# -- consuming: per subscription, one I/O thread and its handler threads ---------------------


@attrs.frozen(eq=False)
class Delivery:
    channel: BlockingChannel
    tag: int
    properties: pika.BasicProperties
    body: bytes


Action = Literal["ack", "requeue", "reject"]


class Consumer:
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
        self._actions: deque[tuple[Delivery, Action]] = deque()
        self._deliveries: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()
        self._backoff = Backoff()
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
            with contextlib.suppress(*PIKA_ERRORS):
                connection.add_callback_threadsafe(_nothing)

    # -- I/O thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    self._session()
                    return
                except PIKA_ERRORS as exc:
                    if self._stopping.is_set():
                        return
                    delay = self._backoff.next()
                    logger.warning(
                        "bus consumer lost RabbitMQ: topic=%s group=%s (%s); retrying in %.1f s",
                        self.topic,
                        self.group,
                        describe(exc),
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
            close_quietly(connection)

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
        self._deliveries.put(Delivery(channel, method.delivery_tag, properties, body))

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

    def _post(self, delivery: Delivery, action: Action) -> None:
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

    def _process(self, delivery: Delivery) -> None:
        try:
            message = decode(self.topic, delivery.properties, delivery.body)
        except Undecodable as exc:
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

    def _settle(self, delivery: Delivery, message: Message, *, failed: bool) -> None:
        if not failed or not self._retrying:
            self._post(delivery, "ack")
            self._bus.stats.record_handled(self.topic, self.group, "ok")
            return
        bus = self._bus
        dead = bus._policy.exhausted(message.attempt)
        if dead:
            target, attempt = bus._dead_queue(self.topic, self.group), message.attempt
        else:
            delay_ms = milliseconds(bus._policy.delay_for(message.attempt))
            target = (
                bus._retry_queue(self.topic, self.group, delay_ms)
                if delay_ms
                else bus._main_queue(self.topic, self.group)
            )
            attempt = message.attempt + 1
        outgoing = Outgoing.internal(
            target, delivery.body, copy_properties(delivery.properties, attempt)
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
