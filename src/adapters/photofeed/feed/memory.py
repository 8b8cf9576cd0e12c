"""Feed entries in dicts of this process.

Backend: "memory"
Install extra: none
Options: none
Differs from the port: entries live in this process only; a page sorts the follower's
    entries on every call (fine for tests and a one-process trial).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import ClassVar

import attrs

from scalecore.capabilities import Capability
from scalecore.ids import shard_of
from scalecore.photofeed.models import FeedEntry, FeedPosition
from scalecore.photofeed.ports import FeedRepository

__all__ = ["MemoryFeedRepository"]


class MemoryFeedRepository(FeedRepository):
    """Per follower, the LWW state of each photo; thread-safe."""

    #: Not SHARED, not DURABLE: the data lives in this process.
    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._feeds: dict[str, dict[str, FeedEntry]] = {}

    def merge(self, entries: Iterable[FeedEntry]) -> None:
        entries = list(entries)
        for entry in entries:
            shard_of(entry.follower_id)  # as the SQL adapter: refuse a malformed id
        with self._lock:
            for entry in entries:
                feed = self._feeds.setdefault(entry.follower_id, {})
                old = feed.get(entry.photo_id)
                feed[entry.photo_id] = entry if old is None else old.merge(entry)

    def remove_owner(self, follower_id: str, owner_id: str, at: float) -> int:
        touched = 0
        with self._lock:
            feed = self._feeds.get(follower_id, {})
            for photo_id, entry in feed.items():
                if entry.owner_id == owner_id and (
                    entry.removed_at is None or entry.removed_at < at
                ):
                    feed[photo_id] = attrs.evolve(entry, removed_at=at)
                    touched += 1
        return touched

    def page(
        self, follower_id: str, *, limit: int, before: FeedPosition | None = None
    ) -> list[FeedEntry]:
        with self._lock:
            visible = [
                entry
                for entry in self._feeds.get(follower_id, {}).values()
                if entry.visible and (before is None or entry.position < before)
            ]
        visible.sort(key=lambda entry: entry.position, reverse=True)
        return visible[:limit]

    def get(self, follower_id: str, photo_id: str) -> FeedEntry | None:
        with self._lock:
            return self._feeds.get(follower_id, {}).get(photo_id)

    def purge_removed(self, before: float) -> int:
        purged = 0
        with self._lock:
            for feed in self._feeds.values():
                gone = [
                    photo_id
                    for photo_id, entry in feed.items()
                    if not entry.visible
                    and entry.removed_at is not None
                    and entry.removed_at < before
                ]
                for photo_id in gone:
                    del feed[photo_id]
                purged += len(gone)
        return purged
