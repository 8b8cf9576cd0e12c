"""Photo records in sharded SQL, on the owner's shard, written with their outbox events.

Backend: "sql"
Install extra: none for SQLite; postgres for PostgreSQL
Options: database (the ShardedDatabase of the "photos" logical store, its MetaData built
    from ``adapters.photofeed.schema.METADATA["photos"]``; required). Give the
    ``SqlOutboxRepository`` the same database.
Differs from the port: nothing. A photo id carries its owner's logical shard, so a photo,
    its owner's other photos and its outbox events share a shard and one transaction.
    Reads by id and by owner may go to a replica (and lag); ``existing_ids`` reads the
    primary, because the orphan-blob job deletes objects on its answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, ClassVar

import sqlalchemy as sa

from adapters.photofeed.schema import (
    below,
    check_database,
    outbox_table,
    photos_table,
    ping_all,
    shard_index,
    shards_of,
)
from adapters.sql.shards import ShardedDatabase
from scalecore.capabilities import Capability
from scalecore.errors import InvalidInput, NotFound
from scalecore.ids import shard_of
from scalecore.photofeed.models import FeedPosition, OutboxEvent, Photo
from scalecore.photofeed.ports import PhotoRepository

__all__ = ["SqlPhotoRepository", "outbox_row"]

_t = photos_table


class SqlPhotoRepository(PhotoRepository):
    """Photos on their owner's shard; thread-safe (the database pools connections)."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.SHARED, Capability.DURABLE}
    )

    def __init__(self, *, database: ShardedDatabase) -> None:
        self._db = check_database(database, "photos")

    def __repr__(self) -> str:
        return f"SqlPhotoRepository({self._db!r})"

    def add(self, photo: Photo, event: OutboxEvent) -> None:
        if shard_of(photo.id) != shard_of(event.id):
            raise InvalidInput("an outbox event must be of its photo's logical shard")
        with self._db.unit_of_work(shard_of(photo.id)) as conn:
            conn.execute(_t.insert().values(**_row(photo)))
            conn.execute(outbox_table.insert().values(**outbox_row(event)))

    def delete(self, photo_id: str, event: OutboxEvent) -> None:
        index = shard_index(self._db, photo_id)
        if index is None:
            raise NotFound(f"no photo {photo_id!r}")
        if shard_of(photo_id) != shard_of(event.id):
            raise InvalidInput("an outbox event must be of its photo's logical shard")
        with self._db.unit_of_work(shard=index) as conn:
            if conn.execute(_t.delete().where(_t.c.id == photo_id)).rowcount != 1:
                raise NotFound(f"no photo {photo_id!r}")  # rolls back: no event either
            conn.execute(outbox_table.insert().values(**outbox_row(event)))

    def get(self, photo_id: str) -> Photo:
        index = shard_index(self._db, photo_id)
        if index is not None:
            with self._db.read(shard=index) as conn:
                row = conn.execute(sa.select(_t).where(_t.c.id == photo_id)).one_or_none()
            if row is not None:
                return _photo(row)
        raise NotFound(f"no photo {photo_id!r}")

    def get_many(self, photo_ids: Iterable[str]) -> dict[str, Photo]:
        found: dict[str, Photo] = {}
        for index, ids in shards_of(self._db, photo_ids).items():
            with self._db.read(shard=index) as conn:
                rows = conn.execute(sa.select(_t).where(_t.c.id.in_(ids))).all()
            found.update((row.id, _photo(row)) for row in rows)
        return found

    def recent_by_owner(
        self, owner_id: str, *, limit: int, before: FeedPosition | None = None
    ) -> list[Photo]:
        index = shard_index(self._db, owner_id)
        if index is None or limit < 1:
            return []
        query = sa.select(_t).where(_t.c.owner_id == owner_id)
        if before is not None:
            query = query.where(below(_t.c.created_at, _t.c.id, before))
        query = query.order_by(_t.c.created_at.desc(), _t.c.id.desc()).limit(limit)
        with self._db.read(shard=index) as conn:
            return [_photo(row) for row in conn.execute(query)]

    def existing_ids(self, photo_ids: Iterable[str]) -> set[str]:
        found: set[str] = set()
        for index, ids in shards_of(self._db, photo_ids).items():
            with self._db.unit_of_work(shard=index) as conn:  # the primary: see the header
                found.update(conn.execute(sa.select(_t.c.id).where(_t.c.id.in_(ids))).scalars())
        return found

    def ping(self) -> None:
        ping_all(self._db)


def outbox_row(event: OutboxEvent) -> dict[str, Any]:
    """The outbox row of a new (unclaimed, unsent) event."""
    return {
        "id": event.id,
        "topic": event.topic,
        "payload": json.dumps(event.payload, separators=(",", ":")),
        "created_at": event.created_at,
        "claimant": None,
        "claimed_until": None,
        "sent_at": None,
    }


def _row(photo: Photo) -> dict[str, Any]:
    return {
        "id": photo.id,
        "owner_id": photo.owner_id,
        "owner_username": photo.owner_username,
        "caption": photo.caption,
        "created_at": photo.created_at,
        "blob_key": photo.blob_key,
        "thumbnail_key": photo.thumbnail_key,
        "content_type": photo.content_type,
        "width": photo.width,
        "height": photo.height,
        "size": photo.size,
    }


def _photo(row: Any) -> Photo:
    return Photo(
        id=row.id,
        owner_id=row.owner_id,
        owner_username=row.owner_username,
        caption=row.caption,
        created_at=row.created_at,
        blob_key=row.blob_key,
        thumbnail_key=row.thumbnail_key,
        content_type=row.content_type,
        width=row.width,
        height=row.height,
        size=row.size,
    )
