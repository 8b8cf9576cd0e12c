"""BusStats: thread-safe counters of published and handled messages."""

from __future__ import annotations

import threading

import pytest

from scalecore.busstats import OUTCOMES, BusStats
from scalecore.errors import InvalidInput


def test_counts_published_messages_per_topic() -> None:
    stats = BusStats()
    stats.record_published("photos.uploaded")
    stats.record_published("photos.uploaded", 3)
    stats.record_published("users.created", 0)
    assert stats.snapshot().published == {"photos.uploaded": 4, "users.created": 0}


def test_counts_deliveries_per_topic_group_and_outcome() -> None:
    stats = BusStats()
    for outcome in ("ok", "ok", "retry", "dead"):
        stats.record_handled("t", "g", outcome)
    snapshot = stats.snapshot()
    assert snapshot.handled == {("t", "g", "ok"): 2, ("t", "g", "retry"): 1, ("t", "g", "dead"): 1}
    assert snapshot.handled_count("t", "g", "ok") == 2
    assert snapshot.handled_count("t", "other", "ok") == 0


def test_a_snapshot_is_a_copy() -> None:
    stats = BusStats()
    stats.record_published("t")
    snapshot = stats.snapshot()
    snapshot.published["t"] = 100
    stats.record_published("t")
    assert snapshot.published == {"t": 100}
    assert stats.snapshot().published == {"t": 2}


def test_refuses_unknown_outcomes_and_negative_counts() -> None:
    stats = BusStats()
    with pytest.raises(InvalidInput):
        stats.record_handled("t", "g", "maybe")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        stats.record_published("t", -1)
    assert stats.snapshot().published == {}
    assert stats.snapshot().handled == {}


def test_counters_are_exact_under_concurrent_updates() -> None:
    stats = BusStats()

    def bump() -> None:
        for _ in range(2000):
            stats.record_published("t")
            for outcome in OUTCOMES:
                stats.record_handled("t", "g", outcome)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snapshot = stats.snapshot()
    assert snapshot.published == {"t": 8000}
    assert all(snapshot.handled_count("t", "g", outcome) == 8000 for outcome in OUTCOMES)
