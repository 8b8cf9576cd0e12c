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

from collections.abc import Iterable
from typing import Any, ClassVar

import sqlalchemy as sa

from adapters.photofeed.schema import (
    below,
    by_logical,
    check_database,
    logical_of,
    outbox_table,
    photos_table,
    ping_all,
)
from adapters.sql.outbox import outbox_row
from adapters.sql.shards import ShardedDatabase
from scalecore.capabilities import Capability
from scalecore.errors import InvalidInput, NotFound
from scalecore.ids import shard_of
from scalecore.photofeed.models import FeedPosition, OutboxEvent, Photo
from scalecore.photofeed.ports import PhotoRepository

__all__ = ["SqlPhotoRepository", "outbox_row"]

_t = photos_table
#: Photos by id, built once (see ``_FIRST_PAGE`` in the feed repository): the feed's read.
_BY_IDS = sa.select(_t).where(_t.c.id.in_(sa.bindparam("ids", expanding=True)))


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

        def insert(conn: sa.Connection) -> None:
            conn.execute(_t.insert().values(**_row(photo)))
            conn.execute(outbox_table.insert().values(**outbox_row(event)))

        self._db.write(shard_of(photo.id), insert)

    def delete(self, photo_id: str, event: OutboxEvent) -> None:
        logical = logical_of(photo_id)
        if logical is None:
            raise NotFound(f"no photo {photo_id!r}")
        if logical != shard_of(event.id):
            raise InvalidInput("an outbox event must be of its photo's logical shard")

        def remove(conn: sa.Connection) -> None:
            if conn.execute(_t.delete().where(_t.c.id == photo_id)).rowcount != 1:
                raise NotFound(f"no photo {photo_id!r}")  # rolls back: no event either
            conn.execute(outbox_table.insert().values(**outbox_row(event)))

        self._db.write(logical, remove)

    def get(self, photo_id: str) -> Photo:
        logical = logical_of(photo_id)
        if logical is not None:
            query = sa.select(_t).where(_t.c.id == photo_id)
            row = self._db.query(logical, lambda conn: conn.execute(query).first())
            if row is not None:
                return _photo(row)
        raise NotFound(f"no photo {photo_id!r}")

    def get_many(self, photo_ids: Iterable[str]) -> dict[str, Photo]:
        found: dict[str, Photo] = {}
        for rows in self._db.query_each(
            by_logical(photo_ids),
            lambda conn, ids: conn.execute(_BY_IDS, {"ids": ids}).all(),
        ):
            found.update((row.id, _photo(row)) for row in rows)
        return found

    def recent_by_owner(
        self, owner_id: str, *, limit: int, before: FeedPosition | None = None
    ) -> list[Photo]:
        logical = logical_of(owner_id)
        if logical is None or limit < 1:
            return []
        query = sa.select(_t).where(_t.c.owner_id == owner_id)
        if before is not None:
            query = query.where(below(_t.c.created_at, _t.c.id, before))
        query = query.order_by(_t.c.created_at.desc(), _t.c.id.desc()).limit(limit)
        rows = self._db.query(logical, lambda conn: conn.execute(query).all())
        return [_photo(row) for row in rows]

    def existing_ids(self, photo_ids: Iterable[str]) -> set[str]:
        found: set[str] = set()
        for ids in self._db.query_each(  # the primary: see the header
            by_logical(photo_ids),
            lambda conn, ids: list(
                conn.execute(sa.select(_t.c.id).where(_t.c.id.in_(ids))).scalars()
            ),
            primary=True,
        ):
            found.update(ids)
        return found

    def ping(self) -> None:
        ping_all(self._db)


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
