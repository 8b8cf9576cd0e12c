"""The state every virtual user of one load-test process shares, and what records it.

``locust -f`` imports a locustfile under its own module name, so the shared state lives
here, in a module both ``scalecore loadtest`` and the locustfile import once.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from http.cookiejar import Cookie
from typing import Any

import attrs
import requests

from entrypoints.loadtest.seed import Population, login

__all__ = ["LagProbe", "Recorder", "Scenario", "current", "install"]

#: Requests kept for the report; past this the run still counts, but stops recording.
MAX_RECORDED = 3_000_000


class Recorder:
    """Every request the virtual users make: (seconds since start, name, ms, ok)."""

    def __init__(self) -> None:
        self.started = time.time()
        self.rows: list[tuple[float, str, float, bool]] = []
        self.users: list[tuple[float, int]] = []
        self.dropped = 0

    def restart(self) -> None:
        self.started = time.time()
        self.rows.clear()
        self.users.clear()
        self.dropped = 0

    def on_request(
        self,
        request_type: str,
        name: str,
        response_time: float,
        response_length: int,
        exception: BaseException | None = None,
        **_kwargs: Any,
    ) -> None:
        if len(self.rows) >= MAX_RECORDED:
            self.dropped += 1
            return
        elapsed = time.time() - self.started
        self.rows.append((elapsed, name, float(response_time), exception is None))

    def sample_users(self, count: int) -> None:
        self.users.append((time.time() - self.started, count))


class LagProbe:
    """Fan-out lag: after an upload, poll the watcher's feed (which follows everyone) until
    the photo shows; record the seconds from the upload's 201 to first sight.

    Bounded: at most ``max_in_flight`` probes at once (later uploads are counted as
    ``skipped``), each gives up after ``timeout`` seconds (counted as ``timed_out``).
    Probe requests are not part of the load test's request statistics.
    """

    def __init__(
        self,
        base: str,
        watcher: str,
        *,
        max_in_flight: int = 16,
        timeout: float = 30.0,
        interval: float = 0.1,
    ) -> None:
        self.base = base
        self.watcher = watcher
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.interval = interval
        self.lags: list[float] = []
        self.timed_out = 0
        self.skipped = 0
        self.errors = 0
        self._session: requests.Session | None = None
        self._greenlets: list[Any] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        self._session = requests.Session()
        login(self._session, self.base, self.watcher)

    def watch(self, photo_id: str) -> None:
        import gevent

        self._greenlets = [g for g in self._greenlets if not g.dead]
        if self._session is None or len(self._greenlets) >= self.max_in_flight:
            self.skipped += 1
            return
        self._greenlets.append(gevent.spawn(self._poll, photo_id, time.monotonic()))

    def _poll(self, photo_id: str, since: float) -> None:
        import gevent

        assert self._session is not None
        deadline = since + self.timeout
        while time.monotonic() < deadline:
            try:
                response = self._session.get(f"{self.base}/api/feed?limit=20", timeout=10)
                if response.status_code == 200 and any(
                    item.get("id") == photo_id for item in response.json().get("items", ())
                ):
                    self.lags.append(time.monotonic() - since)
                    return
            except (requests.RequestException, ValueError):
                self.errors += 1
            gevent.sleep(self.interval)
        self.timed_out += 1

    def stop(self, wait: float = 10.0) -> None:
        """Let probes in flight finish for up to ``wait`` seconds, then end them."""
        import gevent

        gevent.joinall(self._greenlets, timeout=wait)
        unfinished = [g for g in self._greenlets if not g.dead]
        self.timed_out += len(unfinished)
        gevent.killall(unfinished)
        if self._session is not None:
            self._session.close()


@attrs.define
class Scenario:
    """The seeded population and the knobs of the mix, shared by the virtual users."""

    base: str
    population: Population
    think_time: float
    recorder: Recorder
    probe: LagProbe
    rng: random.Random
    _next: Any = attrs.field(factory=itertools.count)

    def next_account(self) -> int:
        """Accounts are handed to virtual users round-robin."""
        return int(next(self._next)) % self.population.graph.size

    def take_session(self, account: int) -> tuple[Cookie, str] | None:
        """The seeding's session of ``account`` (cookie, CSRF token), once; later callers
        get ``None`` and log in themselves (a session is never shared: a user that logs
        out would log the others out)."""
        return self.population.sessions.pop(account, None)


_current: Scenario | None = None


def install(scenario: Scenario) -> None:
    global _current
    _current = scenario


def current() -> Scenario:
    """The installed scenario; ``RuntimeError`` before seeding installed one."""
    if _current is None:
        raise RuntimeError("no load-test scenario installed (seeding has not run)")
    return _current
