"""Profiles: a user's counts and newest photos, cached and stampede-safe.

Part of :class:`~scalecore.photofeed.service.PhotoFeed`; reads the ports it needs from the
shared :class:`~scalecore.photofeed.context.ServiceContext`.
"""

from __future__ import annotations

import logging

from scalecore.errors import NotFound
from scalecore.photofeed.context import PROFILE_KEY, USERNAME_PATTERN, ServiceContext
from scalecore.photofeed.models import Profile, profile_from_json, profile_to_json

__all__ = ["ProfilePages"]

logger = logging.getLogger("scalecore.photofeed.service")  # one logger for the service


class ProfilePages:
    """Profiles: counts and newest photos, served from the cache."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def profile(self, username: str) -> Profile:
        """Return the user's profile (counts and newest ``profile_photo_count`` photos).

        Served from the cache (stampede-safe, stale-while-revalidate); changes made
        through this service invalidate it. Raises ``NotFound`` for an unknown username.
        """
        if not isinstance(username, str) or not USERNAME_PATTERN.fullmatch(username):
            raise NotFound(f"no user {username!r}")
        value = self.ctx.profiles.get_or_compute(
            PROFILE_KEY + username, lambda: profile_to_json(self._load_profile(username))
        )
        return profile_from_json(value)

    def profile_by_id(self, user_id: str) -> Profile:
        """Return the profile of the user with this id; ``NotFound`` if none."""
        return self.profile(self.ctx.get_user(user_id).username)

    def _load_profile(self, username: str) -> Profile:
        user = self.ctx.users.get_by_username(username)
        counts = self.ctx.follows.counts(user.id)
        photos = self.ctx.photos.recent_by_owner(
            user.id, limit=self.ctx.settings.profile_photo_count
        )
        return Profile(
            user=user,
            followers=counts.followers,
            following=counts.following,
            photos=tuple(photos),
        )
