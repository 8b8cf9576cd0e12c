"""Feeds: fan-out of photo events on write, and the feed read that merges popular accounts in.

Part of :class:`~scalecore.photofeed.service.PhotoFeed`; reads the ports it needs from the
shared :class:`~scalecore.photofeed.context.ServiceContext`.
"""

from __future__ import annotations

import logging
from typing import cast

from scalecore.errors import InvalidInput
from scalecore.photofeed.context import FEED_KEY, POPULAR_KEY, RECENT_KEY, ServiceContext
from scalecore.photofeed.events import TOPIC_PHOTO_DELETED, TOPIC_PHOTO_UPLOADED, PhotoEvent
from scalecore.photofeed.models import (
    FeedEntry,
    FeedPage,
    FeedPosition,
    Photo,
    feed_page_from_json,
    feed_page_to_json,
    photo_from_json,
    photo_to_json,
)
from scalecore.types import JSONValue
from scalecore.validate import check_int

__all__ = ["Timelines"]

logger = logging.getLogger("scalecore.photofeed.service")  # one logger for the service

#: Followers written per feed transaction batch during fan-out.
_FANOUT_BATCH = 500
#: How many batches of feed entries one feed read scans at most before returning a page
#: (possibly short) with a cursor to continue from; bounds the work of a read whose feed
#: is full of entries it must skip (photos deleted, accounts unfollowed).
_FEED_SCAN_BATCHES = 8
#: Smallest batch a feed read asks the feed repository for.
_FEED_SCAN_MIN = 20


class Timelines:
    """Fan-out of photo events into followers' feeds, and the feed read that merges
    popular accounts' and one's own photos in."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

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
        if self.ctx.follows.counts(event.owner_id).followers > self.ctx.settings.fanout_threshold:
            return 0
        written = 0
        after: str | None = None
        while True:
            followers = self.ctx.follows.followers(event.owner_id, limit=_FANOUT_BATCH, after=after)
            if followers:
                self.ctx.feeds.merge(
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
                    self.ctx.feed_pages.invalidate(FEED_KEY + follower)
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
            limit = self.ctx.settings.feed_default_limit
        check_int(limit, "limit", minimum=1, maximum=self.ctx.settings.feed_max_limit)
        position = FeedPosition.decode(before) if before is not None else None
        if position is None and limit == self.ctx.settings.feed_default_limit:
            first = limit
            value = self.ctx.feed_pages.get_or_compute(
                FEED_KEY + user_id,
                lambda: feed_page_to_json(self._read_feed(user_id, first, None)),
            )
            return feed_page_from_json(value)
        return self._read_feed(user_id, limit, position)

    def _read_feed(self, user_id: str, limit: int, position: FeedPosition | None) -> FeedPage:
        user = self.ctx.get_user(user_id)
        following = set(self.ctx.follows.following(user.id))
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
            entries = self.ctx.feeds.page(user_id, limit=batch, before=cursor)
            if entries:
                cursor = entries[-1].position
            wanted = [entry.photo_id for entry in entries if entry.owner_id in following]
            photos = self.ctx.photos.get_many(wanted) if wanted else {}
            found.extend(photos[photo_id] for photo_id in wanted if photo_id in photos)
            if len(entries) < batch:
                return found, cursor, True
            if len(found) >= need:
                break
        return found, cursor, False

    def _popular_ids(self) -> list[str]:
        """Accounts above ``fanout_threshold`` (cached for ``popular_cache_ttl``)."""
        minimum = self.ctx.settings.fanout_threshold + 1
        value = self.ctx.popular_lists.get_or_compute(
            POPULAR_KEY, lambda: list[JSONValue](sorted(self.ctx.follows.popular(minimum)))
        )
        return [str(item) for item in cast(list[JSONValue], value)]

    def _recent_photos(self, owner_id: str, before: FeedPosition | None, need: int) -> list[Photo]:
        """Up to ``need`` of the owner's photos below ``before``, from the cached list of
        their newest photos, or from the repository when the page lies deeper."""
        value = self.ctx.popular_lists.get_or_compute(
            RECENT_KEY + owner_id,
            lambda: [
                photo_to_json(photo)
                for photo in self.ctx.photos.recent_by_owner(owner_id, limit=self.ctx.recent_count)
            ],
        )
        cached = [photo_from_json(item) for item in cast(list[JSONValue], value)]
        items = [photo for photo in cached if before is None or photo.position < before]
        if len(items) >= need or len(cached) < self.ctx.recent_count:
            return items[:need]
        return self.ctx.photos.recent_by_owner(owner_id, limit=need, before=before)
