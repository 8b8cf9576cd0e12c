"""Feed throughput: fan-out on write (FeedWorker) vs a naive pull-on-read feed.

One follower graph (each user follows ``follows`` others at random) on the memory
repositories, a memory cache and blob store, and a sync in-process bus with the
:class:`FeedWorker` attached, as the unit tests build it.

* fan-out on write: a write stores the photo row with its outbox event, then the relay
  publishes the event and the worker copies an entry into every follower's feed (the
  service's own relay path, minus image processing and blob uploads, which both designs
  would pay alike); the sent outbox row is then purged (see ``fanout_ops``). A read is
  ``PhotoFeed.feed(user, limit)``.
* pull on read (baseline): a write stores the photo row only. A read lists the user's
  followees, takes each one's newest ``limit`` photos and merges them.

Writes and reads alternate in batches (rounds rotate the order); both designs see the
same users, graph and photo sequence. No issue target: this shows the trade (slower
writes, faster reads). Caveat: the memory repositories scan all edges for ``followers`` /
``following`` and all photos for ``recent_by_owner`` (an SQL repository uses an index), so
the absolute numbers, and how they grow with the graph, are partly the fakes' own cost;
pull on read, which calls ``recent_by_owner`` once per followee, pays that most.

Run: ``python -m bench.feed_fanout [--quick]`` from the repository root.
"""

from __future__ import annotations

import heapq
import itertools
import random
import statistics
import tempfile
from collections.abc import Callable, Sequence

import attrs

from adapters.blob.memory import MemoryBlobStore
from adapters.bus.inprocess import InProcessBus
from adapters.cache.memory import MemoryCache
from adapters.photofeed.feed.memory import MemoryFeedRepository
from adapters.photofeed.follows.memory import MemoryFollowRepository
from adapters.photofeed.images.pillow import PillowImageProcessor
from adapters.photofeed.outbox.memory import MemoryOutboxRepository
from adapters.photofeed.passwords.argon2 import Argon2PasswordHasher
from adapters.photofeed.photos.memory import MemoryPhotoRepository
from adapters.photofeed.users.memory import MemoryUserRepository
from bench._common import header, interleaved, latency_table, parse_args, table
from scalecore.clock import ManualClock
from scalecore.ids import IdGenerator, shard_of
from scalecore.photofeed import FeedWorker, PhotoFeed, PhotoFeedSettings
from scalecore.photofeed.events import TOPIC_PHOTO_UPLOADED, PhotoEvent
from scalecore.photofeed.models import OutboxEvent, Photo, User

LIMIT = 10  # photos per feed page


@attrs.define
class Site:
    service: PhotoFeed
    clock: ManualClock
    ids: IdGenerator
    users: list[User]


def build(spool: str, users: int, follows: int, rng: random.Random) -> Site:
    clock = ManualClock(1_700_000_000.0)
    bus = InProcessBus(mode="sync", clock=clock)
    outbox = MemoryOutboxRepository()
    service = PhotoFeed(
        users=MemoryUserRepository(),
        photos=MemoryPhotoRepository(outbox=outbox),
        outbox=outbox,
        follows=MemoryFollowRepository(),
        feed=MemoryFeedRepository(),
        blobs=MemoryBlobStore(clock=clock),
        cache=MemoryCache(clock=clock),
        bus=bus,
        hasher=Argon2PasswordHasher(time_cost=1, memory_cost=8, parallelism=1),
        images=PillowImageProcessor(),
        clock=clock,
        settings=PhotoFeedSettings(upload_tmp_dir=spool),
    )
    FeedWorker(service).attach(bus)
    bus.start()
    people = [service.sign_up(f"user{i:05d}", "bench-password") for i in range(users)]
    for person in people:
        for other in rng.sample(people, follows + 1):
            if other.id != person.id:
                service.follow(person.id, other.username)
    return Site(service, clock, IdGenerator(clock), people)


def new_photo(site: Site, owner: User) -> tuple[Photo, OutboxEvent]:
    """A photo row and its "uploaded" event, as ``upload_photo`` makes them."""
    site.clock.advance(0.001)
    created_at = site.clock.now()
    photo_id = site.ids.new(shard_of(owner.id))
    photo = Photo(
        id=photo_id,
        owner_id=owner.id,
        owner_username=owner.username,
        caption="",
        created_at=created_at,
        blob_key=f"photos/{photo_id}/original.jpg",
        thumbnail_key=f"photos/{photo_id}/thumb.jpg",
        content_type="image/jpeg",
        width=64,
        height=48,
        size=1000,
    )
    payload = PhotoEvent(photo_id, owner.id, created_at, created_at).to_payload()
    event = OutboxEvent(
        id=site.ids.new(shard_of(owner.id)),
        topic=TOPIC_PHOTO_UPLOADED,
        payload=payload,
        created_at=created_at,
    )
    return photo, event


def fanout_ops(site: Site, rng: random.Random) -> tuple[Callable[[], object], Callable[[], object]]:
    service = site.service

    def write() -> None:
        photo, event = new_photo(site, rng.choice(site.users))
        service.photos.add(photo, event)
        service.relay.relay_events([event.id])
        # The memory outbox finds rows by scanning them all (an SQL outbox uses its key),
        # so sent rows are dropped at once; kept, they make every write slower than the last.
        service.outbox.purge_sent(site.clock.now() + 1)

    def read() -> object:
        return service.feed(rng.choice(site.users).id, limit=LIMIT)

    return write, read


def pull_ops(site: Site, rng: random.Random) -> tuple[Callable[[], object], Callable[[], object]]:
    service = site.service

    def write() -> None:
        photo, event = new_photo(site, rng.choice(site.users))
        service.photos.add(photo, event)

    def read() -> list[Photo]:
        user = rng.choice(site.users)
        newest = [
            service.photos.recent_by_owner(followee, limit=LIMIT)
            for followee in service.follows.following(user.id)
        ]
        merged = heapq.merge(*newest, key=lambda photo: photo.position, reverse=True)
        return list(itertools.islice(merged, LIMIT))

    return write, read


def run(quick: bool) -> dict[str, float]:
    # The memory repositories answer followers(), following() and recent_by_owner() by
    # scanning every edge or photo, so the cost of each op grows with the whole graph; these
    # sizes keep the full run near a minute on 2 cores.
    users, follows = (300, 20) if quick else (1000, 50)
    initial = 2  # photos per user before measuring
    rounds, batch, warmup = (5, 40, 20) if quick else (5, 40, 10)
    with tempfile.TemporaryDirectory() as spool:
        sites = {
            name: build(spool, users, follows, random.Random(7)) for name in ("fanout", "pull")
        }
        rngs = {name: random.Random(11) for name in sites}
        fan_write, fan_read = fanout_ops(sites["fanout"], rngs["fanout"])
        pull_write, pull_read = pull_ops(sites["pull"], rngs["pull"])
        for _ in range(initial * users):
            fan_write()
            pull_write()
        samples = interleaved(
            {
                "pull on read: write (baseline)": pull_write,
                "fan-out on write: write": fan_write,
                "pull on read: read (baseline)": pull_read,
                "fan-out on write: read": fan_read,
            },
            rounds=rounds,
            batch=batch,
            warmup=warmup,
        )
        feed_sizes = [len(fan_read().items) for _ in range(20)]  # type: ignore[attr-defined]
    text, ratios = latency_table(
        samples,
        {
            "fan-out on write: write": "pull on read: write (baseline)",
            "fan-out on write: read": "pull on read: read (baseline)",
        },
    )
    print(
        f"{users} users following {follows} each, {initial} photos per user to start, "
        f"pages of {LIMIT} (median page size {statistics.median(feed_sizes):g})"
    )
    print(text)
    throughput = {name: 1 / statistics.median(values) for name, values in samples.items()}
    print()
    print(
        table(
            ["design", "writes/s", "reads/s"],
            [
                [
                    "fan-out on write",
                    f"{throughput['fan-out on write: write']:,.0f}",
                    f"{throughput['fan-out on write: read']:,.0f}",
                ],
                [
                    "pull on read (baseline)",
                    f"{throughput['pull on read: write (baseline)']:,.0f}",
                    f"{throughput['pull on read: read (baseline)']:,.0f}",
                ],
            ],
        )
    )
    read_speedup = 1 / ratios["fan-out on write: read"]
    write_cost = ratios["fan-out on write: write"]
    print(
        f"fan-out reads are {read_speedup:.1f}x as fast; its writes cost {write_cost:.1f}x "
        "(single-threaded, median per op)"
    )
    print("no issue target for this benchmark")
    return {"feed.read_speedup": read_speedup, "feed.write_cost": write_cost}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    header("feed: fan-out on write vs pull on read", args.quick)
    run(args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
