"""Readiness probes that answer in bounded time, whatever the backends do.

A backend that stops answering without closing anything (a frozen broker, a partitioned
database) can hold a ping for minutes, until a heartbeat or TCP gives up. A load balancer
probes every few seconds: if each probe held a web thread that long, the probes alone would
take every thread of a healthy process. :class:`ReadinessProbe` pings every backend at once,
each on a daemon thread of its own, and reports a ping that has not answered by the deadline
as unavailable. A ping still running from an earlier probe is waited on again rather than
started twice, so a stuck backend costs one thread, not one per probe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Final

from scalecore.errors import ScalecoreError

__all__ = ["CHECK_TIMEOUT", "DEFAULT_TIMEOUT", "ReadinessProbe", "describe"]

#: Seconds a probe waits for every backend together.
DEFAULT_TIMEOUT: Final = 2.0
#: The same for ``scalecore check``, run by hand or by a deploy script, not every few seconds.
CHECK_TIMEOUT: Final = 10.0


def describe(exc: Exception) -> str:
    """One line: the message of a scalecore error; type and message of anything else (a
    driver error an adapter let through)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, ScalecoreError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Ping:
    """One ping on a daemon thread; ``error`` is ``None`` once it answered."""

    def __init__(self, name: str, check: Callable[[], None]) -> None:
        self.done = threading.Event()
        self.error: str | None = None
        self._check = check
        threading.Thread(target=self._run, name=f"readiness:{name}", daemon=True).start()

    def _run(self) -> None:
        try:
            self._check()
        except Exception as exc:  # any failure means "not ready", never a crash
            self.error = describe(exc)
        finally:
            self.done.set()


class ReadinessProbe:
    """Pings named backends concurrently and reports each within ``timeout`` seconds.

    ``run()`` returns name -> ``None`` (answered) or a one-line reason; it never raises and
    never takes longer than ``timeout`` (plus thread start-up). Thread-safe.
    """

    def __init__(
        self, checks: Mapping[str, Callable[[], None]], *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, not {timeout!r}")
        self.checks = dict(checks)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._in_flight: dict[str, _Ping] = {}

    def run(self) -> dict[str, str | None]:
        deadline = time.monotonic() + self.timeout
        with self._lock:
            pings: dict[str, _Ping] = {}
            for name, check in self.checks.items():
                ping = self._in_flight.get(name)
                if ping is None or ping.done.is_set():
                    ping = self._in_flight[name] = _Ping(name, check)
                pings[name] = ping
        results: dict[str, str | None] = {}
        for name, ping in pings.items():
            if ping.done.wait(max(0.0, deadline - time.monotonic())):
                results[name] = ping.error
            else:
                results[name] = f"no answer within {self.timeout:g} s"
        return results
