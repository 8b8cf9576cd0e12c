"""Counters a bus adapter keeps for metrics: messages published, and how handling went.

Every bus adapter exposes one :class:`BusStats` as its ``stats`` attribute, so the metrics
endpoint reads the same names whichever adapter stands behind the port.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Final, Literal, TypeAlias

import attrs

from scalecore.errors import InvalidInput

__all__ = ["OUTCOMES", "BusStats", "BusStatsSnapshot", "Outcome"]

#: How one delivery ended: ``"ok"`` the handler returned (acknowledged); ``"retry"`` it
#: raised and the message will be delivered again; ``"dead"`` it raised on the last
#: allowed attempt and the message went to the dead letters.
Outcome: TypeAlias = Literal["ok", "retry", "dead"]
OUTCOMES: Final[tuple[Outcome, ...]] = ("ok", "retry", "dead")


@attrs.frozen
class BusStatsSnapshot:
    """The counters at one moment, as plain dicts the caller may keep or change.

    ``published`` maps topic -> messages published (including those dropped because the
    topic had no group); ``handled`` maps (topic, group, outcome) -> deliveries.
    """

    published: dict[str, int]
    handled: dict[tuple[str, str, Outcome], int]

    def handled_count(self, topic: str, group: str, outcome: Outcome) -> int:
        """Deliveries of (topic, group) that ended with ``outcome``; 0 if none."""
        return self.handled.get((topic, group, outcome), 0)


class BusStats:
    """Thread-safe counters of one bus. Counters only grow; read them with :meth:`snapshot`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._published: Counter[str] = Counter()
        self._handled: Counter[tuple[str, str, Outcome]] = Counter()

    def record_published(self, topic: str, count: int = 1) -> None:
        """Count ``count`` messages published to ``topic``."""
        if count < 0:
            raise InvalidInput(f"count must not be negative, got {count}")
        with self._lock:
            self._published[topic] += count

    def record_handled(self, topic: str, group: str, outcome: Outcome) -> None:
        """Count one delivery to (topic, group) that ended with ``outcome``."""
        if outcome not in OUTCOMES:
            raise InvalidInput(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        with self._lock:
            self._handled[(topic, group, outcome)] += 1

    def snapshot(self) -> BusStatsSnapshot:
        """A consistent copy of every counter."""
        with self._lock:
            return BusStatsSnapshot(dict(self._published), dict(self._handled))
