"""A bus inside one process, with a broker's delivery semantics.

Backend: "inprocess"
Install extra: none
Options:
    mode: "threaded" (default) delivers on worker threads; "sync" delivers inline in the
        thread that publishes (or starts, subscribes, replays, drains), for tests of
        application code.
    max_attempts: deliveries per message and group before it is dead-lettered (default 5).
    retry_delays: seconds to wait before each redelivery, the last one repeating
        (default [0.1, 0.5, 2.0]). Not waited for in sync mode: retries there are immediate.
    workers: threads per subscription in threaded mode (default 1); ignored in sync mode.
    clock: time source for retry due times and ``published_at`` (injected; SystemClock).
Differs from the port: not SHARED and not DURABLE: queues live in this process and are
    lost when it exits. Payloads are still serialised to JSON and back, so a handler gets
    its own copy, exactly as from a broker. A handler already running when its subscription
    is cancelled or the bus stops finishes, and its outcome counts (ack or retry). Internal
    reply topics for request/reply appear in ``stats`` like any topic.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

import attrs

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
from scalecore.ports.bus import Handler, Message, QueueDepth, Subscription, validate_name
from scalecore.retry import RetryPolicy
from scalecore.types import JSONValue
from scalecore.validate import check_int, check_seconds

__all__ = ["InProcessBus"]

logger = logging.getLogger(__name__)

_MODES = ("threaded", "sync")
#: Longest a worker waits before re-reading the clock while a retry is pending: a
#: ManualClock moves without waking anyone, so a due retry is noticed within this time.
_RETRY_POLL = 0.05
_REPLY_GROUP = "replies"


@attrs.frozen
class _Envelope:
    """One message as queued for one group: the payload stays JSON text until delivery."""

    topic: str
    id: str
    body: str
    attempt: int
    published_at: float
    headers: tuple[tuple[str, str], ...]

    def to_message(self) -> Message:
        return Message(
            topic=self.topic,
            payload=decode_payload(self.body),
            id=self.id,
            attempt=self.attempt,
            published_at=self.published_at,
            headers=dict(self.headers),
        )


class _Queue:
    """The queue of one (topic, group). Guarded by the bus lock."""

    def __init__(self, topic: str, group: str, lock: threading.Lock) -> None:
        self.topic = topic
        self.group = group
        self.ready: deque[_Envelope] = deque()
        self.delayed: list[tuple[float, int, _Envelope]] = []  # heap of (due, seq, envelope)
        self.dead: list[_Envelope] = []
        self.subscriptions: list[_InProcessSubscription] = []
        self.turn = 0  # round robin over subscriptions in sync mode
        self.wakeup = threading.Condition(lock)

    def pending(self) -> bool:
        return bool(self.ready or self.delayed)


class _InProcessSubscription(Subscription):
    def __init__(self, bus: InProcessBus, queue: _Queue, handler: Handler) -> None:
        self.topic = queue.topic
        self.group = queue.group
        self.handler = handler
        self.active = True
        self._bus = bus
        self._queue = queue

    @property
    def queue(self) -> _Queue:
        return self._queue

    def cancel(self) -> None:
        self._bus._cancel(self)

    def __repr__(self) -> str:
        return f"<subscription {self.topic}/{self.group} active={self.active}>"


class InProcessBus(RepliesOverTopics):
    """Topics, consumer groups, retries and dead letters in this process; thread-safe.

    ``stats`` (a :class:`~scalecore.busstats.BusStats`) counts messages published per topic
    and deliveries per (topic, group, outcome).
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.DEAD_LETTER, Capability.REQUEST_REPLY}
    )

    def __init__(
        self,
        *,
        mode: str = "threaded",
        max_attempts: int = 5,
        retry_delays: Sequence[float] = (0.1, 0.5, 2.0),
        workers: int = 1,
        clock: Clock | None = None,
    ) -> None:
        if mode not in _MODES:
            raise ConfigError(f"must be one of {', '.join(_MODES)}, got {mode!r}", key="mode")
        self._policy = RetryPolicy.from_options(
            max_attempts=max_attempts, retry_delays=retry_delays
        )
        check_int(workers, "workers", minimum=1, error=ConfigError)
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigError(f"must be a Clock, not {type(clock).__name__}", key="clock")
        self.mode = mode
        self.workers = workers
        self.stats = BusStats()
        self._sync = mode == "sync"
        self._clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        # Notified whenever a delivery settles, so stop() and drain() can wait on it.
        self._settled = threading.Condition(self._lock)
        self._queues: dict[str, dict[str, _Queue]] = {}
        self._running = False
        self._generation = 0  # bumped by start(); a worker of an older one exits
        self._threads: list[threading.Thread] = []
        self._in_flight = 0
        self._sequence = itertools.count()
        self._local = threading.local()
        self._waiters: dict[str, ReplyWaiter] = {}
        self._reply_lock = threading.Lock()
        self._reply_topic: str | None = None

    @property
    def max_attempts(self) -> int:
        return self._policy.max_attempts

    @property
    def retry_delays(self) -> tuple[float, ...]:
        return self._policy.delays

    # -- publishing -------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: JSONValue,
        *,
        message_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Queue ``payload`` for every group of ``topic``; in sync mode, deliver it first.

        Raises ``InvalidInput`` (and queues nothing) for a bad topic, payload, id or header.
        """
        validate_name(topic)
        envelope = self._envelope(topic, payload, message_id, headers)
        self._enqueue(topic, [envelope])
        self._pump()
        return envelope.to_message()

    def publish_many(self, topic: str, payloads: list[JSONValue]) -> list[Message]:
        """Queue every payload, or none: all are checked before any is queued."""
        validate_name(topic)
        if not isinstance(payloads, list | tuple):
            raise InvalidInput(f"payloads must be a list, not {type(payloads).__name__}")
        envelopes = [self._envelope(topic, payload, None, None) for payload in payloads]
        self._enqueue(topic, envelopes)
        self._pump()
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
            attempt=1,
            published_at=self._clock.now(),
            headers=tuple(outgoing_headers(headers).items()),
        )

    def _enqueue(self, topic: str, envelopes: list[_Envelope]) -> None:
        with self._lock:
            for queue in self._queues.get(topic, {}).values():
                queue.ready.extend(envelopes)
                queue.wakeup.notify(len(envelopes))
            self.stats.record_published(topic, len(envelopes))

    # -- queues and subscriptions -----------------------------------------------------

    def declare(self, topic: str, group: str) -> None:
        """Create the (topic, group) queue if missing. Idempotent."""
        validate_name(topic)
        validate_name(group, "group")
        with self._lock:
            self._queue(topic, group)

    def _queue(self, topic: str, group: str) -> _Queue:
        groups = self._queues.setdefault(topic, {})
        queue = groups.get(group)
        if queue is None:
            queue = groups[group] = _Queue(topic, group, self._lock)
        return queue

    def subscribe(self, topic: str, group: str, handler: Handler) -> Subscription:
        """Attach ``handler`` to (topic, group), declaring it; deliveries start with the bus."""
        validate_name(topic)
        validate_name(group, "group")
        if not callable(handler):
            raise InvalidInput(f"handler must be callable, not {type(handler).__name__}")
        subscription = self._attach(topic, group, handler)
        self._pump()
        return subscription

    def _attach(self, topic: str, group: str, handler: Handler) -> _InProcessSubscription:
        with self._lock:
            queue = self._queue(topic, group)
            subscription = _InProcessSubscription(self, queue, handler)
            queue.subscriptions.append(subscription)
            if self._running and not self._sync:
                self._spawn(subscription)
        return subscription

    def _cancel(self, subscription: _InProcessSubscription) -> None:
        with self._lock:
            if not subscription.active:
                return
            subscription.active = False
            subscription.queue.subscriptions.remove(subscription)
            subscription.queue.wakeup.notify_all()

    # -- running ----------------------------------------------------------------------

    def start(self) -> None:
        """Begin delivering; in sync mode, deliver what is queued before returning."""
        with self._lock:
            if not self._running:
                self._running = True
                self._generation += 1
                self._threads = [thread for thread in self._threads if thread.is_alive()]
                if not self._sync:
                    for groups in self._queues.values():
                        for queue in groups.values():
                            for subscription in queue.subscriptions:
                                self._spawn(subscription)
        self._pump()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop delivering and wait up to ``timeout`` seconds for handlers in flight.

        Queued messages stay queued for the next :meth:`start`. Handlers running in the
        calling thread (stop called from a handler) are not waited for. Idempotent.
        """
        deadline = time.monotonic() + check_seconds(timeout, "timeout", allow_zero=True)
        own = self._handling()
        current = threading.current_thread()
        with self._lock:
            self._running = False
            for groups in self._queues.values():
                for queue in groups.values():
                    queue.wakeup.notify_all()
            while self._in_flight > own:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._settled.wait(remaining)
            threads = [thread for thread in self._threads if thread is not current]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until no subscribed queue holds a message and no handler is running.

        Returns True when that is so, False after ``timeout`` seconds or at once if the bus
        is stopped while work remains. Queues without a subscription are not waited for
        (nothing could empty them). In sync mode this first delivers what is queued, in the
        calling thread; from inside a handler in sync mode it returns False at once (the
        delivery loop already running in this thread will carry on after the handler).
        """
        deadline = time.monotonic() + check_seconds(timeout, "timeout", allow_zero=True)
        if self._sync:
            if getattr(self._local, "pumping", False):
                return False
            self._pump()
        own = self._handling()
        with self._lock:
            while not self._idle(own):
                remaining = deadline - time.monotonic()
                if not self._running or remaining <= 0:
                    return False
                self._settled.wait(min(remaining, _RETRY_POLL))
            return True

    def _idle(self, own: int) -> bool:
        if self._in_flight > own:
            return False
        return not any(
            queue.subscriptions and queue.pending()
            for groups in self._queues.values()
            for queue in groups.values()
        )

    def _handling(self) -> int:
        handling: int = getattr(self._local, "handling", 0)
        return handling

    # -- delivery ---------------------------------------------------------------------

    def _spawn(self, subscription: _InProcessSubscription) -> None:
        # Called with the lock held; the new threads block on it until it is released.
        for index in range(self.workers):
            thread = threading.Thread(
                target=self._work,
                args=(subscription, self._generation),
                name=f"bus:{subscription.topic}/{subscription.group}#{index}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def _work(self, subscription: _InProcessSubscription, generation: int) -> None:
        queue = subscription.queue
        while True:
            with self._lock:
                while True:
                    if not (
                        self._running and self._generation == generation and subscription.active
                    ):
                        return
                    envelope = self._take(queue)
                    if envelope is not None:
                        break
                    queue.wakeup.wait(self._wait_time(queue))
                self._in_flight += 1
            self._deliver(queue, subscription, envelope)

    def _take(self, queue: _Queue) -> _Envelope | None:
        """Pop the next ready message, promoting retries that are due. Lock held."""
        if queue.delayed:
            now = self._clock.monotonic()
            while queue.delayed and queue.delayed[0][0] <= now:
                queue.ready.append(heapq.heappop(queue.delayed)[2])
        return queue.ready.popleft() if queue.ready else None

    def _wait_time(self, queue: _Queue) -> float | None:
        if not queue.delayed:
            return None
        due = queue.delayed[0][0] - self._clock.monotonic()
        return min(max(due, 0.001), _RETRY_POLL)

    def _pump(self, until: Callable[[], bool] | None = None) -> None:
        """Sync mode: deliver queued messages in this thread until none is deliverable.

        A handler that publishes only queues (this loop delivers it next), so chains of
        messages never deepen the stack. ``until`` (for request) may start a nested loop.
        """
        if not self._sync:
            return
        outer = getattr(self._local, "pumping", False)
        if outer and until is None:
            return
        self._local.pumping = True
        try:
            while until is None or not until():
                with self._lock:
                    if not self._running:
                        return
                    picked = self._pick()
                    if picked is None:
                        return
                    self._in_flight += 1
                self._deliver(*picked)
        finally:
            self._local.pumping = outer

    def _pick(self) -> tuple[_Queue, _InProcessSubscription, _Envelope] | None:
        """Sync mode: the next message and the subscription whose turn it is. Lock held."""
        for groups in self._queues.values():
            for queue in groups.values():
                if queue.ready and queue.subscriptions:
                    subscription = queue.subscriptions[queue.turn % len(queue.subscriptions)]
                    queue.turn += 1
                    return queue, subscription, queue.ready.popleft()
        return None

    def _deliver(
        self, queue: _Queue, subscription: _InProcessSubscription, envelope: _Envelope
    ) -> None:
        """Run the handler outside the lock, then ack, retry or dead-letter the message."""
        self._local.handling = self._handling() + 1
        failed = True
        message = envelope.to_message()
        # The message's request id (and trace context) is current for the handler's lines.
        scope = propagation.handling(message)
        scope.__enter__()
        try:
            subscription.handler(message)
            failed = False
        except Exception:
            # The payload may hold personal data: log where the message is, never what.
            logger.warning(
                "bus handler failed: topic=%s group=%s message_id=%s attempt=%d/%d",
                envelope.topic,
                queue.group,
                envelope.id,
                envelope.attempt,
                self._policy.max_attempts,
                exc_info=True,
            )
        finally:
            # Also reached on BaseException (a dying worker): the message is then retried.
            self._local.handling -= 1
            self._settle(queue, envelope, failed=failed)
            scope.__exit__(None, None, None)

    def _settle(self, queue: _Queue, envelope: _Envelope, *, failed: bool) -> None:
        dead = failed and self._policy.exhausted(envelope.attempt)
        with self._lock:
            self._in_flight -= 1
            if not failed:
                self.stats.record_handled(queue.topic, queue.group, "ok")
            elif dead:
                queue.dead.append(envelope)
                self.stats.record_handled(queue.topic, queue.group, "dead")
            else:
                retry = attrs.evolve(envelope, attempt=envelope.attempt + 1)
                if self._sync:
                    queue.ready.append(retry)
                else:
                    due = self._clock.monotonic() + self._policy.delay_for(envelope.attempt)
                    heapq.heappush(queue.delayed, (due, next(self._sequence), retry))
                queue.wakeup.notify()
                self.stats.record_handled(queue.topic, queue.group, "retry")
            self._settled.notify_all()
        if dead:
            logger.error(
                "bus message dead-lettered after %d attempts: topic=%s group=%s message_id=%s",
                envelope.attempt,
                queue.topic,
                queue.group,
                envelope.id,
            )

    # -- dead letters -----------------------------------------------------------------

    def depth(self, topic: str, group: str) -> QueueDepth:
        """Messages queued (ready or waiting to be retried) and dead, of (topic, group)."""
        validate_name(topic)
        validate_name(group, "group")
        with self._lock:
            queue = self._queues.get(topic, {}).get(group)
            if queue is None:
                return QueueDepth(ready=0, dead=0)
            return QueueDepth(ready=len(queue.ready) + len(queue.delayed), dead=len(queue.dead))

    def dead_letters(self, topic: str, group: str) -> list[Message]:
        """The dead letters of (topic, group), oldest first, each with its last attempt."""
        validate_name(topic)
        validate_name(group, "group")
        with self._lock:
            queue = self._queues.get(topic, {}).get(group)
            envelopes = list(queue.dead) if queue else []
        return [envelope.to_message() for envelope in envelopes]

    def replay_dead_letters(self, topic: str, group: str) -> int:
        """Requeue the dead letters of (topic, group) at attempt 1 with their ids; count them."""
        validate_name(topic)
        validate_name(group, "group")
        with self._lock:
            queue = self._queues.get(topic, {}).get(group)
            if queue is None or not queue.dead:
                return 0
            replayed = [attrs.evolve(envelope, attempt=1) for envelope in queue.dead]
            queue.dead.clear()
            queue.ready.extend(replayed)
            queue.wakeup.notify(len(replayed))
        self._pump()
        return len(replayed)

    # -- request / reply --------------------------------------------------------------

    def request(self, topic: str, payload: JSONValue, *, timeout: float = 5.0) -> JSONValue:
        """Publish a request to ``topic`` and return the responder's result.

        Raises ``BackendUnavailable`` when no reply arrives within ``timeout`` seconds (no
        responder, bus not started) and when the responder raised (the message then carries
        the responder's exception type and text). Works from inside a handler in both modes.
        """
        validate_name(topic)
        wait = check_seconds(timeout, "timeout", allow_zero=True)
        encode_payload(payload)  # refuse a bad payload before subscribing anything
        reply_topic = self._reply_subscription()
        correlation_id = uuid.uuid4().hex
        waiter = ReplyWaiter()
        with self._lock:
            self._waiters[correlation_id] = waiter
        try:
            self.publish(
                topic,
                payload,
                headers={REPLY_TO_HEADER: reply_topic, CORRELATION_ID_HEADER: correlation_id},
            )
            self._pump(until=waiter.done.is_set)  # sync mode, called from inside a handler
            if not waiter.done.wait(wait):
                raise BackendUnavailable(f"no reply to a request on {topic!r} within {timeout} s")
        finally:
            with self._lock:
                self._waiters.pop(correlation_id, None)
        return unpack_reply(topic, waiter.reply)

    def _reply_subscription(self) -> str:
        with self._reply_lock:
            if self._reply_topic is None:
                topic = f"rpc-reply.{uuid.uuid4().hex}"
                # _attach, not subscribe: subscribe may run handlers (sync mode), and one
                # that sends a request would wait for this lock forever.
                self._attach(topic, _REPLY_GROUP, self._on_reply)
                self._reply_topic = topic
            return self._reply_topic

    def _on_reply(self, message: Message) -> None:
        correlation_id = message.headers.get(CORRELATION_ID_HEADER, "")
        with self._lock:
            waiter = self._waiters.get(correlation_id)
        if waiter is not None:  # else the requester gave up; a late reply is dropped
            waiter.reply = message.payload
            waiter.done.set()
