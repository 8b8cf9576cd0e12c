"""Builders for the photo feed's unit tests: the service on in-memory adapters.

A World is a PhotoFeed on memory repositories, a memory blob store and cache, a sync
in-process bus with the feed worker attached, a ManualClock, cheap Argon2 parameters and
the Pillow processor. ``conftest.py`` turns :func:`build_world` into the ``world`` and
``make_world`` fixtures.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from PIL import Image

from adapters.blob.memory import MemoryBlobStore
from adapters.bus.inprocess import InProcessBus
from adapters.cache.memory import MemoryCache
from adapters.photofeed.feed.memory import MemoryFeedRepository
from adapters.photofeed.follows.memory import MemoryFollowRepository
from adapters.photofeed.images.pillow import PillowImageProcessor
from adapters.photofeed.outbox.memory import MemoryOutboxRepository
from adapters.photofeed.passwords.argon2 import Argon2PasswordHasher
from adapters.photofeed.photos.memory import MemoryPhotoRepository
from adapters.photofeed.users.memory import MemoryUserRepository
from scalecore.clock import ManualClock
from scalecore.photofeed import FeedWorker, PhotoFeed, PhotoFeedSettings
from scalecore.photofeed.models import User


def image_bytes(
    fmt: str = "JPEG",
    size: tuple[int, int] = (64, 48),
    *,
    mode: str = "RGB",
    color: Any = "red",
    orientation: int | None = None,
) -> bytes:
    """A small image made with Pillow, optionally with an EXIF orientation tag."""
    out = io.BytesIO()
    image = Image.new(mode, size, color)
    kwargs: dict[str, Any] = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def cheap_hasher() -> Argon2PasswordHasher:
    """Argon2id with the smallest costs: the same code path, a millisecond per hash."""
    return Argon2PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@attrs.define
class World:
    """A PhotoFeed and every fake behind it, for assertions on their state."""

    service: PhotoFeed
    clock: ManualClock
    bus: InProcessBus
    blobs: MemoryBlobStore
    cache: MemoryCache
    users: MemoryUserRepository
    photos: MemoryPhotoRepository
    outbox: MemoryOutboxRepository
    follows: MemoryFollowRepository
    feed: MemoryFeedRepository
    worker: FeedWorker
    spool_dir: Path

    def sign_up(self, name: str) -> User:
        return self.service.sign_up(name, f"{name}-password")

    def upload(self, user: User, *, caption: str = "", **image: Any) -> Any:
        self.clock.advance(1)
        return self.service.upload_photo(user.id, io.BytesIO(image_bytes(**image)), caption=caption)


MakeWorld = Callable[..., World]


def build_world(spool_dir: Path, *, blobs: MemoryBlobStore | None = None, **settings: Any) -> World:
    """A World whose uploads spool into ``spool_dir``; ``settings`` are PhotoFeedSettings."""
    clock = ManualClock()
    settings.setdefault("upload_tmp_dir", str(spool_dir))
    settings.setdefault("upload_memory_bytes", 256)  # most test images go to a file
    bus = InProcessBus(mode="sync", clock=clock)
    outbox = MemoryOutboxRepository()
    world_blobs = blobs if blobs is not None else MemoryBlobStore(clock=clock)
    cache = MemoryCache(clock=clock)
    users = MemoryUserRepository()
    photos = MemoryPhotoRepository(outbox=outbox)
    follows = MemoryFollowRepository()
    feed = MemoryFeedRepository()
    service = PhotoFeed(
        users=users,
        photos=photos,
        outbox=outbox,
        follows=follows,
        feed=feed,
        blobs=world_blobs,
        cache=cache,
        bus=bus,
        hasher=cheap_hasher(),
        images=PillowImageProcessor(),
        clock=clock,
        settings=PhotoFeedSettings(**settings),
    )
    worker = FeedWorker(service)
    worker.attach(bus)
    bus.start()
    return World(
        service, clock, bus, world_blobs, cache, users, photos, outbox, follows, feed,
        worker, spool_dir,
    )  # fmt: skip
