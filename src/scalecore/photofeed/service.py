"""PhotoFeed: the application service of the reference photo-sharing site.

Everything goes through ports: accounts, photos, follows and feeds through the repositories
of :mod:`scalecore.photofeed.ports`, bytes through the BlobStore, events through the outbox
and the Bus, cached reads through the Cache. The web layer, the feed worker and the cron
jobs all call this one class. ``docs/photofeed.md`` tells the whole story; in short:

- **Upload**: the stream is spooled (memory, then a temporary file that is always removed)
  while its bytes are counted against ``max_upload_bytes``; the image is decoded and a
  thumbnail made before anything is stored; both objects go to the BlobStore; then the
  photo row and its "photo.uploaded" event are committed in one transaction on the
  owner's shard (the outbox); then the event is relayed at once, best effort.
- **Feed**: fan-out on write into each follower's feed (LWW entries, see
  :mod:`scalecore.photofeed.models`) by the feed worker, except for accounts above
  ``fanout_threshold``, whose recent photos are merged in when the feed is read.
- **Follow**: the edge is written on the followee's shard first, then on the follower's;
  a half-done write is found and finished by the ``repair_follows`` job.

Timestamps of changes come from :meth:`PhotoFeed._stamp`, which never repeats or goes back
within a process and is pushed past any timestamp already seen on the edge being changed,
so a user's own follow/unfollow sequence is ordered even when server clocks disagree.

Every public method raises only :mod:`scalecore.errors` exceptions.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import secrets
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO, cast

from scalecore.clock import Clock, SystemClock
from scalecore.errors import (
    AuthenticationFailed,
    BackendUnavailable,
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    ScalecoreError,
    TooLarge,
    UnsupportedMediaType,
)
from scalecore.ids import IdGenerator, shard_of
from scalecore.photofeed.events import (
    TOPIC_PHOTO_DELETED,
    TOPIC_PHOTO_UPLOADED,
    TOPOLOGY,
    PhotoEvent,
)
from scalecore.photofeed.models import (
    Account,
    FeedEntry,
    FeedPage,
    FeedPosition,
    FollowEdge,
    OutboxEvent,
    Photo,
    Profile,
    User,
    UserPage,
    feed_page_from_json,
    feed_page_to_json,
    photo_from_json,
    photo_to_json,
    profile_from_json,
    profile_to_json,
    user_from_json,
    user_to_json,
)
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
from scalecore.photofeed.settings import MAX_CAPTION_LENGTH, PhotoFeedSettings
from scalecore.ports.blobstore import BlobStore
from scalecore.ports.bus import Bus
from scalecore.ports.cache import Cache
from scalecore.stampede import CachedLoader
from scalecore.types import JSONValue
from scalecore.validate import check_int, is_int

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "USERNAME_PATTERN",
    "PhotoFeed",
    "size_text",
    "too_large_message",
]

logger = logging.getLogger(__name__)

#: Usernames: 3-32 characters of a-z, 0-9 and "_".
USERNAME_PATTERN = re.compile(r"[a-z0-9_]{3,32}")
MIN_PASSWORD_LENGTH = 8
#: Longer passwords are refused before hashing, so nobody can make the hasher chew megabytes.
MAX_PASSWORD_LENGTH = 1024

_LOGIN_FAILED = "wrong username or password"


def _is_text(value: str) -> bool:
    """Whether ``value`` encodes as UTF-8 (JSON can carry lone surrogates; hashers cannot)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_CHUNK = 64 * 1024
#: Followers written per feed transaction batch during fan-out.
_FANOUT_BATCH = 500
#: How many batches of feed entries one feed read scans at most before returning a page
#: (possibly short) with a cursor to continue from; bounds the work of a read whose feed
#: is full of entries it must skip (photos deleted, accounts unfollowed).
_FEED_SCAN_BATCHES = 8
#: Smallest batch a feed read asks the feed repository for.
_FEED_SCAN_MIN = 20
#: Cache keys. Usernames and ids are printable ASCII, so keys stay readable.
_PROFILE_KEY = "photofeed:profile:"
_RECENT_KEY = "photofeed:recent:"
_POPULAR_KEY = "photofeed:popular"
_FEED_KEY = "photofeed:feed:"
_PEOPLE_KEY = "photofeed:people:"
#: A username prefix to search by: what a username may start with.
_PREFIX_PATTERN = re.compile(r"[a-z0-9_]{0,32}")
#: The smallest step between two stamps of one process (well above float resolution
#: at current epoch times, which is about 2.4e-7 s).
_STAMP_STEP = 1e-6


class PhotoFeed:
    """The photo feed's use cases. Thread-safe: share one instance per process.

    Constructor arguments are keyword-only: the repositories (``users``, ``photos``,
    ``outbox`` (the photos store's outbox), ``follows``, ``feed``), the ports ``blobs``,
    ``cache`` and ``bus``, the ``hasher`` and ``images`` adapters, and optionally ``clock``
    (SystemClock), ``settings`` (defaults) and ``ids`` (an IdGenerator on ``clock``).
    Building one touches no backend. The repositories are kept as the attributes
    ``users``, ``photos``, ``outbox``, ``follows`` and ``feeds``.
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
        self._ids = ids if ids is not None else IdGenerator(self.clock)
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
        self._recent_count = (
            max(self.settings.feed_max_limit, self.settings.recent_photos_for_backfill) + 1
        )
        self._stamp_lock = threading.Lock()
        self._last_stamp = 0.0
        self._dummy_hash: str | None = None

    def declare_queues(self) -> None:
        """Declare the feed worker's queues (``TOPOLOGY``) on the bus. Idempotent.

        Call it once at start-up in every process that publishes, before the first
        upload: a bus drops messages of a topic no group was declared for, so without it
        events published while no worker is subscribed would be lost.
        """
        for topic, group in TOPOLOGY:
            self.bus.declare(topic, group)

    # -- accounts ----------------------------------------------------------------------

    def sign_up(self, username: str, password: str) -> User:
        """Create an account; return its user.

        Raises ``InvalidInput`` unless ``username`` is 3-32 characters of a-z, 0-9 and "_"
        and ``password`` is 8-1024 characters; ``Conflict`` if the username is taken.
        """
        if not isinstance(username, str) or not USERNAME_PATTERN.fullmatch(username):
            raise InvalidInput("a username is 3 to 32 characters of a-z, 0-9 and _")
        if (
            not isinstance(password, str)
            or not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH
        ):
            raise InvalidInput(
                f"a password is {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters long"
            )
        if not _is_text(password):
            raise InvalidInput("a password must be valid Unicode text")
        password_hash = self.hasher.hash(password)
        user = User(id=self._ids.new_for(username), username=username, created_at=self._stamp())
        try:
            self.users.add(Account(user=user, password_hash=password_hash))
        except Conflict:
            raise Conflict(f"the username {username!r} is taken") from None
        # The first page of "recently joined" is the one people look at: show them at once.
        self.people_lists.invalidate(f"{_PEOPLE_KEY}recent::{self.settings.people_default_limit}")
        return user

    def authenticate(self, username: str, password: str) -> User:
        """Return the user whose credentials these are.

        Raises ``AuthenticationFailed``, with the same message, for an unknown user and
        for a wrong password; an unknown user still costs one hash verification, so the
        answer's timing does not tell which accounts exist. A hash made with outdated
        parameters is replaced after a successful login.
        """
        if (
            not isinstance(username, str)
            or not isinstance(password, str)
            or len(password) > MAX_PASSWORD_LENGTH
            or not _is_text(password)
        ):
            raise AuthenticationFailed(_LOGIN_FAILED)
        account: Account | None = None
        if USERNAME_PATTERN.fullmatch(username):
            with contextlib.suppress(NotFound):
                account = self.users.get_account(username)
        if account is None:
            self.hasher.verify(self._dummy(), password)
            raise AuthenticationFailed(_LOGIN_FAILED)
        if not self.hasher.verify(account.password_hash, password):
            raise AuthenticationFailed(_LOGIN_FAILED)
        if self.hasher.needs_rehash(account.password_hash):
            try:
                self.users.set_password_hash(account.user.id, self.hasher.hash(password))
            except ScalecoreError as exc:  # the old hash still works; try again next login
                logger.warning("could not store a rehashed password: %s", type(exc).__name__)
        return account.user

    def get_user(self, user_id: str) -> User:
        """Return the user; ``NotFound`` if there is none (or the id is malformed)."""
        if not isinstance(user_id, str):
            raise NotFound("no such user")
        return self.users.get(user_id)

    def _user_by_name(self, username: str) -> User:
        if not isinstance(username, str) or not USERNAME_PATTERN.fullmatch(username):
            raise NotFound(f"no user {username!r}")
        return self.users.get_by_username(username)

    # -- finding people ----------------------------------------------------------------

    def find_people(
        self, prefix: str | None = None, *, limit: int | None = None, after: str | None = None
    ) -> UserPage:
        """Return a page of accounts: those whose username starts with ``prefix`` in
        username order, or, without a prefix, the most recently joined first.

        ``prefix`` is trimmed and lower-cased, then must be up to 32 characters of a-z,
        0-9 and "_" (empty: no prefix). ``limit`` is 1..``people_max_limit`` (default
        ``people_default_limit``); ``after`` is a previous page's ``next_cursor``. Pages
        are cached for ``people_cache_ttl`` (on a shared cache, for every server), so a
        new account may take that long to show. Raises ``InvalidInput`` for a bad
        prefix, limit or cursor.
        """
        if limit is None:
            limit = self.settings.people_default_limit
        check_int(limit, "limit", minimum=1, maximum=self.settings.people_max_limit)
        if prefix is not None and not isinstance(prefix, str):
            raise InvalidInput("search by the start of a username")
        wanted = (prefix or "").strip().lower()
        if not _PREFIX_PATTERN.fullmatch(wanted):
            raise InvalidInput("search by the start of a username: up to 32 of a-z, 0-9 and _")
        if after is not None and not isinstance(after, str):
            raise InvalidInput("the cursor is malformed")
        if wanted:
            if after is not None and not USERNAME_PATTERN.fullmatch(after):
                raise InvalidInput("the cursor is malformed")
            key = f"{_PEOPLE_KEY}name:{wanted}:{after or ''}:{limit}"
            value = self.people_lists.get_or_compute(
                key,
                lambda: [
                    user_to_json(user)
                    for user in self.users.search(wanted, limit=limit + 1, after=after)
                ],
            )
            users = [user_from_json(item) for item in cast(list[JSONValue], value)]
            page = tuple(users[:limit])
            more = len(users) > limit
            return UserPage(items=page, next_cursor=page[-1].username if more else None)
        position = FeedPosition.decode(after) if after is not None else None
        key = f"{_PEOPLE_KEY}recent:{after or ''}:{limit}"
        value = self.people_lists.get_or_compute(
            key,
            lambda: [
                user_to_json(user) for user in self.users.recent(limit=limit + 1, before=position)
            ],
        )
        users = [user_from_json(item) for item in cast(list[JSONValue], value)]
        page = tuple(users[:limit])
        cursor = FeedPosition(page[-1].created_at, page[-1].id).encode() if page else None
        return UserPage(items=page, next_cursor=cursor if len(users) > limit else None)

    # -- follows -----------------------------------------------------------------------

    def follow(self, follower_id: str, username: str) -> None:
        """Make ``follower_id`` follow ``username`` and copy that user's recent photos
        (``recent_photos_for_backfill``) into the follower's feed.

        Idempotent. Raises ``NotFound`` for an unknown follower or username,
        ``InvalidInput`` for following oneself.
        """
        follower = self.get_user(follower_id)
        followee = self._user_by_name(username)
        if follower.id == followee.id:
            raise InvalidInput("you cannot follow yourself")
        current = self.follows.following_edge(follower.id, followee.id)
        if current is not None and current.active:
            return
        at = self._stamp(after=current.changed_at if current is not None else None)
        self._write_edge(FollowEdge(follower.id, followee.id, followed_at=at))
        if self.settings.recent_photos_for_backfill:
            recent = self.photos.recent_by_owner(
                followee.id, limit=self.settings.recent_photos_for_backfill
            )
            self.feeds.merge(
                FeedEntry(follower.id, p.id, p.owner_id, p.created_at, added_at=at) for p in recent
            )
        self._invalidate_profiles(follower.username, followee.username)
        self.feed_pages.invalidate(_FEED_KEY + follower.id)

    def is_following(self, follower_id: str, username: str) -> bool:
        """Whether ``follower_id`` follows ``username`` now, as the follower's side records
        it. Raises ``NotFound`` for an unknown username."""
        followee = self._user_by_name(username)
        edge = self.follows.following_edge(follower_id, followee.id)
        return edge is not None and edge.active

    def unfollow(self, follower_id: str, username: str) -> None:
        """Stop ``follower_id`` following ``username``; that user's photos leave the
        follower's feed. Idempotent. Raises like :meth:`follow`."""
        follower = self.get_user(follower_id)
        followee = self._user_by_name(username)
        if follower.id == followee.id:
            raise InvalidInput("you cannot unfollow yourself")
        current = self.follows.following_edge(follower.id, followee.id)
        at = self._stamp(after=current.changed_at if current is not None else None)
        # Written even when the follower's side shows no follow: a follow that failed half
        # way may have reached the followee's side, and this cancels it there.
        self._write_edge(FollowEdge(follower.id, followee.id, unfollowed_at=at))
        self.feeds.remove_owner(follower.id, followee.id, at)
        self._invalidate_profiles(follower.username, followee.username)
        self.feed_pages.invalidate(_FEED_KEY + follower.id)

    def _write_edge(self, edge: FollowEdge) -> None:
        # Followee's side first: fan-out reads it, so from here on new photos reach the
        # follower. If we stop before settle(), the followee's side stays "unsettled" and
        # repair_follows() copies it to the follower's side later; retrying does the same.
        self.follows.record_follower(edge)
        merged = self.follows.record_following(edge)
        self.follows.settle(merged)

    def repair_follows(self, now: float | None = None, *, limit: int = 1000) -> int:
        """Finish follow/unfollow writes that stopped between the two shards; return how
        many edges were repaired. Only edges unsettled for ``follow_repair_grace`` seconds
        are touched, so writes in progress are left alone. Idempotent (a cron job)."""
        at = self.clock.now() if now is None else now
        edges = self.follows.unsettled(before=at - self.settings.follow_repair_grace, limit=limit)
        for edge in edges:
            merged = self.follows.record_following(edge)
            self.follows.settle(merged)
        if edges:
            logger.info("repaired %d half-written follow edges", len(edges))
        return len(edges)

    # -- photos ------------------------------------------------------------------------

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
        limit = self.settings.max_upload_bytes
        if content_length is not None:
            if not is_int(content_length):
                raise InvalidInput("content_length must be an integer")
            if content_length < 0:
                raise InvalidInput("content_length must not be negative")
            if content_length > limit:
                raise TooLarge(too_large_message(limit))
        owner = self.get_user(owner_id)
        with self._spool(stream) as (spool, size):
            if size == 0:
                raise UnsupportedMediaType("the upload is empty")
            image = self.images.process(
                spool,
                thumbnail_size=self.settings.thumbnail_size,
                max_pixels=self.settings.max_image_pixels,
            )
            created_at = self._stamp()
            photo_id = self._ids.new(shard_of(owner.id))
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
            event = self._event(TOPIC_PHOTO_UPLOADED, photo, occurred_at=created_at)
            spool.seek(0)
            try:
                self.blobs.put(
                    photo.blob_key,
                    spool,
                    content_type=photo.content_type,
                    cache_control=self.settings.media_cache_control,
                )
                self.blobs.put(
                    photo.thumbnail_key,
                    image.thumbnail.data,
                    content_type=image.thumbnail.content_type,
                    cache_control=self.settings.media_cache_control,
                )
                self.photos.add(photo, event)
            except BaseException as exc:
                self._discard_blobs(photo, exc)
                raise
        self._photos_changed(owner.id, owner.username)
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
                if self.photos.existing_ids([photo.id]):
                    return
            except ScalecoreError:
                return
        for key in (photo.blob_key, photo.thumbnail_key):
            try:
                self.blobs.delete(key)
            except ScalecoreError as exc:
                logger.warning("could not delete blob %s (%s)", key, type(exc).__name__)

    @contextlib.contextmanager
    def _spool(self, stream: IO[bytes]) -> Iterator[tuple[BinaryIO, int]]:
        """Copy ``stream`` into memory, or to a temporary file once it outgrows
        ``upload_memory_bytes``, counting bytes; yield the copy rewound and its size.

        The temporary file is removed when the block ends, however it ends.
        """
        limit = self.settings.max_upload_bytes
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
                    if handle is None and size > self.settings.upload_memory_bytes:
                        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below
                            prefix="scalecore-upload-",
                            dir=self.settings.upload_tmp_dir,
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
        return self.photos.get(photo_id)

    def delete_photo(self, user_id: str, photo_id: str) -> None:
        """Delete the photo, announce it, then delete its objects; it leaves every feed.

        Raises ``NotFound`` if there is no such photo, ``PermissionDenied`` unless
        ``user_id`` owns it. Objects that cannot be deleted now are left to the
        ``remove_orphan_blobs`` job (they are unreachable once the row is gone).
        """
        photo = self.get_photo(photo_id)
        if photo.owner_id != user_id:
            raise PermissionDenied("only its owner may delete a photo")
        at = self._stamp(after=photo.created_at)
        event = self._event(TOPIC_PHOTO_DELETED, photo, occurred_at=at)
        self.photos.delete(photo.id, event)
        for key in (photo.blob_key, photo.thumbnail_key):
            try:
                self.blobs.delete(key)
            except ScalecoreError as exc:
                logger.warning("could not delete blob %s (%s)", key, type(exc).__name__)
        self._photos_changed(photo.owner_id, photo.owner_username)
        self._relay_now(event)

    def _event(self, topic: str, photo: Photo, *, occurred_at: float) -> OutboxEvent:
        payload = PhotoEvent(
            photo_id=photo.id,
            owner_id=photo.owner_id,
            created_at=photo.created_at,
            occurred_at=occurred_at,
        ).to_payload()
        return OutboxEvent(
            id=self._ids.new(shard_of(photo.owner_id)),
            topic=topic,
            payload=payload,
            created_at=occurred_at,
        )

    def _relay_now(self, event: OutboxEvent) -> None:
        """Publish a just-committed event so feeds update at once; the cron relay
        catches whatever this misses."""
        try:
            self.relay.relay_events([event.id])
        except ScalecoreError as exc:
            logger.warning("event %s stays in the outbox for the relay job (%s)", event.id, exc)

    # -- feeds -------------------------------------------------------------------------

    def apply_photo_event(self, topic: str, payload: JSONValue) -> int:
        """Apply one "photo.uploaded" or "photo.deleted" event to the owner's followers'
        feeds; return how many feeds were written (0 for a popular owner, whose photos
        are merged at read time instead).

        Idempotent and order-insensitive: entries merge by the event's timestamps, so a
        repeated or late message changes nothing. Raises ``InvalidInput`` for an unknown
        topic or a malformed payload (redelivery would not help).
        """
        event = PhotoEvent.from_payload(payload)
        if topic == TOPIC_PHOTO_UPLOADED:
            added_at, removed_at = event.created_at, None
        elif topic == TOPIC_PHOTO_DELETED:
            added_at, removed_at = None, event.occurred_at
        else:
            raise InvalidInput(f"not a photo event topic: {topic!r}")
        if self.follows.counts(event.owner_id).followers > self.settings.fanout_threshold:
            return 0
        written = 0
        after: str | None = None
        while True:
            followers = self.follows.followers(event.owner_id, limit=_FANOUT_BATCH, after=after)
            if followers:
                self.feeds.merge(
                    FeedEntry(
                        follower_id=follower,
                        photo_id=event.photo_id,
                        owner_id=event.owner_id,
                        created_at=event.created_at,
                        added_at=added_at,
                        removed_at=removed_at,
                    )
                    for follower in followers
                )
                for follower in followers:
                    self.feed_pages.invalidate(_FEED_KEY + follower)
                written += len(followers)
            if len(followers) < _FANOUT_BATCH:
                return written
            after = followers[-1]

    def feed(
        self, user_id: str, *, limit: int | None = None, before: str | None = None
    ) -> FeedPage:
        """Return a page of the newest photos of the accounts ``user_id`` follows and of
        the user's own.

        ``limit`` is 1..``feed_max_limit`` (default ``feed_default_limit``); ``before`` is
        a previous page's ``next_cursor``. Raises ``InvalidInput`` for a bad limit or
        cursor, ``NotFound`` for an unknown user. Fanned-out entries are filtered by the
        follows the user has now and by the photos that still exist; the recent photos of
        followed accounts above ``fanout_threshold``, and the user's own, are merged in at
        read time from the owner's cached list of recent photos (on the owner's shard, so
        this holds however users are sharded, and never needs a fan-out to oneself).

        The first page at the default limit is served from the cache (``feed_cache_ttl``):
        fan-out into this feed, follows, unfollows and the user's own uploads and deletes
        invalidate it, so a warm read makes
        no database query and only a popular account's new photo can be late, by at most
        the TTL.
        """
        if limit is None:
            limit = self.settings.feed_default_limit
        check_int(limit, "limit", minimum=1, maximum=self.settings.feed_max_limit)
        position = FeedPosition.decode(before) if before is not None else None
        if position is None and limit == self.settings.feed_default_limit:
            first = limit
            value = self.feed_pages.get_or_compute(
                _FEED_KEY + user_id,
                lambda: feed_page_to_json(self._read_feed(user_id, first, None)),
            )
            return feed_page_from_json(value)
        return self._read_feed(user_id, limit, position)

    def _read_feed(self, user_id: str, limit: int, position: FeedPosition | None) -> FeedPage:
        user = self.get_user(user_id)
        following = set(self.follows.following(user.id))
        need = limit + 1
        if following:
            fanned, scan_end, exhausted = self._scan_feed(user.id, following, position, need)
        else:
            fanned, scan_end, exhausted = [], None, True
        merged = {photo.id: photo for photo in fanned}
        read_time_owners = [user.id]
        if following:
            read_time_owners += [owner for owner in self._popular_ids() if owner in following]
        for owner_id in read_time_owners:
            for photo in self._recent_photos(owner_id, position, need):
                # Below scan_end the fanned-out entries are unknown: merging those would
                # let a later page repeat or skip photos.
                if exhausted or scan_end is None or photo.position > scan_end:
                    merged.setdefault(photo.id, photo)
        ordered = sorted(merged.values(), key=lambda photo: photo.position, reverse=True)
        if len(ordered) > limit:
            items = ordered[:limit]
            return FeedPage(items=tuple(items), next_cursor=items[-1].position.encode())
        if not exhausted and scan_end is not None:
            return FeedPage(items=tuple(ordered), next_cursor=scan_end.encode())
        return FeedPage(items=tuple(ordered), next_cursor=None)

    def _scan_feed(
        self, user_id: str, following: set[str], before: FeedPosition | None, need: int
    ) -> tuple[list[Photo], FeedPosition | None, bool]:
        """Collect up to about ``need`` existing photos from the user's fanned-out feed.

        Returns the photos, the position of the last entry scanned, and whether the feed
        ended there.
        """
        found: list[Photo] = []
        cursor = before
        batch = max(need, _FEED_SCAN_MIN)
        for _ in range(_FEED_SCAN_BATCHES):
            entries = self.feeds.page(user_id, limit=batch, before=cursor)
            if entries:
                cursor = entries[-1].position
            wanted = [entry.photo_id for entry in entries if entry.owner_id in following]
            photos = self.photos.get_many(wanted) if wanted else {}
            found.extend(photos[photo_id] for photo_id in wanted if photo_id in photos)
            if len(entries) < batch:
                return found, cursor, True
            if len(found) >= need:
                break
        return found, cursor, False

    def _popular_ids(self) -> list[str]:
        """Accounts above ``fanout_threshold`` (cached for ``popular_cache_ttl``)."""
        minimum = self.settings.fanout_threshold + 1
        value = self.popular_lists.get_or_compute(
            _POPULAR_KEY, lambda: list[JSONValue](sorted(self.follows.popular(minimum)))
        )
        return [str(item) for item in cast(list[JSONValue], value)]

    def _recent_photos(self, owner_id: str, before: FeedPosition | None, need: int) -> list[Photo]:
        """Up to ``need`` of the owner's photos below ``before``, from the cached list of
        their newest photos, or from the repository when the page lies deeper."""
        value = self.popular_lists.get_or_compute(
            _RECENT_KEY + owner_id,
            lambda: [
                photo_to_json(photo)
                for photo in self.photos.recent_by_owner(owner_id, limit=self._recent_count)
            ],
        )
        cached = [photo_from_json(item) for item in cast(list[JSONValue], value)]
        items = [photo for photo in cached if before is None or photo.position < before]
        if len(items) >= need or len(cached) < self._recent_count:
            return items[:need]
        return self.photos.recent_by_owner(owner_id, limit=need, before=before)

    # -- profiles ----------------------------------------------------------------------

    def profile(self, username: str) -> Profile:
        """Return the user's profile (counts and newest ``profile_photo_count`` photos).

        Served from the cache (stampede-safe, stale-while-revalidate); changes made
        through this service invalidate it. Raises ``NotFound`` for an unknown username.
        """
        if not isinstance(username, str) or not USERNAME_PATTERN.fullmatch(username):
            raise NotFound(f"no user {username!r}")
        value = self.profiles.get_or_compute(
            _PROFILE_KEY + username, lambda: profile_to_json(self._load_profile(username))
        )
        return profile_from_json(value)

    def profile_by_id(self, user_id: str) -> Profile:
        """Return the profile of the user with this id; ``NotFound`` if none."""
        return self.profile(self.get_user(user_id).username)

    def _load_profile(self, username: str) -> Profile:
        user = self.users.get_by_username(username)
        counts = self.follows.counts(user.id)
        photos = self.photos.recent_by_owner(user.id, limit=self.settings.profile_photo_count)
        return Profile(
            user=user,
            followers=counts.followers,
            following=counts.following,
            photos=tuple(photos),
        )

    def _invalidate_profiles(self, *usernames: str) -> None:
        for username in usernames:
            self.profiles.invalidate(_PROFILE_KEY + username)

    def _photos_changed(self, owner_id: str, username: str) -> None:
        self._invalidate_profiles(username)
        self.popular_lists.invalidate(_RECENT_KEY + owner_id)
        self.feed_pages.invalidate(_FEED_KEY + owner_id)  # one's own feed shows them

    # -- maintenance (cron jobs) -------------------------------------------------------

    def remove_orphan_blobs(self, now: float | None = None) -> int:
        """Delete objects under ``photos/`` older than ``orphan_blob_grace`` that belong to
        no photo row (left by a crash mid-upload or a failed delete); return how many.

        The grace period keeps uploads in progress (objects stored, row not yet
        committed) safe. Idempotent.
        """
        cutoff = (self.clock.now() if now is None else now) - self.settings.orphan_blob_grace
        removed = 0
        batch: dict[str, list[str]] = {}

        def sweep() -> int:
            existing = self.photos.existing_ids(list(batch))
            deleted = 0
            for photo_id, keys in batch.items():
                if photo_id in existing:
                    continue
                for key in keys:
                    self.blobs.delete(key)
                    deleted += 1
            batch.clear()
            return deleted

        for info in self.blobs.iter_all("photos/"):
            if info.last_modified.timestamp() > cutoff:
                continue
            batch.setdefault(info.key.split("/")[1], []).append(info.key)
            if len(batch) >= 200:
                removed += sweep()
        if batch:
            removed += sweep()
        if removed:
            logger.info("removed %d orphaned photo objects", removed)
        return removed

    def purge_feed_tombstones(self, now: float | None = None) -> int:
        """Forget feed entries removed more than ``feed_tombstone_retention`` ago."""
        at = self.clock.now() if now is None else now
        return self.feeds.purge_removed(at - self.settings.feed_tombstone_retention)

    def purge_outbox(self, now: float | None = None) -> int:
        """Forget outbox events sent more than ``outbox_retention`` ago."""
        at = self.clock.now() if now is None else now
        return self.outbox.purge_sent(at - self.settings.outbox_retention)

    # -- helpers -----------------------------------------------------------------------

    def _stamp(self, *, after: float | None = None) -> float:
        """A timestamp for a change: the clock, but strictly after every earlier stamp of
        this process and after ``after`` (the newest timestamp already on the thing being
        changed), so last-writer-wins orders a user's own changes as they were made."""
        now = self.clock.now()
        with self._stamp_lock:
            floor = self._last_stamp if after is None else max(self._last_stamp, after)
            stamp = max(now, floor + _STAMP_STEP)
            self._last_stamp = stamp
        return stamp

    def _dummy(self) -> str:
        """A hash of a random password, verified against when the user is unknown."""
        dummy = self._dummy_hash
        if dummy is None:
            # Two threads may both make one; either is as good, and the race is harmless.
            dummy = self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
        return dummy


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
