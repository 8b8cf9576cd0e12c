"""Photos: upload (spooled, checked, stored, announced through the outbox), read and delete.

Part of :class:`~scalecore.photofeed.service.PhotoFeed`; reads the ports it needs from the
shared :class:`~scalecore.photofeed.context.ServiceContext`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO, cast

from scalecore.errors import (
    BackendUnavailable,
    InvalidInput,
    NotFound,
    PermissionDenied,
    ScalecoreError,
    TooLarge,
    UnsupportedMediaType,
)
from scalecore.ids import shard_of
from scalecore.photofeed.context import ServiceContext
from scalecore.photofeed.events import TOPIC_PHOTO_DELETED, TOPIC_PHOTO_UPLOADED
from scalecore.photofeed.models import OutboxEvent, Photo
from scalecore.photofeed.settings import MAX_CAPTION_LENGTH
from scalecore.validate import is_int

__all__ = ["Uploads", "size_text", "too_large_message"]

logger = logging.getLogger("scalecore.photofeed.service")  # one logger for the service

_CHUNK = 64 * 1024


class Uploads:
    """Upload, read and delete photos; nothing stays stored after a failed upload."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def upload_photo(
        self,
        owner_id: str,
        stream: IO[bytes],
        *,
        caption: str = "",
        content_length: int | None = None,
    ) -> Photo:
        """Store an uploaded image and announce it; return the photo.

        Raises ``TooLarge`` if ``content_length`` or the bytes read exceed
        ``max_upload_bytes`` (reading stops one byte past the limit);
        ``UnsupportedMediaType`` if the bytes are not a supported image (or too many
        pixels); ``InvalidInput`` for a caption over 500 characters; ``NotFound`` for an
        unknown owner; ``BackendUnavailable`` if a store fails. On any failure nothing
        stays stored: objects written before the failure are deleted (and the
        ``remove_orphan_blobs`` job deletes any a crash left behind); the temporary file
        is always removed.
        """
        caption = _check_caption(caption)
        limit = self.ctx.settings.max_upload_bytes
        if content_length is not None:
            if not is_int(content_length):
                raise InvalidInput("content_length must be an integer")
            if content_length < 0:
                raise InvalidInput("content_length must not be negative")
            if content_length > limit:
                raise TooLarge(too_large_message(limit))
        owner = self.ctx.get_user(owner_id)
        with self._spool(stream) as (spool, size):
            if size == 0:
                raise UnsupportedMediaType("the upload is empty")
            image = self.ctx.images.process(
                spool,
                thumbnail_size=self.ctx.settings.thumbnail_size,
                max_pixels=self.ctx.settings.max_image_pixels,
            )
            created_at = self.ctx.stamp()
            photo_id = self.ctx.ids.new(shard_of(owner.id))
            photo = Photo(
                id=photo_id,
                owner_id=owner.id,
                owner_username=owner.username,
                caption=caption,
                created_at=created_at,
                blob_key=f"photos/{photo_id}/original.{image.extension}",
                thumbnail_key=f"photos/{photo_id}/thumb.{image.thumbnail.extension}",
                content_type=image.content_type,
                width=image.width,
                height=image.height,
                size=size,
            )
            event = self.ctx.new_event(TOPIC_PHOTO_UPLOADED, photo, occurred_at=created_at)
            spool.seek(0)
            try:
                self.ctx.blobs.put(
                    photo.blob_key,
                    spool,
                    content_type=photo.content_type,
                    cache_control=self.ctx.settings.media_cache_control,
                )
                self.ctx.blobs.put(
                    photo.thumbnail_key,
                    image.thumbnail.data,
                    content_type=image.thumbnail.content_type,
                    cache_control=self.ctx.settings.media_cache_control,
                )
                self.ctx.photos.add(photo, event)
            except BaseException as exc:
                self._discard_blobs(photo, exc)
                raise
        self.ctx.photos_changed(owner.id, owner.username)
        self._relay_now(event)
        return photo

    def _discard_blobs(self, photo: Photo, error: BaseException) -> None:
        """Delete the objects of an upload whose row was not stored.

        If the row's commit may have succeeded (the database failed mid-commit), they are
        deleted only once the row is known to be absent; if that cannot be known, they
        stay for ``remove_orphan_blobs``, which deletes them only if no row appears.
        """
        if isinstance(error, BackendUnavailable):
            try:
                if self.ctx.photos.existing_ids([photo.id]):
                    return
            except ScalecoreError:
                return
        for key in (photo.blob_key, photo.thumbnail_key):
            try:
                self.ctx.blobs.delete(key)
            except ScalecoreError as exc:
                logger.warning("could not delete blob %s (%s)", key, type(exc).__name__)

    @contextlib.contextmanager
    def _spool(self, stream: IO[bytes]) -> Iterator[tuple[BinaryIO, int]]:
        """Copy ``stream`` into memory, or to a temporary file once it outgrows
        ``upload_memory_bytes``, counting bytes; yield the copy rewound and its size.

        The temporary file is removed when the block ends, however it ends.
        """
        limit = self.ctx.settings.max_upload_bytes
        memory = io.BytesIO()
        handle: IO[bytes] | None = None
        size = 0
        try:
            while True:
                try:
                    chunk = stream.read(min(_CHUNK, limit + 1 - size))
                except (OSError, ValueError, AttributeError, TypeError) as exc:
                    # A client that went away, a closed or non-file stream: refused input.
                    raise InvalidInput("the upload could not be read") from exc
                if not chunk:
                    break
                if not isinstance(chunk, bytes | bytearray):
                    raise InvalidInput("the upload must be a binary stream")
                size += len(chunk)
                if size > limit:
                    raise TooLarge(too_large_message(limit))
                try:
                    if handle is None and size > self.ctx.settings.upload_memory_bytes:
                        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below
                            prefix="scalecore-upload-",
                            dir=self.ctx.settings.upload_tmp_dir,
                            delete=False,
                        )
                        handle.write(memory.getbuffer())
                        memory = io.BytesIO()
                    (memory if handle is None else handle).write(chunk)
                except OSError as exc:
                    raise BackendUnavailable(
                        f"cannot spool the upload to a temporary file: {exc.strerror}"
                    ) from exc
            spool: IO[bytes] = memory if handle is None else handle
            spool.seek(0)
            yield cast(BinaryIO, spool), size
        finally:
            memory.close()
            if handle is not None:
                handle.close()
                Path(handle.name).unlink(missing_ok=True)

    def get_photo(self, photo_id: str) -> Photo:
        """Return the photo; ``NotFound`` if none (also for a malformed id)."""
        if not isinstance(photo_id, str):
            raise NotFound("no such photo")
        return self.ctx.photos.get(photo_id)

    def delete_photo(self, user_id: str, photo_id: str) -> None:
        """Delete the photo, announce it, then delete its objects; it leaves every feed.

        Raises ``NotFound`` if there is no such photo, ``PermissionDenied`` unless
        ``user_id`` owns it. Objects that cannot be deleted now are left to the
        ``remove_orphan_blobs`` job (they are unreachable once the row is gone).
        """
        photo = self.get_photo(photo_id)
        if photo.owner_id != user_id:
            raise PermissionDenied("only its owner may delete a photo")
        at = self.ctx.stamp(after=photo.created_at)
        event = self.ctx.new_event(TOPIC_PHOTO_DELETED, photo, occurred_at=at)
        self.ctx.photos.delete(photo.id, event)
        for key in (photo.blob_key, photo.thumbnail_key):
            try:
                self.ctx.blobs.delete(key)
            except ScalecoreError as exc:
                logger.warning("could not delete blob %s (%s)", key, type(exc).__name__)
        self.ctx.photos_changed(photo.owner_id, photo.owner_username)
        self._relay_now(event)

    def _relay_now(self, event: OutboxEvent) -> None:
        """Publish a just-committed event so feeds update at once; the cron relay
        catches whatever this misses."""
        try:
            self.ctx.relay.relay_events([event.id])
        except ScalecoreError as exc:
            logger.warning("event %s stays in the outbox for the relay job (%s)", event.id, exc)


def size_text(size: int) -> str:
    """A byte count as people read it: ``10 MiB``, ``300 KiB``, ``1.5 MiB``, ``512 bytes``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


def too_large_message(limit: int) -> str:
    """What an upload over ``limit`` bytes is told."""
    return f"the photo is too large: at most {size_text(limit)} ({limit} bytes)"


def _check_caption(caption: object) -> str:
    if not isinstance(caption, str):
        raise InvalidInput("a caption must be text")
    if len(caption) > MAX_CAPTION_LENGTH:
        raise InvalidInput(f"a caption is at most {MAX_CAPTION_LENGTH} characters")
    if "\x00" in caption:
        raise InvalidInput("a caption must not contain NUL characters")
    return caption
