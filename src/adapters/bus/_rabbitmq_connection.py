"""RabbitMQ connections for :mod:`adapters.bus.rabbitmq`: pika's failures described and
translated in one place, reconnection backoff, and the lock-guarded administration connection
(declarations, queue counts, dead-letter reads, pings). Private to that adapter."""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Final, TypeVar

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from scalecore.errors import BackendUnavailable

T = TypeVar("T")

#: Reconnection backoff: first delay, and the ceiling the doubling stops at.
_BACKOFF_FIRST: Final = 0.1
_BACKOFF_CAP: Final = 2.0

#: Seconds a connection being closed may wait for the broker to agree.
CLOSE_WAIT: Final = 2.0

#: Every exception pika raises for a broker, connection or protocol problem.
PIKA_ERRORS: Final = (pika.exceptions.AMQPError, pika.exceptions.ChannelError, OSError)


# -- errors, in one place ---------------------------------------------------------------


def describe(exc: BaseException) -> str:
    """A short, password-free description of a pika or socket failure."""
    if isinstance(exc, pika.exceptions.ConnectionClosed | pika.exceptions.ChannelClosed):
        return f"{type(exc).__name__}: {exc.reply_code} {exc.reply_text}"
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"


def unavailable(exc: BaseException, doing: str) -> BackendUnavailable:
    return BackendUnavailable(f"RabbitMQ failed while {doing}: {describe(exc)}")


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, pika.exceptions.ChannelClosedByBroker) and exc.reply_code == 404


# -- reconnection backoff ------------------------------------------------------------------


class Backoff:
    """Doubling delays with jitter, from 0.1 s up to 2 s, so a fleet does not reconnect in step."""

    def __init__(self) -> None:
        self._next = _BACKOFF_FIRST

    def next(self) -> float:
        delay = self._next * random.uniform(0.8, 1.2)
        self._next = min(self._next * 2, _BACKOFF_CAP)
        return delay

    def reset(self) -> None:
        self._next = _BACKOFF_FIRST


# -- administration: a blocking connection behind a lock -----------------------------------


class Admin:
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
                    raise unavailable(exc, doing) from exc
                except PIKA_ERRORS as exc:
                    self._reset()
                    if attempt == 2 or not retry:
                        raise unavailable(exc, doing) from exc
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
        close_quietly(connection)

    def close(self, deadline: float | None = None) -> None:
        """Close the connection, waiting until ``deadline`` (default: ``CLOSE_WAIT`` from
        now) at most: a broker that does not answer (frozen, or cut off without a reset) is
        left to finish the close on a daemon thread, so shutting down never hangs on it."""
        if deadline is None:
            deadline = time.monotonic() + CLOSE_WAIT
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return  # an operation is stuck on the broker; its connection dies with the process
        try:
            connection, self._connection, self._channel = self._connection, None, None
            forked = self._pid != os.getpid()
        finally:
            self._lock.release()
        if connection is None or forked or not connection.is_open:
            return  # a forked child must not close the parent's socket: it only forgets it
        closer = threading.Thread(
            target=close_quietly, args=(connection,), name="rabbitmq-bus:admin-close", daemon=True
        )
        closer.start()
        closer.join(max(0.0, deadline - time.monotonic()))


def close_quietly(connection: BlockingConnection | None) -> None:
    if connection is not None and connection.is_open:
        with contextlib.suppress(*PIKA_ERRORS):
            connection.close()


def queue_exists(channel: BlockingChannel, name: str) -> bool:
    """Whether queue ``name`` exists; a missing one closes ``channel`` (the admin reopens it)."""
    try:
        channel.queue_declare(name, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if is_not_found(exc):
            return False
        raise
    return True


def message_count(channel: BlockingChannel, name: str) -> int:
    """Messages ready in queue ``name``; 0 if it does not exist (which closes ``channel``:
    the admin reopens it)."""
    try:
        return int(channel.queue_declare(name, passive=True).method.message_count)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if is_not_found(exc):
            return 0
        raise
