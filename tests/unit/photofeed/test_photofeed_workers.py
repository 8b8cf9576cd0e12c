"""The feed worker, the outbox relay and the cron jobs."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from photofeed_world import MakeWorld, World

from adapters.bus.inprocess import InProcessBus
from adapters.ledger.memory import MemoryJobLedger
from adapters.sessions.memory import MemorySessionStore
from scalecore.clock import ManualClock
from scalecore.cron import Outcome, Scheduler
from scalecore.errors import BackendUnavailable, ConfigError, InvalidInput
from scalecore.ids import make_id, shard_of
from scalecore.photofeed import FEED_GROUP, TOPIC_PHOTO_UPLOADED, FeedWorker, OutboxRelay
from scalecore.photofeed.events import PhotoEvent
from scalecore.photofeed.jobs import cron_jobs
from scalecore.photofeed.models import FollowEdge
from scalecore.ports.bus import Message
from scalecore.types import JSONValue

# -- FeedWorker ------------------------------------------------------------------------


class RecordingService:
    """Stands in for PhotoFeed: records the events the worker applies."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, JSONValue]] = []

    def apply_photo_event(self, topic: str, payload: JSONValue) -> int:
        PhotoEvent.from_payload(payload)
        self.applied.append((topic, payload))
        return 1


def message(payload: JSONValue, message_id: str = "m1") -> Message:
    return Message(topic=TOPIC_PHOTO_UPLOADED, payload=payload, id=message_id)


GOOD = PhotoEvent(make_id(5, 9, 1), make_id(1, 9, 2), 5.0, 5.0).to_payload()


def test_the_worker_skips_a_message_id_it_already_handled() -> None:
    service = RecordingService()
    worker = FeedWorker(service)  # type: ignore[arg-type]
    worker.handle(message(GOOD, "m1"))
    worker.handle(message(GOOD, "m1"))
    worker.handle(message(GOOD, "m2"))
    assert len(service.applied) == 2


def test_the_worker_forgets_the_oldest_ids_beyond_remember() -> None:
    service = RecordingService()
    worker = FeedWorker(service, remember=2)  # type: ignore[arg-type]
    for message_id in ("a", "b", "c", "a"):
        worker.handle(message(GOOD, message_id))
    assert len(service.applied) == 4  # "a" was forgotten; applying it again is harmless


def test_a_failed_message_is_not_remembered() -> None:
    service = RecordingService()
    worker = FeedWorker(service)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        worker.handle(message({"photo_id": "broken"}, "bad"))
    with pytest.raises(InvalidInput):
        worker.handle(message({"photo_id": "broken"}, "bad"))


def test_bad_remember_option() -> None:
    with pytest.raises(ConfigError):
        FeedWorker(RecordingService(), remember=-1)  # type: ignore[arg-type]


def test_a_malformed_message_ends_in_the_dead_letters() -> None:
    bus = InProcessBus(mode="sync", max_attempts=2)
    service = RecordingService()
    subscriptions = FeedWorker(service).attach(bus)  # type: ignore[arg-type]
    assert {(s.topic, s.group) for s in subscriptions} == {
        ("photo.uploaded", FEED_GROUP),
        ("photo.deleted", FEED_GROUP),
    }
    bus.start()
    bus.publish(TOPIC_PHOTO_UPLOADED, {"nonsense": True})
    bus.publish(TOPIC_PHOTO_UPLOADED, GOOD)
    bus.drain()
    assert [m.payload for m in bus.dead_letters(TOPIC_PHOTO_UPLOADED, FEED_GROUP)] == [
        {"nonsense": True}
    ]
    assert len(service.applied) == 1
    bus.close()


# -- OutboxRelay -----------------------------------------------------------------------


def record(bus: InProcessBus) -> list[Message]:
    seen: list[Message] = []
    bus.subscribe(TOPIC_PHOTO_UPLOADED, "recorder", seen.append)
    return seen


def test_the_relay_publishes_with_the_event_id_as_message_id(world: World) -> None:
    seen = record(world.bus)
    alice = world.sign_up("alice")
    photo = world.upload(alice)
    (msg,) = seen
    assert msg.payload == {
        "photo_id": photo.id,
        "owner_id": alice.id,
        "created_at": photo.created_at,
        "occurred_at": photo.created_at,
    }
    assert shard_of(msg.id) == shard_of(alice.id)
    assert world.outbox.pending_count() == 0


class FlakyOutbox:
    """An outbox whose ``mark_sent`` fails the first ``failures`` times: a relay that
    crashed right after publishing."""

    def __init__(self, inner: Any, failures: int = 1) -> None:
        self.inner = inner
        self.failures = failures

    def mark_sent(self, ids: Any, *, now: float) -> None:
        if self.failures:
            self.failures -= 1
            raise BackendUnavailable("database went away")
        self.inner.mark_sent(ids, now=now)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_crash_between_publish_and_mark_republishes_after_the_lease(world: World) -> None:
    seen = record(world.bus)
    alice, bob = world.sign_up("alice"), world.sign_up("bob")
    world.service.follow(bob.id, "alice")
    world.service.relay.outbox = FlakyOutbox(world.outbox)  # type: ignore[assignment]
    photo = world.upload(alice)  # the upload succeeds; its relay "crashed"
    assert world.outbox.pending_count() == 1
    assert len(seen) == 1
    assert world.service.relay.relay_once() == 0  # still leased to the crashed relay
    world.clock.advance(world.service.settings.outbox_lease + 1)
    assert world.service.relay.relay_once() == 1
    assert world.outbox.pending_count() == 0
    assert [m.id for m in seen] == [seen[0].id, seen[0].id]  # the same message, twice
    assert [p.id for p in world.service.feed(bob.id).items] == [photo.id]


def test_a_bus_failure_releases_the_claim_for_the_next_run(world: World) -> None:
    alice = world.sign_up("alice")
    good_bus = world.service.relay.bus

    class DownBus:
        def publish(self, *args: Any, **kwargs: Any) -> Any:
            raise BackendUnavailable("down")

    world.service.relay.bus = DownBus()  # type: ignore[assignment]
    world.upload(alice)
    world.upload(alice)
    with pytest.raises(BackendUnavailable):
        world.service.relay.relay_once()
    world.service.relay.bus = good_bus
    assert world.service.relay.relay_once() == 2  # released at once, no lease to wait for


def test_relay_pending_works_through_every_batch(world: World) -> None:
    relay = OutboxRelay(outbox=world.outbox, bus=world.bus, clock=world.clock, batch=2)
    world.service.relay.bus = type("Down", (), {"publish": _down})()
    alice = world.sign_up("alice")
    for _ in range(5):
        world.upload(alice)
    assert world.outbox.pending_count() == 5
    assert relay.relay_pending() == 5
    assert relay.relay_events([]) == 0
    assert world.outbox.pending_count() == 0


def _down(*args: Any, **kwargs: Any) -> Any:
    raise BackendUnavailable("down")


@pytest.mark.parametrize(("options", "key"), [({"lease": 0}, "lease"), ({"batch": 0}, "batch")])
def test_bad_relay_options(world: World, options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        OutboxRelay(outbox=world.outbox, bus=world.bus, **options)
    assert caught.value.key == key


# -- cron jobs -------------------------------------------------------------------------


def test_cron_jobs_include_purges_only_for_stores_that_need_them(world: World) -> None:
    base = {job.name for job in cron_jobs(photofeed=world.service)}
    assert base == {
        "photofeed.relay-outbox",
        "photofeed.remove-orphan-blobs",
        "photofeed.repair-follows",
        "photofeed.purge-outbox",
        "photofeed.purge-feed-tombstones",
    }
    full = cron_jobs(
        photofeed=world.service, sessions=MemorySessionStore(), ledger=MemoryJobLedger()
    )
    assert {job.name for job in full} == base | {"sessions.purge-expired", "ledger.purge"}
    with pytest.raises(ConfigError):
        cron_jobs(photofeed=world.service, schedules={"photofeed.nope": "every 1m"})
    jobs = cron_jobs(photofeed=world.service, schedules={"photofeed.relay-outbox": "every 30s"})
    assert jobs[0].schedule.spec == "every 30s"


def test_the_scheduler_runs_every_job_once_per_slot(world: World) -> None:
    clock: ManualClock = world.clock
    sessions = MemorySessionStore(clock=clock, ttl=60)
    ledger = MemoryJobLedger(clock=clock)
    jobs = cron_jobs(photofeed=world.service, sessions=sessions, ledger=ledger)
    first = Scheduler(ledger, jobs, owner="one", clock=clock)
    second = Scheduler(ledger, jobs, owner="two", clock=clock)
    sessions.create({"user": "x"})
    world.service.relay.bus = type("Down", (), {"publish": _down})()
    alice = world.sign_up("alice")
    world.upload(alice)
    world.service.relay.bus = world.bus
    clock.advance(3600)
    report = first.run_due()
    assert set(report.ran) == {job.name for job in jobs}
    assert all(second.run_due().outcome_of(job.name) is Outcome.DONE for job in jobs)
    assert world.outbox.pending_count() == 0  # relayed by the job
    assert sessions.purge_expired() == 0  # purged by the job


def test_orphaned_blobs_are_removed_after_the_grace_period(world: World) -> None:
    alice = world.sign_up("alice")
    photo = world.upload(alice)
    orphan = make_id(1, shard_of(alice.id), 99)
    world.blobs.put(f"photos/{orphan}/original.jpg", b"left by a crash")
    world.blobs.put(f"photos/{orphan}/thumb.jpg", b"left by a crash")
    world.blobs.put("photos/not-an-id/original.jpg", b"junk")
    world.blobs.put("avatars/keep.jpg", b"not ours")
    assert world.service.remove_orphan_blobs() == 0  # too young: maybe an upload in progress
    world.clock.advance(world.service.settings.orphan_blob_grace + 1)
    young = make_id(2, shard_of(alice.id), 98)
    world.blobs.put(f"photos/{young}/original.jpg", b"upload in progress")
    assert world.service.remove_orphan_blobs() == 3
    keys = {info.key for info in world.blobs.iter_all()}
    assert keys == {
        photo.blob_key,
        photo.thumbnail_key,
        f"photos/{young}/original.jpg",
        "avatars/keep.jpg",
    }


def test_a_photo_whose_blob_delete_failed_is_cleaned_by_the_orphan_job(world: World) -> None:
    alice = world.sign_up("alice")
    photo = world.upload(alice)
    blobs = world.service.blobs

    class NoDelete:
        def delete(self, key: str) -> None:
            raise BackendUnavailable("down")

        def __getattr__(self, name: str) -> Any:
            return getattr(blobs, name)

    world.service.blobs = NoDelete()  # type: ignore[assignment]
    world.service.delete_photo(alice.id, photo.id)
    world.service.blobs = blobs
    assert world.blobs.exists(photo.blob_key)
    world.clock.advance(world.service.settings.orphan_blob_grace + 1)
    assert world.service.remove_orphan_blobs() == 2
    assert not world.blobs.exists(photo.blob_key)


def test_old_tombstones_and_sent_events_are_purged(make_world: MakeWorld) -> None:
    world = make_world(feed_tombstone_retention=100, outbox_retention=100)
    alice, bob = world.sign_up("alice"), world.sign_up("bob")
    world.service.follow(bob.id, "alice")
    photo = world.upload(alice)
    world.service.delete_photo(alice.id, photo.id)
    keep = world.upload(alice)
    assert world.service.purge_feed_tombstones() == 0
    assert world.service.purge_outbox() == 0
    world.clock.advance(101)
    assert world.service.purge_feed_tombstones() == 1
    assert world.feed.get(bob.id, photo.id) is None
    assert world.feed.get(bob.id, keep.id) is not None
    assert world.service.purge_outbox() == 3


def test_apply_photo_event_fans_out_in_batches(world: World) -> None:
    alice = world.sign_up("alice")
    followers = [make_id(10, i % 4096, i) for i in range(1203)]
    for follower in followers:
        edge = FollowEdge(follower, alice.id, followed_at=1.0)
        world.follows.record_follower(edge)
    world.service.settings = attrs.evolve(world.service.settings, fanout_threshold=5000)
    event = PhotoEvent(make_id(99, shard_of(alice.id), 1), alice.id, 50.0, 50.0)
    assert world.service.apply_photo_event(TOPIC_PHOTO_UPLOADED, event.to_payload()) == 1203
    assert all(world.feed.get(f, event.photo_id) is not None for f in followers)
