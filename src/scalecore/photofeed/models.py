"""The photo feed's values: users, photos, follow edges, feed entries, outbox events, pages.

All are frozen attrs classes: plain values that repositories translate to and from their
rows explicitly, and that the service caches as JSON (:func:`photo_to_json` and friends).

Two of them are replicated state, not plain records. A :class:`FollowEdge` and a
:class:`FeedEntry` each hold the latest "add" and the latest "remove" timestamp of one
element of a last-writer-wins element set (:mod:`scalecore.crdt`): the edge is an element
of "who X follows", the entry an element of "what is in X's feed". Writers only ever
*merge* (keep the larger of each timestamp), so applying the same change twice, or two
changes in either order, ends in the same state. :func:`lww_present` is the membership
rule, the same as :meth:`scalecore.crdt.LWWElementSet.contains` with ``bias="add"``.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import attrs

from scalecore.errors import InvalidInput
from scalecore.ids import parse_id
from scalecore.outbox import OutboxEvent
from scalecore.types import JSONObject

__all__ = [
    "Account",
    "FeedEntry",
    "FeedPage",
    "FeedPosition",
    "FollowCounts",
    "FollowEdge",
    "OutboxEvent",
    "Photo",
    "Profile",
    "User",
    "later",
    "lww_present",
    "photo_from_json",
    "photo_to_json",
    "profile_from_json",
    "profile_to_json",
    "user_from_json",
    "user_to_json",
]


def lww_present(added_at: float | None, removed_at: float | None) -> bool:
    """Whether an element with these latest add/remove timestamps is in an LWW set.

    Present when it was added and its add is not older than its remove (a tie keeps it,
    like ``LWWElementSet(bias="add")``). ``None`` means "never seen".
    """
    if added_at is None:
        return False
    return removed_at is None or added_at >= removed_at


def later(left: float | None, right: float | None) -> float | None:
    """The larger of two optional timestamps (``None`` is older than any timestamp)."""
    if left is None:
        return right
    if right is None:
        return left
    return max(left, right)


def _not_after(mine: float | None, theirs: float | None) -> bool:
    return mine is None or (theirs is not None and mine <= theirs)


@attrs.frozen
class User:
    """A registered account as everyone may see it (no credentials)."""

    id: str
    username: str
    created_at: float


@attrs.frozen
class Account:
    """A user with the stored password hash; only the user repository and login see it."""

    user: User
    password_hash: str = attrs.field(repr=False)


@attrs.frozen(order=True)
class FeedPosition:
    """Where a photo sorts in feeds and profiles: by ``created_at``, then by ``photo_id``.

    Pages run newest first; a page ``before`` a position holds only photos that sort
    strictly below it. :meth:`encode` turns a position into the opaque cursor clients see.
    """

    created_at: float
    photo_id: str

    def encode(self) -> str:
        """The cursor: URL-safe base64 (no padding) of ``"<created_at>:<photo_id>"``."""
        raw = f"{self.created_at!r}:{self.photo_id}".encode("ascii")
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, cursor: object) -> FeedPosition:
        """Parse a cursor made by :meth:`encode`; raise ``InvalidInput`` if it is not one."""
        if not isinstance(cursor, str) or not cursor or len(cursor) > 128:
            raise InvalidInput("the cursor is malformed")
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
            created_text, photo_id = raw.split(":")
            created_at = float(created_text)
            parse_id(photo_id)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            # InvalidInput is a ValueError: a bad id lands here too.
            raise InvalidInput("the cursor is malformed") from None
        if not math.isfinite(created_at) or created_at < 0:
            raise InvalidInput("the cursor is malformed")
        return cls(created_at=created_at, photo_id=photo_id)


@attrs.frozen
class Photo:
    """An uploaded photo; ``blob_key`` and ``thumbnail_key`` name its two stored objects.

    ``width`` and ``height`` are the displayed size (after the EXIF orientation is
    applied); ``size`` is the original's length in bytes.
    """

    id: str
    owner_id: str
    owner_username: str
    caption: str
    created_at: float
    blob_key: str
    thumbnail_key: str
    content_type: str
    width: int
    height: int
    size: int

    @property
    def position(self) -> FeedPosition:
        return FeedPosition(self.created_at, self.id)


@attrs.frozen
class FeedPage:
    """One page of a feed, newest first; pass ``next_cursor`` as ``before`` for the next.

    ``next_cursor`` is ``None`` on the last page.
    """

    items: tuple[Photo, ...]
    next_cursor: str | None


@attrs.frozen
class UserPage:
    """One page of a list of accounts; pass ``next_cursor`` back for the next page
    (``None`` on the last)."""

    items: tuple[User, ...]
    next_cursor: str | None


@attrs.frozen
class Profile:
    """A user with follower/following counts and their newest photos."""

    user: User
    followers: int
    following: int
    photos: tuple[Photo, ...]


@attrs.frozen
class FollowCounts:
    """How many accounts follow a user, and how many the user follows."""

    followers: int = 0
    following: int = 0


@attrs.frozen
class FollowEdge:
    """The replicated state of "``follower_id`` follows ``followee_id``".

    ``followed_at``/``unfollowed_at`` are the latest follow and unfollow timestamps seen
    (``None``: never). The edge is :attr:`active` by :func:`lww_present`.
    """

    follower_id: str
    followee_id: str
    followed_at: float | None = None
    unfollowed_at: float | None = None

    @property
    def active(self) -> bool:
        return lww_present(self.followed_at, self.unfollowed_at)

    @property
    def changed_at(self) -> float:
        """The latest timestamp the edge has seen (0.0 for an empty edge)."""
        return later(self.followed_at, self.unfollowed_at) or 0.0

    def merge(self, other: FollowEdge) -> FollowEdge:
        """The join of two states of the same edge (commutative, idempotent)."""
        return attrs.evolve(
            self,
            followed_at=later(self.followed_at, other.followed_at),
            unfollowed_at=later(self.unfollowed_at, other.unfollowed_at),
        )

    def covered_by(self, other: FollowEdge) -> bool:
        """Whether ``other`` has seen every change this state has seen."""
        return _not_after(self.followed_at, other.followed_at) and _not_after(
            self.unfollowed_at, other.unfollowed_at
        )


@attrs.frozen
class FeedEntry:
    """The replicated state of one photo in one follower's feed.

    ``owner_id`` and ``created_at`` describe the photo (for ordering and for removing an
    owner's photos on unfollow); ``added_at``/``removed_at`` are the LWW timestamps. A
    removal may be recorded before the addition it cancels arrives (a tombstone).
    """

    follower_id: str
    photo_id: str
    owner_id: str
    created_at: float
    added_at: float | None = None
    removed_at: float | None = None

    @property
    def visible(self) -> bool:
        return lww_present(self.added_at, self.removed_at)

    @property
    def position(self) -> FeedPosition:
        return FeedPosition(self.created_at, self.photo_id)

    def merge(self, other: FeedEntry) -> FeedEntry:
        """The join of two states of the same entry (commutative, idempotent)."""
        return attrs.evolve(
            self,
            added_at=later(self.added_at, other.added_at),
            removed_at=later(self.removed_at, other.removed_at),
        )


# -- JSON forms, for caches ------------------------------------------------------------


def user_to_json(user: User) -> JSONObject:
    return {"id": user.id, "username": user.username, "created_at": user.created_at}


def user_from_json(data: Any) -> User:
    return User(id=str(data["id"]), username=str(data["username"]), created_at=data["created_at"])


def photo_to_json(photo: Photo) -> JSONObject:
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


def photo_from_json(data: Any) -> Photo:
    return Photo(
        id=data["id"],
        owner_id=data["owner_id"],
        owner_username=data["owner_username"],
        caption=data["caption"],
        created_at=data["created_at"],
        blob_key=data["blob_key"],
        thumbnail_key=data["thumbnail_key"],
        content_type=data["content_type"],
        width=data["width"],
        height=data["height"],
        size=data["size"],
    )


def feed_page_to_json(page: FeedPage) -> JSONObject:
    return {
        "items": [photo_to_json(photo) for photo in page.items],
        "next": page.next_cursor,
    }


def feed_page_from_json(data: Any) -> FeedPage:
    cursor = data["next"]
    return FeedPage(
        items=tuple(photo_from_json(item) for item in data["items"]),
        next_cursor=None if cursor is None else str(cursor),
    )


def profile_to_json(profile: Profile) -> JSONObject:
    return {
        "user": user_to_json(profile.user),
        "followers": profile.followers,
        "following": profile.following,
        "photos": [photo_to_json(photo) for photo in profile.photos],
    }


def profile_from_json(data: Any) -> Profile:
    return Profile(
        user=user_from_json(data["user"]),
        followers=int(data["followers"]),
        following=int(data["following"]),
        photos=tuple(photo_from_json(item) for item in data["photos"]),
    )
