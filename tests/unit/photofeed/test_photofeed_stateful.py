"""Random sequences of follows, uploads, deletes, outages and replays against a simple model.

The model: a feed is every existing photo of the accounts the user follows, newest first.
Fan-out, merge-at-read, LWW merging, the outbox relay and redelivered events must together
keep the service equal to it, with every account fanned out (threshold 1000) and with every
followed account merged at read time (threshold 0).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from photofeed_world import World, build_world

from scalecore.errors import BackendUnavailable
from scalecore.photofeed.events import TOPIC_PHOTO_DELETED, TOPIC_PHOTO_UPLOADED
from scalecore.types import JSONValue

NAMES = ("ann", "ben", "cat")
users = st.sampled_from(NAMES)


class _DownBus:
    def publish(self, *args: object, **kwargs: object) -> object:
        raise BackendUnavailable("broker down")


class FeedMachine(RuleBasedStateMachine):
    threshold = 1000

    def __init__(self) -> None:
        super().__init__()
        self.world: World = build_world(
            Path(tempfile.gettempdir()),
            fanout_threshold=self.threshold,
            upload_memory_bytes=1 << 20,
            recent_photos_for_backfill=20,
        )
        self.ids = {name: self.world.sign_up(name).id for name in NAMES}
        self.follows: set[tuple[str, str]] = set()
        self.photos: dict[str, tuple[str, float]] = {}  # id -> (owner name, created_at)
        self.events: list[tuple[str, JSONValue]] = []
        for topic in (TOPIC_PHOTO_UPLOADED, TOPIC_PHOTO_DELETED):
            self.world.bus.subscribe(
                topic, "recorder", lambda m: self.events.append((m.topic, m.payload))
            )
        self.bus_down = False

    def teardown(self) -> None:
        self.world.bus.close()

    @rule(follower=users, followee=users)
    def follow(self, follower: str, followee: str) -> None:
        if follower == followee:
            return
        self.world.clock.advance(0.5)
        self.world.service.follow(self.ids[follower], followee)
        self.follows.add((follower, followee))

    @rule(follower=users, followee=users)
    def unfollow(self, follower: str, followee: str) -> None:
        if follower == followee:
            return
        self.world.service.unfollow(self.ids[follower], followee)
        self.follows.discard((follower, followee))

    @precondition(lambda self: len(self.photos) < 15)
    @rule(owner=users)
    def upload(self, owner: str) -> None:
        photo = self.world.upload(self.world.service.get_user(self.ids[owner]))
        self.photos[photo.id] = (owner, photo.created_at)

    @precondition(lambda self: self.photos)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        photo_id = data.draw(st.sampled_from(sorted(self.photos)))
        owner, _ = self.photos.pop(photo_id)
        self.world.service.delete_photo(self.ids[owner], photo_id)

    @rule(down=st.booleans())
    def toggle_bus(self, down: bool) -> None:
        self.bus_down = down
        self.world.service.relay.bus = _DownBus() if down else self.world.bus  # type: ignore[assignment]

    @precondition(lambda self: self.events)
    @rule(data=st.data())
    def replay_an_old_event(self, data: st.DataObject) -> None:
        topic, payload = data.draw(st.sampled_from(self.events))
        self.world.service.apply_photo_event(topic, payload)

    @rule()
    def check_feeds(self) -> None:
        if self.bus_down:
            self.toggle_bus(False)
        self.world.service.relay.relay_pending()
        self.world.clock.advance(61)  # cached lists of popular accounts expire
        for name in NAMES:
            expected = sorted(
                (
                    (created, photo_id)
                    for photo_id, (owner, created) in self.photos.items()
                    if (name, owner) in self.follows or owner == name
                ),
                reverse=True,
            )
            got: list[tuple[float, str]] = []
            cursor = None
            while True:
                page = self.world.service.feed(self.ids[name], limit=4, before=cursor)
                got.extend((p.created_at, p.id) for p in page.items)
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert got == expected, name

    @invariant()
    def counts_match_the_follows(self) -> None:
        for name in NAMES:
            counts = self.world.follows.counts(self.ids[name])
            assert counts.followers == sum(1 for _, b in self.follows if b == name)
            assert counts.following == sum(1 for a, _ in self.follows if a == name)


class FanOutEverything(FeedMachine):
    threshold = 1000


class MergeEverythingAtRead(FeedMachine):
    threshold = 0


FanOutEverything.TestCase.settings = settings(
    max_examples=50, stateful_step_count=40, deadline=None
)
MergeEverythingAtRead.TestCase.settings = settings(
    max_examples=50, stateful_step_count=40, deadline=None
)
TestFanOutEverything = FanOutEverything.TestCase
TestMergeEverythingAtRead = MergeEverythingAtRead.TestCase
