"""PhotoFeed: the application service of the reference photo-sharing site.

Everything goes through ports: accounts, photos, follows and feeds through the repositories
of :mod:`scalecore.photofeed.ports`, bytes through the BlobStore, events through the outbox
and the Bus, cached reads through the Cache. The web layer, the feed worker and the cron
jobs all call this one class: a facade over one part per concern, all sharing one
:class:`~scalecore.photofeed.context.ServiceContext` (the ports, settings and cache
loaders):

- :mod:`~scalecore.photofeed.accounts`: sign up, log in, find people;
- :mod:`~scalecore.photofeed.following`: follow, unfollow, and the repair job;
- :mod:`~scalecore.photofeed.uploads`: spool, check, store, announce and delete photos;
- :mod:`~scalecore.photofeed.timelines`: fan-out on write and the merged feed read;
- :mod:`~scalecore.photofeed.profiles`: cached profiles;
- :mod:`~scalecore.photofeed.maintenance`: the cron jobs.

``docs/photofeed.md`` tells the whole story; in short:

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

Timestamps of changes come from :meth:`ServiceContext.stamp
<scalecore.photofeed.context.ServiceContext.stamp>`, which never repeats or goes back
within a process and is pushed past any timestamp already seen on the edge being changed,
so a user's own follow/unfollow sequence is ordered even when server clocks disagree.

Every public method raises only :mod:`scalecore.errors` exceptions.
"""

from __future__ import annotations

from typing import IO

from scalecore.photofeed.accounts import Accounts
from scalecore.photofeed.context import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    USERNAME_PATTERN,
    ServiceContext,
)
from scalecore.photofeed.events import TOPOLOGY
from scalecore.photofeed.following import FollowGraph
from scalecore.photofeed.maintenance import Maintenance
from scalecore.photofeed.models import FeedPage, Photo, Profile, User, UserPage
from scalecore.photofeed.profiles import ProfilePages
from scalecore.photofeed.timelines import Timelines
from scalecore.photofeed.uploads import Uploads, size_text, too_large_message
from scalecore.types import JSONValue

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "USERNAME_PATTERN",
    "PhotoFeed",
    "size_text",
    "too_large_message",
]


class PhotoFeed(ServiceContext):
    """The photo feed's use cases. Thread-safe: share one instance per process.

    Constructor arguments are keyword-only: the repositories (``users``, ``photos``,
    ``outbox`` (the photos store's outbox), ``follows``, ``feed``), the ports ``blobs``,
    ``cache`` and ``bus``, the ``hasher`` and ``images`` adapters, and optionally ``clock``
    (SystemClock), ``settings`` (defaults) and ``ids`` (an IdGenerator on ``clock``).
    Building one touches no backend. The repositories are kept as the attributes
    ``users``, ``photos``, ``outbox``, ``follows`` and ``feeds``; the parts as ``accounts``,
    ``follow_graph``, ``uploads``, ``timelines``, ``profile_pages`` and ``maintenance``.
    """

    accounts: Accounts
    follow_graph: FollowGraph
    uploads: Uploads
    timelines: Timelines
    profile_pages: ProfilePages
    maintenance: Maintenance

    def _compose(self) -> None:
        self.accounts = Accounts(self)
        self.follow_graph = FollowGraph(self)
        self.uploads = Uploads(self)
        self.timelines = Timelines(self)
        self.profile_pages = ProfilePages(self)
        self.maintenance = Maintenance(self)

    def declare_queues(self) -> None:
        """Declare the feed worker's queues (``TOPOLOGY``) on the bus. Idempotent.

        Call it once at start-up in every process that publishes, before the first
        upload: a bus drops messages of a topic no group was declared for, so without it
        events published while no worker is subscribed would be lost.
        """
        for topic, group in TOPOLOGY:
            self.bus.declare(topic, group)

    # -- accounts ----------------------------------------------------------------

    def sign_up(self, username: str, password: str) -> User:
        """See :meth:`Accounts.sign_up`."""
        return self.accounts.sign_up(username, password)

    def authenticate(self, username: str, password: str) -> User:
        """See :meth:`Accounts.authenticate`."""
        return self.accounts.authenticate(username, password)

    def find_people(
        self, prefix: str | None = None, *, limit: int | None = None, after: str | None = None
    ) -> UserPage:
        """See :meth:`Accounts.find_people`."""
        return self.accounts.find_people(prefix, limit=limit, after=after)

    # -- following ---------------------------------------------------------------

    def follow(self, follower_id: str, username: str) -> None:
        """See :meth:`FollowGraph.follow`."""
        return self.follow_graph.follow(follower_id, username)

    def is_following(self, follower_id: str, username: str) -> bool:
        """See :meth:`FollowGraph.is_following`."""
        return self.follow_graph.is_following(follower_id, username)

    def unfollow(self, follower_id: str, username: str) -> None:
        """See :meth:`FollowGraph.unfollow`."""
        return self.follow_graph.unfollow(follower_id, username)

    def repair_follows(self, now: float | None = None, *, limit: int = 1000) -> int:
        """See :meth:`FollowGraph.repair_follows`."""
        return self.follow_graph.repair_follows(now, limit=limit)

    # -- uploads -----------------------------------------------------------------

    def upload_photo(
        self,
        owner_id: str,
        stream: IO[bytes],
        *,
        caption: str = "",
        content_length: int | None = None,
    ) -> Photo:
        """See :meth:`Uploads.upload_photo`."""
        return self.uploads.upload_photo(
            owner_id, stream, caption=caption, content_length=content_length
        )

    def get_photo(self, photo_id: str) -> Photo:
        """See :meth:`Uploads.get_photo`."""
        return self.uploads.get_photo(photo_id)

    def delete_photo(self, user_id: str, photo_id: str) -> None:
        """See :meth:`Uploads.delete_photo`."""
        return self.uploads.delete_photo(user_id, photo_id)

    # -- timelines ---------------------------------------------------------------

    def apply_photo_event(self, topic: str, payload: JSONValue) -> int:
        """See :meth:`Timelines.apply_photo_event`."""
        return self.timelines.apply_photo_event(topic, payload)

    def feed(
        self, user_id: str, *, limit: int | None = None, before: str | None = None
    ) -> FeedPage:
        """See :meth:`Timelines.feed`."""
        return self.timelines.feed(user_id, limit=limit, before=before)

    # -- profiles ----------------------------------------------------------------

    def profile(self, username: str) -> Profile:
        """See :meth:`ProfilePages.profile`."""
        return self.profile_pages.profile(username)

    def profile_by_id(self, user_id: str) -> Profile:
        """See :meth:`ProfilePages.profile_by_id`."""
        return self.profile_pages.profile_by_id(user_id)

    # -- maintenance -------------------------------------------------------------

    def remove_orphan_blobs(self, now: float | None = None) -> int:
        """See :meth:`Maintenance.remove_orphan_blobs`."""
        return self.maintenance.remove_orphan_blobs(now)

    def purge_feed_tombstones(self, now: float | None = None) -> int:
        """See :meth:`Maintenance.purge_feed_tombstones`."""
        return self.maintenance.purge_feed_tombstones(now)

    def purge_outbox(self, now: float | None = None) -> int:
        """See :meth:`Maintenance.purge_outbox`."""
        return self.maintenance.purge_outbox(now)
