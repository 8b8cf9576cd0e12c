"""The whole photo feed over SQL repositories, the in-process bus, a memory cache and blobs.

A user story end to end: sign up, log in, follow, upload, fan-out by the feed worker, read
the feed page by page, delete, unfollow; then the failure paths that span components (a
broker outage relayed later by the cron job, a follow written on one shard only, accounts
merged at read time). Runs on three SQLite shard files, and on three PostgreSQL databases
(marked integration), with the bus delivering inline ("sync") or on worker threads.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from PIL import Image

from adapters.blob.memory import MemoryBlobStore
from adapters.bus.inprocess import InProcessBus
from adapters.cache.memory import MemoryCache
from adapters.ledger.memory import MemoryJobLedger
from adapters.photofeed.feed.sql import SqlFeedRepository
from adapters.photofeed.follows.sql import SqlFollowRepository
from adapters.photofeed.images.pillow import PillowImageProcessor
from adapters.photofeed.outbox.sql import SqlOutboxRepository
from adapters.photofeed.passwords.argon2 import Argon2PasswordHasher
from adapters.photofeed.photos.sql import SqlPhotoRepository
from adapters.photofeed.schema import METADATA
from adapters.photofeed.users.sql import SqlUserRepository
from adapters.sessions.memory import MemorySessionStore
from adapters.sql.shards import Databases
from scalecore.clock import ManualClock
from scalecore.cron import Scheduler
from scalecore.errors import AuthenticationFailed, BackendUnavailable, NotFound
from scalecore.photofeed import (
    FEED_GROUP,
    TOPOLOGY,
    FeedWorker,
    PhotoFeed,
    PhotoFeedSettings,
    cron_jobs,
)
from scalecore.photofeed.models import FollowEdge, Photo, User

SHARDS = 3


def image(fmt: str = "JPEG", size: tuple[int, int] = (120, 90), color: Any = "navy") -> bytes:
    out = io.BytesIO()
    Image.new("RGBA" if fmt == "PNG" else "RGB", size, color).save(out, format=fmt)
    return out.getvalue()


@attrs.define
class Stack:
    service: PhotoFeed
    bus: InProcessBus
    blobs: MemoryBlobStore
    clock: ManualClock
    databases: Databases
    tmp: Path

    def settle(self) -> None:
        """Wait until the feed worker has handled everything published."""
        assert self.bus.drain(timeout=10)

    def upload(self, user: User, fmt: str = "JPEG", caption: str = "") -> Photo:
        self.clock.advance(1)
        data = image(fmt)
        photo = self.service.upload_photo(
            user.id, io.BytesIO(data), caption=caption, content_length=len(data)
        )
        self.settle()
        return photo

    def feed_ids(self, user: User, limit: int = 50) -> list[str]:
        ids: list[str] = []
        cursor = None
        while True:
            page = self.service.feed(user.id, limit=limit, before=cursor)
            ids.extend(photo.id for photo in page.items)
            if page.next_cursor is None:
                return ids
            cursor = page.next_cursor


def shard_urls(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> list[str]:
    if backend == "sqlite":
        return [f"sqlite:///{tmp_path}/shard-{i}.db" for i in range(SHARDS)]
    scratch_database = request.getfixturevalue("scratch_database")
    return [scratch_database(f"flow{i}") for i in range(SHARDS)]


@pytest.fixture(
    params=[
        pytest.param(("sqlite", "sync"), id="sqlite-sync"),
        pytest.param(("sqlite", "threaded"), id="sqlite-threaded"),
        pytest.param(
            ("postgres", "threaded"), id="postgres-threaded", marks=pytest.mark.integration
        ),
    ]
)
def make_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Build the service over fresh SQL shards; every stack is torn down afterwards."""
    backend, mode = request.param
    built: list[Stack] = []

    def make(**settings: Any) -> Stack:
        urls = shard_urls(request, tmp_path / str(len(built)), backend)
        databases = Databases(
            metadata=METADATA, shards=urls, create_databases=backend == "postgres"
        )
        databases.create_schema()
        clock = ManualClock()
        bus = InProcessBus(mode=mode, clock=clock, retry_delays=[0.01])
        for topic, group in TOPOLOGY:
            bus.declare(topic, group)
        blobs = MemoryBlobStore(clock=clock)
        settings.setdefault("upload_tmp_dir", str(tmp_path))
        settings.setdefault("upload_memory_bytes", 512)
        service = PhotoFeed(
            users=SqlUserRepository(database=databases.store("users")),
            photos=SqlPhotoRepository(database=databases.store("photos")),
            outbox=SqlOutboxRepository(database=databases.store("photos")),
            follows=SqlFollowRepository(database=databases.store("follows")),
            feed=SqlFeedRepository(database=databases.store("feed")),
            blobs=blobs,
            cache=MemoryCache(clock=clock),
            bus=bus,
            hasher=Argon2PasswordHasher(time_cost=1, memory_cost=8, parallelism=1),
            images=PillowImageProcessor(),
            clock=clock,
            settings=PhotoFeedSettings(**settings),
        )
        FeedWorker(service).attach(bus)
        bus.start()
        stack = Stack(service, bus, blobs, clock, databases, tmp_path)
        built.append(stack)
        return stack

    yield make
    for stack in built:  # scratch databases are dropped at the end of the run
        stack.bus.close()
        stack.databases.dispose()


def test_sign_up_follow_upload_feed_delete_unfollow(make_stack: Any) -> None:
    stack: Stack = make_stack()
    service = stack.service
    alice = service.sign_up("alice", "alice-password")
    bob = service.sign_up("bob", "bob-password")
    carol = service.sign_up("carol", "carol-password")
    assert service.authenticate("bob", "bob-password") == bob
    with pytest.raises(AuthenticationFailed):
        service.authenticate("bob", "alice-password")

    service.follow(bob.id, "alice")
    photos = [stack.upload(alice, fmt, f"#{i}") for i, fmt in enumerate(["JPEG", "PNG", "JPEG"])]
    newest_first = [p.id for p in reversed(photos)]

    # Fan-out reached bob; carol, who follows nobody, sees nothing.
    assert stack.feed_ids(bob) == newest_first
    assert stack.feed_ids(bob, limit=2) == newest_first
    assert service.feed(carol.id).items == ()
    page = service.feed(bob.id, limit=2)
    assert [p.caption for p in page.items] == ["#2", "#1"]
    assert page.next_cursor is not None

    # Blobs: original and thumbnail of each, with the metadata a CDN needs.
    for photo in photos:
        original = stack.blobs.head(photo.blob_key)
        assert original.content_type == photo.content_type
        assert original.cache_control == service.settings.media_cache_control
        thumb = Image.open(io.BytesIO(stack.blobs.get(photo.thumbnail_key)))
        assert max(thumb.size) <= service.settings.thumbnail_size
    assert photos[1].thumbnail_key.endswith("thumb.png")  # transparent PNG

    # A later follower gets a backfill.
    service.follow(carol.id, "alice")
    stack.settle()
    assert stack.feed_ids(carol) == newest_first
    profile = service.profile("alice")
    assert (profile.followers, profile.following) == (2, 0)
    assert [p.id for p in profile.photos] == newest_first
    assert service.profile_by_id(bob.id).following == 1

    # Delete: the photo leaves every feed, the blob store and the profile.
    service.delete_photo(alice.id, photos[1].id)
    stack.settle()
    assert stack.feed_ids(bob) == [photos[2].id, photos[0].id]
    assert stack.feed_ids(carol) == [photos[2].id, photos[0].id]
    assert not stack.blobs.exists(photos[1].blob_key)
    assert not stack.blobs.exists(photos[1].thumbnail_key)
    with pytest.raises(NotFound):
        service.get_photo(photos[1].id)
    assert [p.id for p in service.profile("alice").photos] == [photos[2].id, photos[0].id]

    # Unfollow: alice's photos leave bob's feed; counts follow.
    service.unfollow(bob.id, "alice")
    assert stack.feed_ids(bob) == []
    assert service.profile("alice").followers == 1
    assert service.profile("bob").following == 0

    # Everything was relayed and handled; nothing is dead.
    assert service.outbox.pending_count() == 0
    for topic, _ in TOPOLOGY:
        assert stack.bus.dead_letters(topic, FEED_GROUP) == []


def test_an_outage_of_the_bus_is_caught_up_by_the_relay_job(make_stack: Any) -> None:
    stack: Stack = make_stack()
    service = stack.service
    alice = service.sign_up("alice", "alice-password")
    bob = service.sign_up("bob", "bob-password")
    service.follow(bob.id, "alice")

    class DownBus:
        def publish(self, *args: Any, **kwargs: Any) -> Any:
            raise BackendUnavailable("broker down")

    service.relay.bus = DownBus()  # type: ignore[assignment]
    photo = stack.upload(alice)
    assert service.outbox.pending_count() == 1
    assert stack.feed_ids(bob) == []  # the feed is not fanned out yet
    service.relay.bus = stack.bus

    ledger = MemoryJobLedger(clock=stack.clock)
    jobs = cron_jobs(
        photofeed=service, sessions=MemorySessionStore(clock=stack.clock), ledger=ledger
    )
    schedulers = [Scheduler(ledger, jobs, owner=f"server-{i}", clock=stack.clock) for i in range(3)]
    stack.clock.advance(60)
    reports = [scheduler.run_due() for scheduler in schedulers]
    assert sum("photofeed.relay-outbox" in report.ran for report in reports) == 1
    stack.settle()
    assert service.outbox.pending_count() == 0
    assert stack.feed_ids(bob) == [photo.id]


def test_a_follow_written_on_one_shard_only_is_repaired(make_stack: Any) -> None:
    stack: Stack = make_stack()
    service = stack.service
    alice = service.sign_up("alice", "alice-password")
    bob = service.sign_up("bob", "bob-password")
    # The process died after the followee's side was written.
    service.follows.record_follower(FollowEdge(bob.id, alice.id, followed_at=stack.clock.now()))
    assert service.follows.following(bob.id) == []
    stack.clock.advance(service.settings.follow_repair_grace + 1)
    assert service.repair_follows() == 1
    assert service.follows.following(bob.id) == [alice.id]
    assert service.profile("bob").following == 1
    assert service.profile("alice").followers == 1
    # From now on bob gets alice's photos like any follower.
    photo = stack.upload(alice)
    assert stack.feed_ids(bob) == [photo.id]


def test_popular_accounts_are_merged_at_read_time(make_stack: Any) -> None:
    stack: Stack = make_stack(fanout_threshold=1, feed_max_limit=4, feed_default_limit=2,
                              recent_photos_for_backfill=2)  # fmt: skip
    service = stack.service
    star = service.sign_up("star", "star-password")
    pal = service.sign_up("pal", "pal-password")
    fans = [service.sign_up(f"fan{i}", "fan-password") for i in range(2)]
    for fan in fans:
        service.follow(fan.id, "star")
    service.follow(fans[0].id, "pal")
    stack.clock.advance(61)  # the cached set of popular accounts is recomputed
    uploaded = [stack.upload(star if i % 3 else pal) for i in range(9)]
    assert service.feeds.page(fans[0].id, limit=50) != []  # pal's photos were fanned out
    assert {e.owner_id for e in service.feeds.page(fans[0].id, limit=50)} == {pal.id}
    assert stack.feed_ids(fans[0], limit=2) == [p.id for p in reversed(uploaded)]
    star_only = [p.id for p in reversed(uploaded) if p.owner_id == star.id]
    assert stack.feed_ids(fans[1], limit=4) == star_only
    # Deleting a popular account's photo updates the cached list at once.
    service.delete_photo(star.id, star_only[0])
    stack.settle()
    assert stack.feed_ids(fans[1], limit=3) == star_only[1:]
