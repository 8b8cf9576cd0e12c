"""How the runners stop: SIGTERM and SIGINT set the stop event whatever the main thread
holds, and a stop has one deadline for all its parts."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from entrypoints.runner import _Stopping, stop_on_signals

# The main thread holds the stop event's own lock, as it does inside stop.wait() on its
# way out, when the signal's handler runs: the handler must not need that lock.
_HELD_LOCK_CHILD = """
import logging, signal, sys, threading
from entrypoints.runner import stop_on_signals

logging.basicConfig(level=logging.INFO, stream=sys.stdout)
stop = threading.Event()
with stop_on_signals(stop):
    with stop._cond:
        signal.raise_signal(signal.SIGTERM)  # its handler runs here, in this thread
    assert stop.wait(5), "SIGTERM did not set the stop event"
print("stopped", flush=True)
"""


def test_a_signal_while_the_main_thread_holds_the_stop_events_lock_still_stops() -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _HELD_LOCK_CHILD], capture_output=True, text=True, timeout=15
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the signal handler deadlocked on the stop event's lock", pytrace=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "received SIGTERM: stopping" in done.stdout
    assert done.stdout.endswith("stopped\n"), done.stdout


def _open_fds() -> set[str]:
    return {path.name for path in Path("/proc/self/fd").iterdir()}


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_stop_on_signals_sets_the_event_and_leaves_nothing_behind() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    fds = _open_fds()
    stop = threading.Event()
    with stop_on_signals(stop):
        signal.raise_signal(signal.SIGINT)
        assert stop.wait(5)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert _open_fds() == fds
    assert not [thread for thread in threading.enumerate() if thread.name == "signals"]


def test_a_stop_has_one_deadline_for_all_its_parts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "entrypoints.runner")
    never = threading.Event()
    stuck = threading.Thread(target=never.wait, name="stuck", daemon=True)
    stuck.start()
    calls: list[float] = []

    def slow_part(seconds: float) -> None:
        calls.append(seconds)
        time.sleep(seconds)

    def failing_part(_seconds: float) -> None:
        raise RuntimeError("boom")

    try:
        started = time.monotonic()
        stopping = _Stopping(0.5)
        stopping.join(stuck)
        stopping.part("the failing part", failing_part)
        stopping.part("the bus", slow_part)
        took = time.monotonic() - started
    finally:
        never.set()
    assert took < 1.5, took  # not 0.5 s for each part
    assert calls == [0.0]  # the thread took all the time; the failure did not stop the stop
    messages = [record.getMessage() for record in caplog.records]
    assert "stopping: thread stuck did not stop within the 0.5 s stop timeout" in messages[0]
    assert messages[1] == "stopping: the failing part failed"
    assert messages[2] == "stopping: no time left to wait for the bus"


def test_a_part_that_uses_up_the_time_or_says_so_is_logged_as_late(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "entrypoints.runner")
    stopping = _Stopping(0.3)
    stopping.part("the quick part", lambda _seconds: None)
    stopping.part("the refusing part", lambda _seconds: False)
    stopping.part("the slow part", time.sleep)
    assert [record.getMessage() for record in caplog.records] == [
        "stopping: the refusing part did not stop within the 0.3 s stop timeout",
        "stopping: the slow part did not stop within the 0.3 s stop timeout",
    ]
