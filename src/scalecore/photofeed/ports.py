"""The photo feed's own ports: its repositories, the password hasher and the image processor.

Repositories come in a memory flavour (one process) and a SQL flavour (sharded through
:mod:`scalecore.ids`: every id carries its owner's logical shard); the contract suite in
``tests/contract/test_photofeed_repositories.py`` holds both to these docstrings.

Where rows live (SQL): a user on the logical shard of its username (its id carries that
shard); a photo and its outbox events on the owner's; the follower's side of a follow edge
on the follower's and the followee's side on the followee's; a feed entry on the
follower's. Every method that writes is one transaction on one shard, except where its
docstring says it touches several (each shard's part is then atomic on its own).

Every method raises ``BackendUnavailable`` when the store fails; none raises a driver's
exception. Ids that are malformed are treated as unknown (``NotFound`` or absent), never
as an error of another kind, because ids come from URLs.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import BinaryIO, ClassVar

import attrs

from scalecore.capabilities import Capability
from scalecore.outbox import Outbox, OutboxEvent
from scalecore.photofeed.models import (
    Account,
    FeedEntry,
    FeedPosition,
    FollowCounts,
    FollowEdge,
    Photo,
    User,
)

__all__ = [
    "FeedRepository",
    "FollowRepository",
    "ImageProcessor",
    "OutboxRepository",
    "PasswordHasher",
    "PhotoRepository",
    "ProcessedImage",
    "Rendition",
    "UserRepository",
]


class _Repository(abc.ABC):  # noqa: B024 - the ports below add the abstract methods
    """Shared by the repository ports. Capabilities: ``SHARED`` (every process and host
    using the same configuration sees the same data; without it a server keeps state of
    its own, a "puppy"), ``DURABLE`` (data survives a restart)."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def ping(self) -> None:
        """Raise ``BackendUnavailable`` unless the store answers (readiness checks)."""

    def close(self) -> None:
        """Release connections. Idempotent."""


class UserRepository(_Repository):
    """Accounts, found by id or by username (usernames are unique and never change), and
    listed by username prefix or by when they joined (to discover people)."""

    @abc.abstractmethod
    def add(self, account: Account) -> None:
        """Store a new account; raise ``Conflict`` (storing nothing) if the username or the
        id is taken. Safe against concurrent sign-ups of one name: exactly one wins."""

    @abc.abstractmethod
    def get(self, user_id: str) -> User:
        """Return the user with this id; ``NotFound`` if none (or the id is malformed)."""

    @abc.abstractmethod
    def get_by_username(self, username: str) -> User:
        """Return the user with this username; ``NotFound`` if none."""

    @abc.abstractmethod
    def get_account(self, username: str) -> Account:
        """Return the user with its password hash, for login; ``NotFound`` if none."""

    @abc.abstractmethod
    def set_password_hash(self, user_id: str, password_hash: str) -> None:
        """Replace the stored hash (a rehash with newer parameters); ``NotFound`` if none."""

    @abc.abstractmethod
    def search(self, prefix: str, *, limit: int, after: str | None = None) -> list[User]:
        """Return up to ``limit`` users whose username starts with ``prefix`` (``""``: any),
        in code-point order of username, only those strictly after ``after`` when given.

        ``_`` in ``prefix`` is a plain character, never a wildcard. On SQL this asks
        every shard (scatter-gather), each for at most ``limit`` rows.
        """

    @abc.abstractmethod
    def recent(self, *, limit: int, before: FeedPosition | None = None) -> list[User]:
        """Return up to ``limit`` users, most recently joined first, ordered by
        ``(created_at, id)`` descending, only those strictly below ``before`` (a position
        of ``(created_at, user id)``) when given. On SQL a scatter-gather, like
        :meth:`search`."""


class PhotoRepository(_Repository):
    """Photo records, and the outbox events that announce their changes.

    The outbox is the :class:`OutboxRepository` of the same store: :meth:`add` and
    :meth:`delete` write the photo row and its event in one transaction, so an event
    exists if and only if its change was committed.
    """

    @abc.abstractmethod
    def add(self, photo: Photo, event: OutboxEvent) -> None:
        """Store ``photo`` and ``event`` atomically, on the owner's shard.

        Raises ``Conflict`` if the photo id or the event id exists (then neither is
        stored), ``InvalidInput`` if the event's id is not of the photo's logical shard.
        """

    @abc.abstractmethod
    def delete(self, photo_id: str, event: OutboxEvent) -> None:
        """Delete the photo and store ``event`` atomically; ``NotFound`` (and no event)
        if the photo does not exist, e.g. because a concurrent delete won."""

    @abc.abstractmethod
    def get(self, photo_id: str) -> Photo:
        """Return the photo; ``NotFound`` if none (or the id is malformed)."""

    @abc.abstractmethod
    def get_many(self, photo_ids: Iterable[str]) -> dict[str, Photo]:
        """Return the existing photos among ``photo_ids`` by id (one query per shard)."""

    @abc.abstractmethod
    def recent_by_owner(
        self, owner_id: str, *, limit: int, before: FeedPosition | None = None
    ) -> list[Photo]:
        """Return up to ``limit`` of the owner's photos, newest first by position, only
        those strictly below ``before`` when given."""

    @abc.abstractmethod
    def existing_ids(self, photo_ids: Iterable[str]) -> set[str]:
        """Return which of ``photo_ids`` have a photo row (malformed ids never do)."""


#: The photo feed's outbox is the library's outbox port (:class:`scalecore.outbox.Outbox`).
OutboxRepository = Outbox


class FollowRepository(_Repository):
    """Follow edges, stored twice: on the follower's shard and on the followee's.

    Each side holds the edge's LWW state (:class:`FollowEdge`); writes merge. The
    followee's side also carries an "unsettled" mark, set by :meth:`record_follower`
    whenever it learns something, and cleared by :meth:`settle` once the follower's side
    is known to have it too. Writers update the followee's side first, so only that side
    can be ahead; an unsettled edge older than a grace period is a write that stopped half
    way, which :meth:`unsettled` finds for repair. Counts change with the sides' states in
    the same transactions, so they always equal the number of active edges on each side.
    """

    @abc.abstractmethod
    def record_follower(self, edge: FollowEdge) -> FollowEdge:
        """Merge ``edge`` into the followee's side, mark it unsettled if it changed, adjust
        the followee's follower count, and return the merged state."""

    @abc.abstractmethod
    def record_following(self, edge: FollowEdge) -> FollowEdge:
        """Merge ``edge`` into the follower's side, adjust the follower's following count,
        and return the merged state."""

    @abc.abstractmethod
    def settle(self, edge: FollowEdge) -> bool:
        """Clear the followee side's unsettled mark if its state is covered by ``edge`` (a
        state the follower's side is known to hold); return whether it is settled now."""

    @abc.abstractmethod
    def follower_edge(self, followee_id: str, follower_id: str) -> FollowEdge | None:
        """The followee's side of the edge, or ``None`` if it never saw it."""

    @abc.abstractmethod
    def following_edge(self, follower_id: str, followee_id: str) -> FollowEdge | None:
        """The follower's side of the edge, or ``None`` if it never saw it."""

    @abc.abstractmethod
    def unsettled(self, *, before: float, limit: int) -> list[FollowEdge]:
        """Up to ``limit`` unsettled followee-side edges last changed before ``before``
        (on every shard)."""

    @abc.abstractmethod
    def followers(self, user_id: str, *, limit: int, after: str | None = None) -> list[str]:
        """Ids of accounts actively following ``user_id`` (followee's side), ascending,
        strictly after ``after``, at most ``limit``."""

    @abc.abstractmethod
    def following(self, user_id: str) -> list[str]:
        """Ids of every account ``user_id`` actively follows (follower's side)."""

    @abc.abstractmethod
    def counts(self, user_id: str) -> FollowCounts:
        """The user's follower and following counts (zeros for an unknown user)."""

    @abc.abstractmethod
    def popular(self, min_followers: int) -> list[str]:
        """Ids of every user with at least ``min_followers`` followers (all shards)."""


class FeedRepository(_Repository):
    """Each follower's feed as LWW state per (follower, photo), on the follower's shard."""

    @abc.abstractmethod
    def merge(self, entries: Iterable[FeedEntry]) -> None:
        """Merge each entry into the stored state of (follower, photo): the later of each
        timestamp wins, so merging is idempotent and order-insensitive. An entry with
        only ``removed_at`` is stored as a tombstone. Each shard's entries are written in
        one transaction."""

    @abc.abstractmethod
    def remove_owner(self, follower_id: str, owner_id: str, at: float) -> int:
        """Record a removal at ``at`` on every stored entry of ``owner_id``'s photos in
        ``follower_id``'s feed; return how many entries it changed (those whose removal
        was older)."""

    @abc.abstractmethod
    def page(
        self, follower_id: str, *, limit: int, before: FeedPosition | None = None
    ) -> list[FeedEntry]:
        """Up to ``limit`` visible entries of the feed, newest first by position, only
        those strictly below ``before`` when given."""

    @abc.abstractmethod
    def get(self, follower_id: str, photo_id: str) -> FeedEntry | None:
        """The stored state of one entry (visible or not), or ``None``."""

    @abc.abstractmethod
    def purge_removed(self, before: float) -> int:
        """Delete entries that are not visible and were removed before ``before`` (on
        every shard); return how many."""


class PasswordHasher(abc.ABC):
    """A slow, salted password hash (the hash string carries its parameters and salt)."""

    @abc.abstractmethod
    def hash(self, password: str) -> str:
        """Return a new hash of ``password`` with a fresh salt."""

    @abc.abstractmethod
    def verify(self, password_hash: str, password: str) -> bool:
        """Whether ``password`` matches ``password_hash``; ``False`` for a wrong password
        and for a malformed hash. Takes about as long either way."""

    @abc.abstractmethod
    def needs_rehash(self, password_hash: str) -> bool:
        """Whether the hash was made with other parameters than this hasher's."""


@attrs.frozen
class Rendition:
    """An encoded image made from an upload (the thumbnail)."""

    data: bytes = attrs.field(repr=False)
    content_type: str
    extension: str
    width: int
    height: int


@attrs.frozen
class ProcessedImage:
    """What an upload turned out to be, and its thumbnail.

    ``content_type``/``extension`` come from decoding the bytes, never from what the
    client claimed; ``width``/``height`` are as displayed (EXIF orientation applied).
    """

    content_type: str
    extension: str
    width: int
    height: int
    thumbnail: Rendition


class ImageProcessor(abc.ABC):
    """Decodes untrusted uploads and makes thumbnails."""

    @abc.abstractmethod
    def process(self, source: BinaryIO, *, thumbnail_size: int, max_pixels: int) -> ProcessedImage:
        """Decode the image in ``source`` (read from its current position) and make a
        thumbnail whose longest side is at most ``thumbnail_size``, orientation applied.

        Raises ``UnsupportedMediaType`` if the bytes are not an image of a supported
        format, are truncated or corrupt, or have more than ``max_pixels`` pixels (a
        decompression bomb is refused before it is decoded).
        """
