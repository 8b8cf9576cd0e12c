"""Outbox events in a dict of this process, sharing a lock with the memory photo repository.

Backend: "memory"
Install extra: none
Options: none
Differs from the port: events live in this process only. Pass the instance to
    ``MemoryPhotoRepository(outbox=...)``: the two then form one store, so a photo and its
    event are written under one lock, as a SQL transaction would.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import ClassVar

import attrs

from scalecore.capabilities import Capability
from scalecore.photofeed.models import OutboxEvent
from scalecore.photofeed.ports import OutboxRepository

__all__ = ["MemoryOutboxRepository"]


@attrs.define
class _Row:
    event: OutboxEvent
    claimant: str | None = None
    claimed_until: float | None = None
    sent_at: float | None = None


class MemoryOutboxRepository(OutboxRepository):
    """Events in insertion order (oldest first); thread-safe."""

    #: Not SHARED, not DURABLE: the data lives in this process.
    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def __init__(self) -> None:
        #: The store's lock; ``MemoryPhotoRepository`` holds it while it writes a photo
        #: and its event, so both become visible together.
        self.lock = threading.RLock()
        self._rows: dict[str, _Row] = {}

    def contains_locked(self, event_id: str) -> bool:
        """Whether an event with this id exists; the caller holds :attr:`lock`."""
        return event_id in self._rows

    def insert_locked(self, event: OutboxEvent) -> None:
        """Add an event; the caller holds :attr:`lock` and checked the id is new."""
        self._rows[event.id] = _Row(event)

    def claim(
        self,
        claimant: str,
        *,
        limit: int,
        now: float,
        lease: float,
        ids: Collection[str] | None = None,
    ) -> list[OutboxEvent]:
        wanted = None if ids is None else set(ids)
        claimed: list[OutboxEvent] = []
        with self.lock:
            for event_id, row in self._rows.items():
                if len(claimed) >= limit:
                    break
                if wanted is not None and event_id not in wanted:
                    continue
                if row.sent_at is not None:
                    continue
                if row.claimed_until is not None and row.claimed_until > now:
                    continue
                row.claimant, row.claimed_until = claimant, now + lease
                claimed.append(row.event)
        return claimed

    def mark_sent(self, ids: Collection[str], *, now: float) -> None:
        with self.lock:
            for event_id in ids:
                row = self._rows.get(event_id)
                if row is not None and row.sent_at is None:
                    row.sent_at, row.claimant, row.claimed_until = now, None, None

    def release(self, ids: Collection[str], claimant: str) -> None:
        with self.lock:
            for event_id in ids:
                row = self._rows.get(event_id)
                if row is not None and row.sent_at is None and row.claimant == claimant:
                    row.claimant, row.claimed_until = None, None

    def pending_count(self) -> int:
        with self.lock:
            return sum(1 for row in self._rows.values() if row.sent_at is None)

    def oldest_pending_at(self) -> float | None:
        with self.lock:
            pending = [row.event.created_at for row in self._rows.values() if row.sent_at is None]
        return min(pending, default=None)

    def purge_sent(self, before: float) -> int:
        with self.lock:
            old = [
                event_id
                for event_id, row in self._rows.items()
                if row.sent_at is not None and row.sent_at < before
            ]
            for event_id in old:
                del self._rows[event_id]
        return len(old)
