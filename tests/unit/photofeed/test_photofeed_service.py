"""PhotoFeed's use cases on in-memory adapters: what each method promises, errors included."""

from __future__ import annotations

import io
from typing import Any

import pytest
from photofeed_world import MakeWorld, World, image_bytes
from PIL import Image

from adapters.blob.memory import MemoryBlobStore
from adapters.photofeed.passwords.argon2 import Argon2PasswordHasher
from scalecore.errors import (
    AuthenticationFailed,
    BackendUnavailable,
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    TooLarge,
    UnsupportedMediaType,
)
from scalecore.ids import logical_shard_for, make_id, shard_of
from scalecore.photofeed.events import TOPIC_PHOTO_DELETED, TOPIC_PHOTO_UPLOADED, PhotoEvent
from scalecore.photofeed.models import FeedEntry, FeedPosition, OutboxEvent, Photo

# -- accounts --------------------------------------------------------------------------


def test_sign_up_returns_a_user_whose_id_carries_the_usernames_shard(world: World) -> None:
    user = world.service.sign_up("alice_01", "correct horse")
    assert user.username == "alice_01"
    assert shard_of(user.id) == logical_shard_for("alice_01")
    assert world.service.get_user(user.id) == user


@pytest.mark.parametrize(
    "username", ["ab", "x" * 33, "Alice", "al ice", "al-ice", "", "ålice", None, 42]
)
def test_sign_up_refuses_bad_usernames(world: World, username: Any) -> None:
    with pytest.raises(InvalidInput):
        world.service.sign_up(username, "long enough")


@pytest.mark.parametrize("password", ["short", "x" * 7, "x" * 1025, None, b"bytes-password"])
def test_sign_up_refuses_bad_passwords(world: World, password: Any) -> None:
    with pytest.raises(InvalidInput):
        world.service.sign_up("alice", password)


def test_sign_up_accepts_the_length_bounds(world: World) -> None:
    world.service.sign_up("abc", "x" * 8)
    world.service.sign_up("y" * 32, "x" * 1024)


def test_a_taken_username_is_a_conflict(world: World) -> None:
    world.service.sign_up("alice", "password-1")
    with pytest.raises(Conflict, match="taken"):
        world.service.sign_up("alice", "password-2")


def test_authenticate_returns_the_user_for_the_right_password(world: World) -> None:
    user = world.service.sign_up("alice", "password-1")
    assert world.service.authenticate("alice", "password-1") == user


class CountingHasher(Argon2PasswordHasher):
    """Argon2 that records which hashes it verified against."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**{"time_cost": 1, "memory_cost": 8, "parallelism": 1, **options})
        self.verified: list[str] = []

    def verify(self, password_hash: str, password: str) -> bool:
        self.verified.append(password_hash)
        return super().verify(password_hash, password)


def test_authentication_failures_look_alike_and_cost_a_hash_each(world: World) -> None:
    hasher = CountingHasher()
    world.service.hasher = hasher
    world.service.sign_up("alice", "password-1")
    with pytest.raises(AuthenticationFailed) as wrong:
        world.service.authenticate("alice", "password-2")
    with pytest.raises(AuthenticationFailed) as unknown:
        world.service.authenticate("nobody", "password-1")
    with pytest.raises(AuthenticationFailed) as malformed:
        world.service.authenticate("No Body!", "password-1")
    assert str(wrong.value) == str(unknown.value) == str(malformed.value)
    # One verification per attempt; the unknown users are checked against a dummy hash.
    assert len(hasher.verified) == 3
    assert hasher.verified[1] == hasher.verified[2] != hasher.verified[0]
    assert hasher.verified[1].startswith("$argon2id$")


@pytest.mark.parametrize("password", ["x" * 1025, None])
def test_authenticate_refuses_absurd_passwords_without_hashing(world: World, password: Any) -> None:
    hasher = CountingHasher()
    world.service.hasher = hasher
    world.service.sign_up("alice", "password-1")
    with pytest.raises(AuthenticationFailed):
        world.service.authenticate("alice", password)
    assert hasher.verified == []


def test_login_replaces_a_hash_made_with_outdated_parameters(world: World) -> None:
    user = world.service.sign_up("alice", "password-1")
    old = world.users.get_account("alice").password_hash
    stronger = Argon2PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    world.service.hasher = stronger
    assert world.service.authenticate("alice", "password-1") == user
    new = world.users.get_account("alice").password_hash
    assert new != old
    assert not stronger.needs_rehash(new)
    assert world.service.authenticate("alice", "password-1") == user


@pytest.mark.parametrize("user_id", [make_id(1, 1, 1), "not-an-id", "", None])
def test_get_user_of_an_unknown_or_malformed_id_is_not_found(world: World, user_id: Any) -> None:
    with pytest.raises(NotFound):
        world.service.get_user(user_id)


# -- follows ---------------------------------------------------------------------------


def test_follow_and_unfollow_change_counts_at_once_and_are_idempotent(world: World) -> None:
    alice, bob = world.sign_up("alice"), world.sign_up("bob")
    world.service.profile("alice")  # cached now
    world.service.follow(bob.id, "alice")
    world.service.follow(bob.id, "alice")
    assert world.service.profile("alice").followers == 1
    assert world.service.profile_by_id(bob.id).following == 1
    world.service.unfollow(bob.id, "alice")
    world.service.unfollow(bob.id, "alice")
    assert world.service.profile("alice").followers == 0
    assert world.service.profile("bob").following == 0
    world.service.follow(bob.id, "alice")
    assert world.service.profile("alice").followers == 1
    assert world.follows.following(bob.id) == [alice.id]


def test_is_following_reports_the_current_edge(world: World) -> None:
    alice, bob = world.sign_up("alice"), world.sign_up("bob")
    assert not world.service.is_following(bob.id, "alice")
    world.service.follow(bob.id, "alice")
    assert world.service.is_following(bob.id, "alice")
    assert not world.service.is_following(alice.id, "bob")
    world.service.unfollow(bob.id, "alice")
    assert not world.service.is_following(bob.id, "alice")
    with pytest.raises(NotFound):
        world.service.is_following(bob.id, "nobody")


def test_follow_errors(world: World) -> None:
    alice = world.sign_up("alice")
    with pytest.raises(NotFound):
        world.service.follow(alice.id, "nobody")
    with pytest.raises(NotFound):
        world.service.follow(alice.id, "Not A Name")
    with pytest.raises(NotFound):
        world.service.follow(make_id(1, 1, 1), "alice")
    with pytest.raises(InvalidInput):
        world.service.follow(alice.id, "alice")
    with pytest.raises(NotFound):
        world.service.unfollow(alice.id, "nobody")
    with pytest.raises(InvalidInput):
        world.service.unfollow(alice.id, "alice")


def test_follow_backfills_recent_photos_and_unfollow_removes_them(make_world: MakeWorld) -> None:
    world = make_world(recent_photos_for_backfill=3)
    alice, bob = world.sign_up("alice"), world.sign_up("bob")
    photos = [world.upload(alice) for _ in range(5)]
    world.clock.advance(1)
    world.service.follow(bob.id, "alice")
    assert [p.id for p in world.service.feed(bob.id, limit=50).items] == [
        p.id for p in reversed(photos[-3:])
    ]
    world.clock.advance(1)
    world.service.unfollow(bob.id, "alice")
    assert world.service.feed(bob.id).items == ()
    assert world.feed.page(bob.id, limit=50) == []  # removed from the store, not only hidden
    world.clock.advance(1)
    world.service.follow(bob.id, "alice")
    assert len(world.service.feed(bob.id, limit=50).items) == 3


def test_follow_unfollow_follow_without_the_clock_moving_ends_following(world: World) -> None:
    alice, bob = world.sign_up("alice"), world.sign_up("bob")
    world.upload(alice)
    for _ in range(3):
        world.service.follow(bob.id, "alice")
        world.service.unfollow(bob.id, "alice")
    world.service.follow(bob.id, "alice")
    assert len(world.service.feed(bob.id).items) == 1
    assert world.service.profile("alice").followers == 1


def test_a_follow_stamped_before_a_skewed_unfollow_still_wins(world: World) -> None:
    """Another server with a fast clock unfollowed "in the future"; a later follow here
    must still take effect, because stamps are pushed past what the edge has seen."""
    alice, bob = world.sign_up("alice"), world.sign_up("bob")
    world.service.follow(bob.id, "alice")
    world.service.unfollow(bob.id, "alice")
    future = world.follows.following_edge(bob.id, alice.id)
    assert future is not None
    skewed = type(future)(bob.id, alice.id, unfollowed_at=world.clock.now() + 3600)
    world.follows.record_follower(skewed)
    world.follows.record_following(skewed)
    world.service.follow(bob.id, "alice")
    assert world.follows.following(bob.id) == [alice.id]
    assert world.follows.followers(alice.id, limit=10) == [bob.id]


def test_repair_follows_finishes_a_follow_that_stopped_half_way(world: World) -> None:
    alice, bob = world.sign_up("alice"), world.sign_up("bob")
    # A follow that crashed after the followee's side was written.
    world.follows.record_follower(type_edge(bob.id, alice.id, followed_at=world.clock.now()))
    assert world.follows.counts(alice.id).followers == 1
    assert world.follows.following(bob.id) == []
    assert world.service.repair_follows() == 0  # still within the grace period
    world.clock.advance(world.service.settings.follow_repair_grace + 1)
    assert world.service.repair_follows() == 1
    assert world.follows.following(bob.id) == [alice.id]
    assert world.follows.counts(bob.id).following == 1
    assert world.follows.unsettled(before=world.clock.now() + 1, limit=10) == []
    assert world.service.repair_follows() == 0


def type_edge(follower: str, followee: str, **stamps: float) -> Any:
    from scalecore.photofeed.models import FollowEdge

    return FollowEdge(follower, followee, **stamps)


# -- upload ----------------------------------------------------------------------------


def test_upload_stores_original_and_thumbnail_with_metadata(world: World) -> None:
    alice = world.sign_up("alice")
    data = image_bytes("JPEG", (800, 600))
    photo = world.service.upload_photo(alice.id, io.BytesIO(data), caption="sunset")
    assert photo.owner_id == alice.id
    assert photo.owner_username == "alice"
    assert (photo.width, photo.height, photo.size) == (800, 600, len(data))
    assert photo.content_type == "image/jpeg"
    assert photo.blob_key == f"photos/{photo.id}/original.jpg"
    assert photo.thumbnail_key == f"photos/{photo.id}/thumb.jpg"
    assert shard_of(photo.id) == shard_of(alice.id)
    assert world.blobs.get(photo.blob_key) == data
    original = world.blobs.head(photo.blob_key)
    thumb_info = world.blobs.head(photo.thumbnail_key)
    assert original.content_type == "image/jpeg"
    assert (
        original.cache_control == thumb_info.cache_control == "public, max-age=31536000, immutable"
    )
    thumb = Image.open(io.BytesIO(world.blobs.get(photo.thumbnail_key)))
    assert thumb.format == "JPEG"
    assert max(thumb.size) == 320
    assert world.service.get_photo(photo.id) == photo
    assert list(world.spool_dir.iterdir()) == []


def test_upload_of_a_transparent_png_gets_a_png_thumbnail(world: World) -> None:
    alice = world.sign_up("alice")
    photo = world.upload(alice, fmt="PNG", mode="RGBA", color=(0, 0, 0, 0))
    assert photo.content_type == "image/png"
    assert photo.thumbnail_key.endswith("/thumb.png")
    assert world.blobs.head(photo.thumbnail_key).content_type == "image/png"


def test_upload_reports_the_displayed_size_of_a_rotated_jpeg(world: World) -> None:
    alice = world.sign_up("alice")
    photo = world.upload(alice, size=(80, 40), orientation=6)
    assert (photo.width, photo.height) == (40, 80)
    thumb = Image.open(io.BytesIO(world.blobs.get(photo.thumbnail_key)))
    assert thumb.size == (40, 80)


class ExplodingStream(io.RawIOBase):
    """A stream that must not be read."""

    def read(self, size: int = -1) -> bytes:
        raise AssertionError("the stream was read")


class CountingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk


def test_upload_refuses_a_declared_length_over_the_limit_without_reading(
    make_world: MakeWorld,
) -> None:
    world = make_world(max_upload_bytes=1000)
    alice = world.sign_up("alice")
    with pytest.raises(TooLarge):
        world.service.upload_photo(alice.id, ExplodingStream(), content_length=1001)  # type: ignore[arg-type]
    bad: Any
    for bad in (-1, "10", True):
        with pytest.raises(InvalidInput):
            world.service.upload_photo(alice.id, io.BytesIO(b""), content_length=bad)


def test_upload_stops_reading_one_byte_past_the_limit(make_world: MakeWorld) -> None:
    world = make_world(max_upload_bytes=1000)
    alice = world.sign_up("alice")
    stream = CountingStream(b"\xff" * 10_000)
    with pytest.raises(TooLarge):
        world.service.upload_photo(alice.id, stream, content_length=None)
    assert stream.bytes_read == 1001
    # A lying Content-Length is no way around the limit either.
    with pytest.raises(TooLarge):
        world.service.upload_photo(alice.id, CountingStream(b"\xff" * 10_000), content_length=10)
    assert list(world.spool_dir.iterdir()) == []
    assert world.blobs.list("photos/").items == ()


class BrokenStream(io.RawIOBase):
    def read(self, size: int = -1) -> bytes:
        raise OSError("connection reset by peer")


@pytest.mark.parametrize(
    "stream", [BrokenStream(), None, io.StringIO("text, not bytes")], ids=["broken", "none", "text"]
)
def test_an_unreadable_stream_is_invalid_input(world: World, stream: Any) -> None:
    alice = world.sign_up("alice")
    with pytest.raises(InvalidInput):
        world.service.upload_photo(alice.id, stream)
    assert list(world.spool_dir.iterdir()) == []


def test_declare_queues_keeps_events_published_before_any_worker(make_world: MakeWorld) -> None:
    from adapters.bus.inprocess import InProcessBus
    from scalecore.photofeed import FEED_GROUP

    world = make_world()
    bus = InProcessBus(mode="sync")
    world.service.bus = bus
    world.service.relay.bus = bus
    world.service.declare_queues()
    world.service.declare_queues()
    alice = world.sign_up("alice")
    world.upload(alice)
    seen: list[Any] = []
    bus.subscribe(TOPIC_PHOTO_UPLOADED, FEED_GROUP, seen.append)
    bus.start()
    assert len(seen) == 1
    bus.close()


def test_an_upload_of_exactly_the_limit_is_accepted(make_world: MakeWorld) -> None:
    data = image_bytes("PNG", (16, 16))
    world = make_world(max_upload_bytes=len(data))
    alice = world.sign_up("alice")
    assert world.service.upload_photo(alice.id, io.BytesIO(data)).size == len(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, this is text, not an image" * 20,
        image_bytes("JPEG", (300, 200))[:400],  # truncated
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        image_bytes("BMP", (8, 8)),  # an image, but not an accepted format
    ],
    ids=["empty", "text", "truncated-jpeg", "svg", "bmp"],
)
def test_upload_refuses_what_is_not_a_supported_image(world: World, data: bytes) -> None:
    alice = world.sign_up("alice")
    with pytest.raises(UnsupportedMediaType):
        world.service.upload_photo(alice.id, io.BytesIO(data))
    assert world.blobs.list("photos/").items == ()
    assert world.outbox.pending_count() == 0
    assert list(world.spool_dir.iterdir()) == []


def test_upload_refuses_too_many_pixels(make_world: MakeWorld) -> None:
    world = make_world(max_image_pixels=100 * 100)
    alice = world.sign_up("alice")
    with pytest.raises(UnsupportedMediaType, match="pixels"):
        world.upload(alice, size=(101, 100))
    world.upload(alice, size=(100, 100))


@pytest.mark.parametrize("caption", ["x" * 501, 5, "nul\x00byte"])
def test_upload_refuses_bad_captions(world: World, caption: Any) -> None:
    alice = world.sign_up("alice")
    with pytest.raises(InvalidInput):
        world.service.upload_photo(alice.id, io.BytesIO(image_bytes()), caption=caption)


def test_upload_for_an_unknown_owner_is_not_found(world: World) -> None:
    with pytest.raises(NotFound):
        world.service.upload_photo(make_id(1, 1, 1), io.BytesIO(image_bytes()))


def test_small_uploads_are_spooled_in_memory(make_world: MakeWorld) -> None:
    world = make_world(upload_memory_bytes=1024 * 1024)
    alice = world.sign_up("alice")
    world.upload(alice)
    assert list(world.spool_dir.iterdir()) == []


class FailingBlobStore(MemoryBlobStore):
    """A memory store whose put fails for keys containing ``fail_on``."""

    fail_on = "thumb"

    def put(self, key: str, data: Any, **kwargs: Any) -> Any:
        if self.fail_on in key:
            raise BackendUnavailable("blob store down")
        return super().put(key, data, **kwargs)


def test_a_failing_blob_store_leaves_nothing_stored(make_world: MakeWorld) -> None:
    world = make_world(blobs=FailingBlobStore())
    alice = world.sign_up("alice")
    with pytest.raises(BackendUnavailable):
        world.upload(alice)
    assert world.blobs.list("photos/").items == ()  # the original, stored first, is gone
    assert world.outbox.pending_count() == 0
    assert world.service.profile("alice").photos == ()
    assert list(world.spool_dir.iterdir()) == []


class RowFailure:
    """Wraps a photo repository's add to fail, optionally after storing."""

    def __init__(self, world: World, error: Exception, *, store_first: bool) -> None:
        self.inner = world.photos
        self.error = error
        self.store_first = store_first

    def add(self, photo: Photo, event: OutboxEvent) -> None:
        if self.store_first:
            self.inner.add(photo, event)
        raise self.error

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_blobs_are_deleted_when_the_row_cannot_be_stored(world: World) -> None:
    alice = world.sign_up("alice")
    world.service.photos = RowFailure(world, Conflict("duplicate"), store_first=False)  # type: ignore[assignment]
    with pytest.raises(Conflict):
        world.upload(alice)
    assert world.blobs.list("photos/").items == ()
    assert list(world.spool_dir.iterdir()) == []


def test_blobs_stay_when_the_row_was_committed_despite_an_error(world: World) -> None:
    """A commit whose acknowledgement was lost: the row exists, so its blobs must stay."""
    alice = world.sign_up("alice")
    world.service.photos = RowFailure(world, BackendUnavailable("lost"), store_first=True)  # type: ignore[assignment]
    with pytest.raises(BackendUnavailable):
        world.upload(alice)
    (photo,) = world.photos.recent_by_owner(alice.id, limit=5)
    assert world.blobs.exists(photo.blob_key)
    assert world.blobs.exists(photo.thumbnail_key)


def test_upload_relays_its_event_at_once(world: World) -> None:
    alice, bob = world.sign_up("alice"), world.sign_up("bob")
    world.service.follow(bob.id, "alice")
    photo = world.upload(alice)
    assert world.outbox.pending_count() == 0
    assert [p.id for p in world.service.feed(bob.id).items] == [photo.id]
    stats = world.bus.stats.snapshot()
    assert stats.published[TOPIC_PHOTO_UPLOADED] == 1


class DownBus:
    """A bus that refuses every publish (stands in for a broker outage)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def publish(self, *args: Any, **kwargs: Any) -> Any:
        raise BackendUnavailable("broker down")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_an_upload_while_the_bus_is_down_is_published_by_the_relay_later(world: World) -> None:
    alice, bob = world.sign_up("alice"), world.sign_up("bob")
    world.service.follow(bob.id, "alice")
    world.service.relay.bus = DownBus(world.bus)  # type: ignore[assignment]
    photo = world.upload(alice)  # succeeds: the event waits in the outbox
    assert world.outbox.pending_count() == 1
    assert world.feed.page(bob.id, limit=5) == []
    world.service.relay.bus = world.bus
    assert world.service.relay.relay_once() == 1
    assert world.outbox.pending_count() == 0
    assert [p.id for p in world.service.feed(bob.id).items] == [photo.id]


# -- get and delete --------------------------------------------------------------------


@pytest.mark.parametrize("photo_id", [make_id(1, 1, 1), "../etc/passwd", "", None])
def test_get_photo_of_an_unknown_or_malformed_id_is_not_found(world: World, photo_id: Any) -> None:
    with pytest.raises(NotFound):
        world.service.get_photo(photo_id)


def test_delete_photo_removes_row_blobs_and_feed_entries(world: World) -> None:
    alice, bob = world.sign_up("alice"), world.sign_up("bob")
    world.service.follow(bob.id, "alice")
    photo = world.upload(alice)
    assert world.service.profile("alice").photos == (photo,)
    with pytest.raises(PermissionDenied):
        world.service.delete_photo(bob.id, photo.id)
    world.service.delete_photo(alice.id, photo.id)
    with pytest.raises(NotFound):
        world.service.get_photo(photo.id)
    with pytest.raises(NotFound):
        world.service.delete_photo(alice.id, photo.id)
    assert world.blobs.list("photos/").items == ()
    assert world.service.feed(bob.id).items == ()
    entry = world.feed.get(bob.id, photo.id)
    assert entry is not None
    assert not entry.visible
    assert world.service.profile("alice").photos == ()
    assert world.bus.stats.snapshot().published[TOPIC_PHOTO_DELETED] == 1


def test_a_deleted_photo_leaves_feeds_even_before_its_event_arrives(world: World) -> None:
    alice, bob = world.sign_up("alice"), world.sign_up("bob")
    world.service.follow(bob.id, "alice")
    photo = world.upload(alice)
    world.service.relay.bus = DownBus(world.bus)  # type: ignore[assignment]
    world.service.delete_photo(alice.id, photo.id)
    assert world.feed.get(bob.id, photo.id).visible  # type: ignore[union-attr]
    assert world.service.feed(bob.id).items == ()


def test_a_deleted_event_before_its_uploaded_event_ends_removed(world: World) -> None:
    alice, bob = world.sign_up("alice"), world.sign_up("bob")
    world.service.follow(bob.id, "alice")
    photo_id = make_id(1_700_000_100_000, shard_of(alice.id), 7)
    event = PhotoEvent(photo_id, alice.id, created_at=1_700_000_100.0, occurred_at=1_700_000_200.0)
    payload = event.to_payload()
    assert world.service.apply_photo_event(TOPIC_PHOTO_DELETED, payload) == 1
    assert world.service.apply_photo_event(TOPIC_PHOTO_UPLOADED, payload) == 1
    assert world.service.apply_photo_event(TOPIC_PHOTO_UPLOADED, payload) == 1
    entry = world.feed.get(bob.id, photo_id)
    assert entry is not None
    assert not entry.visible


def test_apply_photo_event_refuses_unknown_topics_and_bad_payloads(world: World) -> None:
    alice = world.sign_up("alice")
    good = PhotoEvent(make_id(1, shard_of(alice.id), 1), alice.id, 1.0, 1.0).to_payload()
    with pytest.raises(InvalidInput):
        world.service.apply_photo_event("photo.liked", good)
    bad_payloads: list[Any] = [None, [], {"photo_id": "x"}, {**good, "created_at": "no"}]
    for payload in bad_payloads:
        with pytest.raises(InvalidInput):
            world.service.apply_photo_event(TOPIC_PHOTO_UPLOADED, payload)


# -- feed ------------------------------------------------------------------------------


def collect_feed(world: World, user_id: str, limit: int) -> list[Photo]:
    items: list[Photo] = []
    cursor = None
    for _ in range(100):
        page = world.service.feed(user_id, limit=limit, before=cursor)
        assert len(page.items) <= limit
        items.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return items
    raise AssertionError("the feed never ended")


def test_feed_pages_newest_first_without_repeats_or_gaps(world: World) -> None:
    alice, carol, bob = world.sign_up("alice"), world.sign_up("carol"), world.sign_up("bob")
    world.service.follow(bob.id, "alice")
    world.service.follow(bob.id, "carol")
    uploaded = [world.upload(alice if i % 3 else carol) for i in range(12)]
    first = world.service.feed(bob.id)
    assert len(first.items) == 5
    assert first.next_cursor is not None
    assert collect_feed(world, bob.id, 5) == list(reversed(uploaded))
    assert collect_feed(world, bob.id, 50) == list(reversed(uploaded))
    last = world.service.feed(bob.id, limit=2, before=uploaded[2].position.encode())
    assert last.items == (uploaded[1], uploaded[0])
    assert last.next_cursor is None


def test_feed_of_a_user_who_follows_nobody_and_uploaded_nothing_is_empty(world: World) -> None:
    alice, bob = world.sign_up("alice"), world.sign_up("bob")
    world.upload(bob)
    assert world.service.feed(alice.id) == type(world.service.feed(alice.id))((), None)


def test_own_photos_are_in_ones_own_feed_without_following_anyone(world: World) -> None:
    alice = world.sign_up("alice")
    first, second = world.upload(alice), world.upload(alice)
    page = world.service.feed(alice.id)
    assert page.items == (second, first)
    assert page.next_cursor is None
    assert world.feed.page(alice.id, limit=10) == []  # merged at read, never fanned out
    # The cached first page follows one's own uploads and deletes.
    third = world.upload(alice)
    assert world.service.feed(alice.id).items == (third, second, first)
    world.service.delete_photo(alice.id, second.id)
    assert world.service.feed(alice.id).items == (third, first)


@pytest.mark.parametrize("threshold", [1000, 0])
def test_own_photos_interleave_with_followed_ones_and_leave_when_deleted(
    make_world: MakeWorld, threshold: int
) -> None:
    world = make_world(fanout_threshold=threshold)
    alice, bob = world.sign_up("alice"), world.sign_up("bob")
    world.service.follow(bob.id, "alice")
    uploaded = [world.upload(bob if i % 2 else alice) for i in range(9)]
    assert collect_feed(world, bob.id, 2) == list(reversed(uploaded))
    mine = [photo for photo in uploaded if photo.owner_id == bob.id]
    world.service.delete_photo(bob.id, mine[0].id)
    expected = [photo for photo in reversed(uploaded) if photo.id != mine[0].id]
    assert collect_feed(world, bob.id, 3) == expected
    # Alice does not follow Bob: only her own photos.
    assert collect_feed(world, alice.id, 4) == [p for p in expected if p.owner_id == alice.id]


@pytest.mark.parametrize("limit", [0, 51, -1, "5", True, 2.0])
def test_feed_refuses_bad_limits(world: World, limit: Any) -> None:
    alice = world.sign_up("alice")
    with pytest.raises(InvalidInput):
        world.service.feed(alice.id, limit=limit)


@pytest.mark.parametrize(
    "cursor",
    ["", "%%%", "bm90LWEtY3Vyc29y", FeedPosition(1.0, "X" * 26).encode(), "a" * 500, 5],
)
def test_feed_refuses_malformed_cursors(world: World, cursor: Any) -> None:
    alice = world.sign_up("alice")
    with pytest.raises(InvalidInput):
        world.service.feed(alice.id, before=cursor)


def test_feed_of_an_unknown_user_is_not_found(world: World) -> None:
    with pytest.raises(NotFound):
        world.service.feed(make_id(1, 1, 1))


def test_entries_of_an_account_no_longer_followed_are_hidden(world: World) -> None:
    """A fan-out that read the follower list just before an unfollow writes late."""
    alice, bob = world.sign_up("alice"), world.sign_up("bob")
    world.service.follow(bob.id, "alice")
    world.service.unfollow(bob.id, "alice")
    photo = world.upload(alice)
    world.feed.merge(
        [FeedEntry(bob.id, photo.id, alice.id, photo.created_at, added_at=photo.created_at)]
    )
    assert world.service.feed(bob.id).items == ()


def test_popular_accounts_are_merged_at_read_time(make_world: MakeWorld) -> None:
    world = make_world(fanout_threshold=1)
    star, bob, carol, dave = (world.sign_up(n) for n in ("star", "bob", "carol", "dave"))
    world.service.follow(bob.id, "star")
    world.service.follow(carol.id, "star")
    world.service.follow(bob.id, "dave")
    world.clock.advance(61)  # the cached set of popular accounts expires
    ours = [world.upload(star if i % 2 else dave) for i in range(8)]
    star_photos = [p for p in ours if p.owner_id == star.id]
    assert {e.photo_id for e in world.feed.page(bob.id, limit=50)} == {
        p.id for p in ours if p.owner_id == dave.id
    }  # star was not fanned out
    assert collect_feed(world, bob.id, 3) == list(reversed(ours))
    assert collect_feed(world, carol.id, 3) == list(reversed(star_photos))
    world.service.delete_photo(star.id, star_photos[-1].id)
    assert star_photos[-1] not in collect_feed(world, carol.id, 50)


def test_deep_pages_of_a_popular_account_come_from_the_repository(make_world: MakeWorld) -> None:
    # The cached recent list holds max(feed_max_limit, backfill) + 1 = 4 photos.
    world = make_world(fanout_threshold=0, feed_max_limit=3, feed_default_limit=3,
                       recent_photos_for_backfill=0)  # fmt: skip
    star, bob = world.sign_up("star"), world.sign_up("bob")
    world.service.follow(bob.id, "star")
    world.clock.advance(61)
    ours = [world.upload(star) for _ in range(10)]
    assert world.feed.page(bob.id, limit=50) == []
    assert collect_feed(world, bob.id, 3) == list(reversed(ours))


def test_a_feed_read_bounds_the_entries_it_skips(world: World) -> None:
    alice, bob, eve = world.sign_up("alice"), world.sign_up("bob"), world.sign_up("eve")
    world.service.follow(bob.id, "alice")
    photo = world.upload(alice)
    # 200 newer entries bob must skip: eve is not followed (say, a late fan-out).
    world.feed.merge(
        FeedEntry(bob.id, make_id(1_800_000_000_000 + i, shard_of(eve.id), i), eve.id,
                  1_800_000_000.0 + i, added_at=1.0)
        for i in range(200)
    )  # fmt: skip
    first = world.service.feed(bob.id)
    assert first.items == ()
    assert first.next_cursor is not None
    assert collect_feed(world, bob.id, 5) == [photo]


# -- profile ---------------------------------------------------------------------------


def test_profile_is_cached_and_invalidated_by_uploads_and_deletes(world: World) -> None:
    alice = world.sign_up("alice")
    empty = world.service.profile("alice")
    assert empty.user == alice
    assert empty.photos == ()
    assert empty.followers == 0
    loads = world.service.profiles.stats.loads
    assert world.service.profile("alice") == empty
    assert world.service.profiles.stats.loads == loads  # served from the cache
    photo = world.upload(alice)
    assert world.service.profile("alice").photos == (photo,)
    world.service.delete_photo(alice.id, photo.id)
    assert world.service.profile("alice").photos == ()


def test_profile_lists_the_newest_photos(make_world: MakeWorld) -> None:
    world = make_world(profile_photo_count=3)
    alice = world.sign_up("alice")
    photos = [world.upload(alice) for _ in range(5)]
    assert world.service.profile("alice").photos == tuple(reversed(photos[-3:]))


@pytest.mark.parametrize("username", ["nobody", "Not Valid", "", None])
def test_profile_of_an_unknown_user_is_not_found(world: World, username: Any) -> None:
    with pytest.raises(NotFound):
        world.service.profile(username)
    with pytest.raises(NotFound):
        world.service.profile_by_id(make_id(1, 1, 1))


def test_the_profile_survives_a_wiped_cache(world: World) -> None:
    alice = world.sign_up("alice")
    photo = world.upload(alice)
    world.service.profile("alice")
    world.cache.delete("photofeed:profile:alice")
    assert world.service.profile("alice").photos == (photo,)


def test_an_unusable_spool_directory_is_backend_unavailable(
    make_world: MakeWorld, tmp_path: Any
) -> None:
    world = make_world(upload_tmp_dir=str(tmp_path / "missing" / "dir"))
    alice = world.sign_up("alice")
    with pytest.raises(BackendUnavailable):
        world.upload(alice)
    assert world.blobs.list("photos/").items == ()


def test_a_warm_first_feed_page_reads_no_repository_and_changes_invalidate_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, carol, bob = world.sign_up("alice"), world.sign_up("carol"), world.sign_up("bob")
    world.service.follow(bob.id, "alice")
    first = world.upload(alice)
    assert world.service.feed(bob.id).items == (first,)  # cold: loaded and cached
    reads: list[str] = []
    for name in ("page", "following"):
        repository = world.service.feeds if name == "page" else world.service.follows
        original = getattr(repository, name)

        def counted(*args: Any, _original: Any = original, _name: str = name, **kw: Any) -> Any:
            reads.append(_name)
            return _original(*args, **kw)

        monkeypatch.setattr(repository, name, counted)
    assert world.service.feed(bob.id).items == (first,)
    assert reads == []  # warm: served from the cache
    # Fan-out into bob's feed invalidates it...
    second = world.upload(alice)
    assert world.service.feed(bob.id).items == (second, first)
    assert reads
    # ... and so do bob's follows and unfollows.
    third = world.upload(carol)
    assert world.service.feed(bob.id).items == (second, first)
    world.service.follow(bob.id, "carol")
    assert world.service.feed(bob.id).items == (third, second, first)
    world.service.unfollow(bob.id, "alice")
    assert world.service.feed(bob.id).items == (third,)
    # Other limits and later pages are never cached.
    reads.clear()
    world.service.feed(bob.id, limit=2)
    assert reads


# -- finding people ----------------------------------------------------------------------


def test_find_people_by_prefix_pages_in_name_order(world: World) -> None:
    for name in ("bob", "bea", "b_x", "alice", "bobby", "carl"):
        world.sign_up(name)
    assert [u.username for u in world.service.find_people("b").items] == [
        "b_x", "bea", "bob", "bobby",
    ]  # fmt: skip
    assert [u.username for u in world.service.find_people("  BO ").items] == ["bob", "bobby"]
    first = world.service.find_people("b", limit=3)
    assert [u.username for u in first.items] == ["b_x", "bea", "bob"]
    assert first.next_cursor == "bob"
    second = world.service.find_people("b", limit=3, after=first.next_cursor)
    assert [u.username for u in second.items] == ["bobby"]
    assert second.next_cursor is None
    assert world.service.find_people("zz").items == ()


def test_find_people_without_a_prefix_lists_the_newest_first(world: World) -> None:
    names = [f"user{i}" for i in range(7)]
    for name in names:
        world.clock.advance(1)
        world.sign_up(name)
    seen: list[str] = []
    cursor = None
    while True:
        page = world.service.find_people(limit=3, after=cursor)
        seen += [u.username for u in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(reversed(names))


def test_find_people_pages_are_cached_and_a_sign_up_shows_at_once(world: World) -> None:
    world.sign_up("ann")
    assert [u.username for u in world.service.find_people("a").items] == ["ann"]
    world.clock.advance(1)
    world.sign_up("abe")
    # The search page is cached (people_cache_ttl) ...
    assert [u.username for u in world.service.find_people("a").items] == ["ann"]
    # ... the first page of the newest accounts is refreshed by the sign-up.
    assert [u.username for u in world.service.find_people().items] == ["abe", "ann"]
    world.clock.advance(world.service.settings.people_cache_ttl + 1)
    assert [u.username for u in world.service.find_people("a").items] == ["abe", "ann"]


@pytest.mark.parametrize(
    ("prefix", "limit", "after"),
    [
        ("a b", None, None),
        ("é", None, None),
        ("x" * 33, None, None),
        ("a", 0, None),
        ("a", 51, None),
        ("a", True, None),
        ("a", None, "Not A Name"),
        (None, None, "not-a-cursor"),
        (None, None, ""),
    ],
)
def test_find_people_refuses_bad_input(world: World, prefix: Any, limit: Any, after: Any) -> None:
    with pytest.raises(InvalidInput):
        world.service.find_people(prefix, limit=limit, after=after)
