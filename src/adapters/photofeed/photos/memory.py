"""Photo records in a dict of this process, written together with their outbox events.

Backend: "memory"
Install extra: none
Options: outbox (the MemoryOutboxRepository of the same store; required)
Differs from the port: records live in this process only; listing an owner's photos
    sorts that owner's photos on every call (fine for tests and a one-process trial).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from adapters.photofeed.outbox.memory import MemoryOutboxRepository
from scalecore.capabilities import Capability
from scalecore.errors import ConfigError, Conflict, InvalidInput, NotFound
from scalecore.ids import shard_of
from scalecore.photofeed.models import FeedPosition, OutboxEvent, Photo
from scalecore.photofeed.ports import PhotoRepository

__all__ = ["MemoryPhotoRepository"]


class MemoryPhotoRepository(PhotoRepository):
    """Photos by id, under the outbox's lock so a photo and its event are atomic."""

    #: Not SHARED, not DURABLE: the data lives in this process.
    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def __init__(self, *, outbox: MemoryOutboxRepository) -> None:
        if not isinstance(outbox, MemoryOutboxRepository):
            raise ConfigError("must be the MemoryOutboxRepository of this store", key="outbox")
        self._outbox = outbox
        self._lock = outbox.lock
        self._photos: dict[str, Photo] = {}

    def add(self, photo: Photo, event: OutboxEvent) -> None:
        _check_same_shard(photo.id, event)
        with self._lock:
            if photo.id in self._photos:
                raise Conflict(f"photo {photo.id} exists")
            if self._outbox.contains_locked(event.id):
                raise Conflict(f"outbox event {event.id} exists")
            self._photos[photo.id] = photo
            self._outbox.insert_locked(event)

    def delete(self, photo_id: str, event: OutboxEvent) -> None:
        try:
            shard_of(photo_id)
        except InvalidInput:
            raise NotFound(f"no photo {photo_id!r}") from None
        _check_same_shard(photo_id, event)
        with self._lock:
            if photo_id not in self._photos:
                raise NotFound(f"no photo {photo_id!r}")
            if self._outbox.contains_locked(event.id):
                raise Conflict(f"outbox event {event.id} exists")
            del self._photos[photo_id]
            self._outbox.insert_locked(event)

    def get(self, photo_id: str) -> Photo:
        with self._lock:
            photo = self._photos.get(photo_id)
        if photo is None:
            raise NotFound(f"no photo {photo_id!r}")
        return photo

    def get_many(self, photo_ids: Iterable[str]) -> dict[str, Photo]:
        with self._lock:
            return {i: self._photos[i] for i in photo_ids if i in self._photos}

    def recent_by_owner(
        self, owner_id: str, *, limit: int, before: FeedPosition | None = None
    ) -> list[Photo]:
        with self._lock:
            mine = [
                photo
                for photo in self._photos.values()
                if photo.owner_id == owner_id and (before is None or photo.position < before)
            ]
        mine.sort(key=lambda photo: photo.position, reverse=True)
        return mine[:limit]

    def existing_ids(self, photo_ids: Iterable[str]) -> set[str]:
        with self._lock:
            return {i for i in photo_ids if i in self._photos}


def _check_same_shard(photo_id: str, event: OutboxEvent) -> None:
    if shard_of(photo_id) != shard_of(event.id):
        raise InvalidInput("an outbox event must be of its photo's logical shard")
