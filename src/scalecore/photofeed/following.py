"""Follows: the follow graph, written on both users' shards, and its repair job.

Part of :class:`~scalecore.photofeed.service.PhotoFeed`; reads the ports it needs from the
shared :class:`~scalecore.photofeed.context.ServiceContext`.
"""

from __future__ import annotations

import logging

from scalecore.errors import InvalidInput
from scalecore.photofeed.context import FEED_KEY, ServiceContext
from scalecore.photofeed.models import FeedEntry, FollowEdge

__all__ = ["FollowGraph"]

logger = logging.getLogger("scalecore.photofeed.service")  # one logger for the service


class FollowGraph:
    """Follow and unfollow, written on both users' shards; ``repair_follows`` finishes
    half-done writes."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def follow(self, follower_id: str, username: str) -> None:
        """Make ``follower_id`` follow ``username`` and copy that user's recent photos
        (``recent_photos_for_backfill``) into the follower's feed.

        Idempotent. Raises ``NotFound`` for an unknown follower or username,
        ``InvalidInput`` for following oneself.
        """
        follower = self.ctx.get_user(follower_id)
        followee = self.ctx.user_by_name(username)
        if follower.id == followee.id:
            raise InvalidInput("you cannot follow yourself")
        current = self.ctx.follows.following_edge(follower.id, followee.id)
        if current is not None and current.active:
            return
        at = self.ctx.stamp(after=current.changed_at if current is not None else None)
        self._write_edge(FollowEdge(follower.id, followee.id, followed_at=at))
        if self.ctx.settings.recent_photos_for_backfill:
            recent = self.ctx.photos.recent_by_owner(
                followee.id, limit=self.ctx.settings.recent_photos_for_backfill
            )
            self.ctx.feeds.merge(
                FeedEntry(follower.id, p.id, p.owner_id, p.created_at, added_at=at) for p in recent
            )
        self.ctx.invalidate_profiles(follower.username, followee.username)
        self.ctx.feed_pages.invalidate(FEED_KEY + follower.id)

    def is_following(self, follower_id: str, username: str) -> bool:
        """Whether ``follower_id`` follows ``username`` now, as the follower's side records
        it. Raises ``NotFound`` for an unknown username."""
        followee = self.ctx.user_by_name(username)
        edge = self.ctx.follows.following_edge(follower_id, followee.id)
        return edge is not None and edge.active

    def unfollow(self, follower_id: str, username: str) -> None:
        """Stop ``follower_id`` following ``username``; that user's photos leave the
        follower's feed. Idempotent. Raises like :meth:`follow`."""
        follower = self.ctx.get_user(follower_id)
        followee = self.ctx.user_by_name(username)
        if follower.id == followee.id:
            raise InvalidInput("you cannot unfollow yourself")
        current = self.ctx.follows.following_edge(follower.id, followee.id)
        at = self.ctx.stamp(after=current.changed_at if current is not None else None)
        # Written even when the follower's side shows no follow: a follow that failed half
        # way may have reached the followee's side, and this cancels it there.
        self._write_edge(FollowEdge(follower.id, followee.id, unfollowed_at=at))
        self.ctx.feeds.remove_owner(follower.id, followee.id, at)
        self.ctx.invalidate_profiles(follower.username, followee.username)
        self.ctx.feed_pages.invalidate(FEED_KEY + follower.id)

    def _write_edge(self, edge: FollowEdge) -> None:
        # Followee's side first: fan-out reads it, so from here on new photos reach the
        # follower. If we stop before settle(), the followee's side stays "unsettled" and
        # repair_follows() copies it to the follower's side later; retrying does the same.
        self.ctx.follows.record_follower(edge)
        merged = self.ctx.follows.record_following(edge)
        self.ctx.follows.settle(merged)

    def repair_follows(self, now: float | None = None, *, limit: int = 1000) -> int:
        """Finish follow/unfollow writes that stopped between the two shards; return how
        many edges were repaired. Only edges unsettled for ``follow_repair_grace`` seconds
        are touched, so writes in progress are left alone. Idempotent (a cron job)."""
        at = self.ctx.clock.now() if now is None else now
        edges = self.ctx.follows.unsettled(
            before=at - self.ctx.settings.follow_repair_grace, limit=limit
        )
        for edge in edges:
            merged = self.ctx.follows.record_following(edge)
            self.ctx.follows.settle(merged)
        if edges:
            logger.info("repaired %d half-written follow edges", len(edges))
        return len(edges)
