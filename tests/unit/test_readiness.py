"""ReadinessProbe: every backend pinged at once, each reported within the timeout."""

from __future__ import annotations

import threading
import time

import pytest

from entrypoints.readiness import ReadinessProbe
from scalecore.errors import BackendUnavailable


def test_backends_are_pinged_at_once_not_one_after_another() -> None:
    def slow() -> None:
        time.sleep(0.4)

    probe = ReadinessProbe({"a": slow, "b": slow, "c": slow}, timeout=5)
    began = time.monotonic()
    assert probe.run() == {"a": None, "b": None, "c": None}
    assert time.monotonic() - began < 1.0  # three 0.4 s pings, together


def test_a_failing_ping_is_reported_on_one_line() -> None:
    def down() -> None:
        raise BackendUnavailable("memcached at 127.0.0.1:1\n refused   the connection")

    def broken() -> None:
        raise RuntimeError()

    probe = ReadinessProbe({"cache": down, "sessions": broken, "blobs": lambda: None})
    assert probe.run() == {
        "cache": "memcached at 127.0.0.1:1 refused the connection",
        "sessions": "RuntimeError",  # a driver error an adapter let through: its type
        "blobs": None,
    }


def test_a_hung_ping_is_reported_at_the_timeout_and_not_started_twice() -> None:
    thaw = threading.Event()
    started: list[float] = []

    def hangs() -> None:
        started.append(time.monotonic())
        thaw.wait(30)

    probe = ReadinessProbe({"bus": hangs}, timeout=0.2)
    try:
        for _ in range(3):
            began = time.monotonic()
            assert probe.run() == {"bus": "no answer within 0.2 s"}
            assert time.monotonic() - began < 1.0
        assert len(started) == 1
        thaw.set()
        time.sleep(0.05)
        assert probe.run() == {"bus": None}
        assert len(started) == 2  # a finished ping is not reused: each probe asks afresh
    finally:
        thaw.set()


def test_the_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        ReadinessProbe({}, timeout=0)
