"""Single flight: concurrent callers asking for the same key in one process share one call.

When a cached value is missing, every thread that wants it would otherwise run the same
expensive loader at once (a thundering herd within one process). :class:`SingleFlight` lets
the first caller for a key run the function while later callers for that key wait and receive
the same result, or the same exception. Once the call returns, the key is free again: the next
caller starts a new call. Nothing is remembered between calls (it is not a cache), and no
per-key state outlives a call.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Hashable
from typing import Final, Generic, Literal, TypeVar, cast

__all__ = ["SKIPPED", "SingleFlight", "Skipped"]

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class Skipped(enum.Enum):
    """The type of :data:`SKIPPED`."""

    SKIPPED = "SKIPPED"

    def __bool__(self) -> Literal[False]:
        return False

    def __repr__(self) -> str:
        return "SKIPPED"


#: Returned by :meth:`SingleFlight.try_do` when a call for the key was already in flight.
SKIPPED: Final = Skipped.SKIPPED


class _Call:
    """One in-flight call: its leader thread, and its outcome once ``done`` is set."""

    __slots__ = ("done", "error", "leader", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.leader = threading.get_ident()
        self.value: object = None
        self.error: BaseException | None = None


class SingleFlight(Generic[K]):
    """Deduplicate concurrent calls per key within one process. Thread-safe.

    ``do(key, fn)``: if no call for ``key`` is in flight, run ``fn`` in the calling thread
    (the leader) and return its result; otherwise wait for the leader's call and return its
    result, or raise the exception it raised (the same exception object, in every follower).
    If the leader is interrupted by a ``BaseException`` that is not an ``Exception``
    (``KeyboardInterrupt``, ``SystemExit``), only the leader sees it; its followers start
    the call again. Calls for different keys never wait for each other.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[K, _Call] = {}

    def do(self, key: K, fn: Callable[[], T]) -> T:
        """Return ``fn()``, sharing one call with every concurrent caller for ``key``.

        Raises whatever ``fn`` raised; ``RuntimeError`` if the leader of ``key``'s call asks
        for ``key`` again from inside ``fn`` (that would wait for itself forever).
        """
        while True:
            with self._lock:
                call = self._calls.get(key)
                if call is None:
                    call = self._calls[key] = _Call()
                    leading = True
                else:
                    leading = False
            if leading:
                return self._lead(key, call, fn)
            if call.leader == threading.get_ident():
                raise RuntimeError(f"re-entrant single-flight call for key {key!r}")
            call.done.wait()
            if call.error is None:
                return cast(T, call.value)
            if isinstance(call.error, Exception):
                raise call.error
            # The leader was interrupted (not failed): its followers try again.

    def try_do(self, key: K, fn: Callable[[], T]) -> T | Skipped:
        """Run ``fn`` and return its result, unless a call for ``key`` is already in flight.

        Never waits: a caller that finds a call in flight gets :data:`SKIPPED` at once. While
        ``fn`` runs, concurrent :meth:`do` callers for ``key`` share its result.
        """
        with self._lock:
            if key in self._calls:
                return SKIPPED
            call = self._calls[key] = _Call()
        return self._lead(key, call, fn)

    def _lead(self, key: K, call: _Call, fn: Callable[[], T]) -> T:
        try:
            value = fn()
        except BaseException as exc:
            call.error = exc
            raise
        else:
            call.value = value
            return value
        finally:
            # Free the key before waking the followers, so a caller arriving after the
            # result is known starts a fresh call instead of joining a finished one.
            with self._lock:
                del self._calls[key]
            call.done.set()

    def __len__(self) -> int:
        """The number of keys with a call in flight now."""
        with self._lock:
            return len(self._calls)

    def __contains__(self, key: object) -> bool:
        """Whether a call for ``key`` is in flight now (a snapshot; it may end at once)."""
        with self._lock:
            return key in self._calls
