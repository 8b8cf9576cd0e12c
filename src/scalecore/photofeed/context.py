"""What every part of the photo-feed service shares: its ports, settings, cache loaders and
cache keys, and the few operations more than one part needs (looking a user up, stamping a
change, making an outbox event, invalidating cached reads).

:class:`ServiceContext` holds them; each part (:mod:`~scalecore.photofeed.accounts`,
:mod:`~scalecore.photofeed.following`, :mod:`~scalecore.photofeed.uploads`,
:mod:`~scalecore.photofeed.timelines`, :mod:`~scalecore.photofeed.profiles`,
:mod:`~scalecore.photofeed.maintenance`) reads them from the context at call time, so a
port replaced on the service (``service.blobs = ...``) is the one every part uses.
:class:`~scalecore.photofeed.service.PhotoFeed` is a ``ServiceContext`` that composes the
parts.
"""

from __future__ import annotations

import re
import threading

from scalecore.clock import Clock, SystemClock
from scalecore.errors import NotFound
from scalecore.ids import IdGenerator, shard_of
from scalecore.photofeed.events import PhotoEvent
from scalecore.photofeed.models import OutboxEvent, Photo, User
from scalecore.photofeed.outbox import OutboxRelay
from scalecore.photofeed.ports import (
    FeedRepository,
    FollowRepository,
    ImageProcessor,
    OutboxRepository,
    PasswordHasher,
    PhotoRepository,
    UserRepository,
)
from scalecore.photofeed.settings import PhotoFeedSettings
from scalecore.ports.blobstore import BlobStore
from scalecore.ports.bus import Bus
from scalecore.ports.cache import Cache
from scalecore.stampede import CachedLoader

__all__ = [
    "FEED_KEY",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "PEOPLE_KEY",
    "POPULAR_KEY",
    "PROFILE_KEY",
    "RECENT_KEY",
    "USERNAME_PATTERN",
    "ServiceContext",
]

#: Usernames: 3-32 characters of a-z, 0-9 and "_".
USERNAME_PATTERN = re.compile(r"[a-z0-9_]{3,32}")
MIN_PASSWORD_LENGTH = 8
#: Longer passwords are refused before hashing, so nobody can make the hasher chew megabytes.
MAX_PASSWORD_LENGTH = 1024

#: Cache keys. Usernames and ids are printable ASCII, so keys stay readable.
PROFILE_KEY = "photofeed:profile:"
RECENT_KEY = "photofeed:recent:"
POPULAR_KEY = "photofeed:popular"
FEED_KEY = "photofeed:feed:"
PEOPLE_KEY = "photofeed:people:"
#: The smallest step between two stamps of one process (well above float resolution
#: at current epoch times, which is about 2.4e-7 s).
_STAMP_STEP = 1e-6


class ServiceContext:
    """The ports, settings and cache loaders of one photo-feed service; thread-safe.

    Constructor arguments are those of :class:`~scalecore.photofeed.service.PhotoFeed`.
    Building one touches no backend.
    """

    def __init__(
        self,
        *,
        users: UserRepository,
        photos: PhotoRepository,
        outbox: OutboxRepository,
        follows: FollowRepository,
        feed: FeedRepository,
        blobs: BlobStore,
        cache: Cache,
        bus: Bus,
        hasher: PasswordHasher,
        images: ImageProcessor,
        clock: Clock | None = None,
        settings: PhotoFeedSettings | None = None,
        ids: IdGenerator | None = None,
    ) -> None:
        self.settings = settings if settings is not None else PhotoFeedSettings()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.users = users
        self.photos = photos
        self.outbox = outbox
        self.follows = follows
        self.feeds = feed
        self.blobs = blobs
        self.cache = cache
        self.bus = bus
        self.hasher = hasher
        self.images = images
        self.ids = ids if ids is not None else IdGenerator(self.clock)
        #: Publishes this service's outbox; the cron job and the upload path share it.
        self.relay = OutboxRelay(
            outbox=outbox,
            bus=bus,
            clock=self.clock,
            lease=self.settings.outbox_lease,
            batch=self.settings.outbox_batch,
        )
        self.profiles = CachedLoader(
            cache,
            clock=self.clock,
            ttl=self.settings.profile_cache_ttl,
            soft_ttl=self.settings.profile_soft_ttl,
        )
        self.popular_lists = CachedLoader(
            cache, clock=self.clock, ttl=self.settings.popular_cache_ttl
        )
        #: First feed pages (default limit), invalidated per follower on every change.
        self.feed_pages = CachedLoader(cache, clock=self.clock, ttl=self.settings.feed_cache_ttl)
        self.people_lists = CachedLoader(
            cache, clock=self.clock, ttl=self.settings.people_cache_ttl
        )
        # Enough of a popular account's newest photos to fill the largest page and more.
        self.recent_count = (
            max(self.settings.feed_max_limit, self.settings.recent_photos_for_backfill) + 1
        )
        self._stamp_lock = threading.Lock()
        self._last_stamp = 0.0
        self._dummy_hash: str | None = None
        self._compose()

    def _compose(self) -> None:
        """Build what a subclass keeps beside the context; called last by ``__init__``."""

    def get_user(self, user_id: str) -> User:
        """Return the user; ``NotFound`` if there is none (or the id is malformed)."""
        if not isinstance(user_id, str):
            raise NotFound("no such user")
        return self.users.get(user_id)

    def user_by_name(self, username: str) -> User:
        if not isinstance(username, str) or not USERNAME_PATTERN.fullmatch(username):
            raise NotFound(f"no user {username!r}")
        return self.users.get_by_username(username)

    def stamp(self, *, after: float | None = None) -> float:
        """A timestamp for a change: the clock, but strictly after every earlier stamp of
        this process and after ``after`` (the newest timestamp already on the thing being
        changed), so last-writer-wins orders a user's own changes as they were made."""
        now = self.clock.now()
        with self._stamp_lock:
            floor = self._last_stamp if after is None else max(self._last_stamp, after)
            stamp = max(now, floor + _STAMP_STEP)
            self._last_stamp = stamp
        return stamp

    def new_event(self, topic: str, photo: Photo, *, occurred_at: float) -> OutboxEvent:
        payload = PhotoEvent(
            photo_id=photo.id,
            owner_id=photo.owner_id,
            created_at=photo.created_at,
            occurred_at=occurred_at,
        ).to_payload()
        return OutboxEvent(
            id=self.ids.new(shard_of(photo.owner_id)),
            topic=topic,
            payload=payload,
            created_at=occurred_at,
        )

    def invalidate_profiles(self, *usernames: str) -> None:
        for username in usernames:
            self.profiles.invalidate(PROFILE_KEY + username)

    def photos_changed(self, owner_id: str, username: str) -> None:
        self.invalidate_profiles(username)
        self.popular_lists.invalidate(RECENT_KEY + owner_id)
        self.feed_pages.invalidate(FEED_KEY + owner_id)  # one's own feed shows them

    #: The name the service's callers have used for :meth:`new_event`.
    _event = new_event
