"""Domain values as the JSON shapes of the API (and the values templates show)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from scalecore.photofeed.models import FeedPage, Photo, Profile, User, UserPage

__all__ = [
    "feed_json",
    "iso_time",
    "me_json",
    "media_url",
    "people_json",
    "photo_json",
    "profile_json",
    "user_json",
]


def iso_time(epoch: float) -> str:
    """``epoch`` seconds as ISO-8601 UTC with milliseconds: ``2024-05-01T12:00:00.000Z``."""
    moment = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def media_url(key: str) -> str:
    """The app URL that serves blob ``key``."""
    return "/media/" + quote(key, safe="/")


def user_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "username": user.username}


def photo_json(photo: Photo) -> dict[str, Any]:
    return {
        "id": photo.id,
        "owner": photo.owner_username,
        "caption": photo.caption,
        "created_at": iso_time(photo.created_at),
        "url": media_url(photo.blob_key),
        "thumbnail_url": media_url(photo.thumbnail_key),
    }


def me_json(profile: Profile) -> dict[str, Any]:
    return {
        **user_json(profile.user),
        "followers": profile.followers,
        "following": profile.following,
    }


def profile_json(profile: Profile) -> dict[str, Any]:
    return {**me_json(profile), "photos": [photo_json(p) for p in profile.photos]}


def people_json(page: UserPage) -> dict[str, Any]:
    return {"items": [user_json(u) for u in page.items], "next": page.next_cursor}


def feed_json(page: FeedPage) -> dict[str, Any]:
    return {"items": [photo_json(p) for p in page.items], "next": page.next_cursor}
