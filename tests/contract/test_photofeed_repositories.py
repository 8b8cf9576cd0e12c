"""Contract of the photo feed's repositories, run against every adapter set.

``repos`` is parametrised over "memory", "sql-sqlite" (three SQLite shard files) and
"sql-postgres" (three PostgreSQL databases with unique names, created for this module and
dropped afterwards; marked integration). Tests use only the ports, so a new adapter set is
one more parameter. Users are made with fresh ids in every test (and hypothesis example),
so tests never see each other's rows even on the module-scoped PostgreSQL databases.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.photofeed.feed.memory import MemoryFeedRepository
from adapters.photofeed.feed.sql import SqlFeedRepository
from adapters.photofeed.follows.memory import MemoryFollowRepository
from adapters.photofeed.follows.sql import SqlFollowRepository
from adapters.photofeed.outbox.memory import MemoryOutboxRepository
from adapters.photofeed.outbox.sql import SqlOutboxRepository
from adapters.photofeed.photos.memory import MemoryPhotoRepository
from adapters.photofeed.photos.sql import SqlPhotoRepository
from adapters.photofeed.schema import METADATA
from adapters.photofeed.users.memory import MemoryUserRepository
from adapters.photofeed.users.sql import SqlUserRepository
from adapters.sql.shards import Databases
from scalecore.capabilities import Capability
from scalecore.crdt import LWWElementSet
from scalecore.errors import ConfigError, Conflict, InvalidInput, NotFound
from scalecore.ids import IdGenerator, logical_shard_for, make_id, shard_of
from scalecore.photofeed.models import (
    Account,
    FeedEntry,
    FeedPosition,
    FollowCounts,
    FollowEdge,
    OutboxEvent,
    Photo,
    User,
)
from scalecore.photofeed.ports import (
    FeedRepository,
    FollowRepository,
    OutboxRepository,
    PhotoRepository,
    UserRepository,
)

SHARDS = 3
IDS = IdGenerator()


@attrs.define
class Repos:
    """One adapter set: the five repositories over one store (or one process)."""

    users: UserRepository
    photos: PhotoRepository
    outbox: OutboxRepository
    follows: FollowRepository
    feed: FeedRepository


def memory_repos() -> Repos:
    outbox = MemoryOutboxRepository()
    return Repos(
        users=MemoryUserRepository(),
        photos=MemoryPhotoRepository(outbox=outbox),
        outbox=outbox,
        follows=MemoryFollowRepository(),
        feed=MemoryFeedRepository(),
    )


def sql_repos(databases: Databases) -> Repos:
    return Repos(
        users=SqlUserRepository(database=databases.store("users")),
        photos=SqlPhotoRepository(database=databases.store("photos")),
        outbox=SqlOutboxRepository(database=databases.store("photos")),
        follows=SqlFollowRepository(database=databases.store("follows")),
        feed=SqlFeedRepository(database=databases.store("feed")),
    )


@pytest.fixture(scope="module")
def postgres_shards(scratch_database: Callable[[str], str]) -> list[str]:
    """URLs of three fresh PostgreSQL databases for this module, dropped after the run."""
    urls = [scratch_database(f"pf{i}") for i in range(SHARDS)]
    databases = Databases(metadata=METADATA, shards=urls, create_databases=True)
    databases.create_schema()
    databases.dispose()
    return urls


MakeRepos = Callable[[], Repos]


@pytest.fixture(
    params=[
        pytest.param("memory"),
        pytest.param("sql-sqlite"),
        pytest.param("sql-postgres", marks=pytest.mark.integration),
    ]
)
def make_repos(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeRepos]:
    """Make adapter sets of one kind, each as another process would (a fresh instance,
    over the same databases for SQL)."""
    if request.param == "memory":
        yield memory_repos
        return
    if request.param == "sql-sqlite":
        urls = [f"sqlite:///{tmp_path}/shard-{i}.db" for i in range(SHARDS)]
    else:
        urls = request.getfixturevalue("postgres_shards")
    made: list[Databases] = []

    def make() -> Repos:
        databases = Databases(metadata=METADATA, shards=urls)
        databases.create_schema()
        made.append(databases)
        return sql_repos(databases)

    yield make
    for databases in made:
        databases.dispose()


@pytest.fixture
def repos(make_repos: MakeRepos) -> Repos:
    """The five repositories of one adapter set."""
    return make_repos()


def new_user(name: str | None = None) -> User:
    username = name or f"u{uuid.uuid4().hex[:12]}"
    return User(id=IDS.new_for(username), username=username, created_at=1.0)


def new_photo(owner: User, created_at: float, *, caption: str = "") -> Photo:
    photo_id = IDS.new(shard_of(owner.id))
    return Photo(
        id=photo_id,
        owner_id=owner.id,
        owner_username=owner.username,
        caption=caption,
        created_at=created_at,
        blob_key=f"photos/{photo_id}/original.jpg",
        thumbnail_key=f"photos/{photo_id}/thumb.jpg",
        content_type="image/jpeg",
        width=640,
        height=480,
        size=12345,
    )


def event_for(owner_id: str, topic: str = "photo.uploaded", at: float = 1.0) -> OutboxEvent:
    return OutboxEvent(
        id=IDS.new(shard_of(owner_id)),
        topic=topic,
        payload={"owner_id": owner_id, "n": [1, 2.5, None, "x"]},
        created_at=at,
    )


# -- users -----------------------------------------------------------------------------


def test_an_account_is_found_by_id_and_by_username(repos: Repos) -> None:
    user = new_user()
    repos.users.add(Account(user, "hash-1"))
    assert repos.users.get(user.id) == user
    assert repos.users.get_by_username(user.username) == user
    assert repos.users.get_account(user.username) == Account(user, "hash-1")
    repos.users.set_password_hash(user.id, "hash-2")
    assert repos.users.get_account(user.username).password_hash == "hash-2"


def test_a_taken_username_is_a_conflict_and_changes_nothing(repos: Repos) -> None:
    user = new_user()
    repos.users.add(Account(user, "hash-1"))
    twin = User(IDS.new_for(user.username), user.username, 2.0)
    with pytest.raises(Conflict):
        repos.users.add(Account(twin, "hash-2"))
    assert repos.users.get_account(user.username) == Account(user, "hash-1")
    with pytest.raises(NotFound):
        repos.users.get(twin.id)


@pytest.mark.parametrize("user_id", [make_id(5, 5, 5), "bad", "", "../x"])
def test_unknown_or_malformed_user_ids_are_not_found(repos: Repos, user_id: str) -> None:
    with pytest.raises(NotFound):
        repos.users.get(user_id)
    with pytest.raises(NotFound):
        repos.users.set_password_hash(user_id, "h")


def test_unknown_usernames_are_not_found(repos: Repos) -> None:
    with pytest.raises(NotFound):
        repos.users.get_by_username("nobody_" + uuid.uuid4().hex[:8])
    with pytest.raises(NotFound):
        repos.users.get_account("nobody_" + uuid.uuid4().hex[:8])


def test_concurrent_sign_ups_of_one_name_have_one_winner(repos: Repos) -> None:
    username = f"race{uuid.uuid4().hex[:8]}"
    outcomes: list[str] = []

    def sign_up(index: int) -> None:
        user = User(IDS.new_for(username), username, float(index))
        try:
            repos.users.add(Account(user, f"hash-{index}"))
            outcomes.append("won")
        except Conflict:
            outcomes.append("lost")

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(sign_up, range(6)))
    assert sorted(outcomes) == ["lost"] * 5 + ["won"]


def test_search_lists_usernames_by_prefix_in_order_and_pages(repos: Repos) -> None:
    stem = f"s{uuid.uuid4().hex[:10]}"
    names = [f"{stem}_b", f"{stem}a", f"{stem}_a", f"{stem}9", f"{stem}_ab", f"{stem}x_y"]
    for name in names:
        repos.users.add(Account(new_user(name), "h"))
    everyone = repos.users.search(stem, limit=10)
    assert [u.username for u in everyone] == sorted(names)
    assert repos.users.get(everyone[0].id) == everyone[0]
    # "_" is a character, not a wildcard: "<stem>_" does not match "<stem>a" or "<stem>9".
    assert [u.username for u in repos.users.search(f"{stem}_", limit=10)] == sorted(
        n for n in names if n.startswith(f"{stem}_")
    )
    pages: list[str] = []
    after = None
    while True:
        page = repos.users.search(stem, limit=2, after=after)
        pages += [u.username for u in page]
        if len(page) < 2:
            break
        after = page[-1].username
    assert pages == sorted(names)
    assert repos.users.search(f"{stem}zz", limit=5) == []
    assert repos.users.search(stem, limit=0) == []


def test_recent_lists_users_newest_first_and_pages(repos: Repos) -> None:
    start = 3e9 + uuid.uuid4().int % 10**6 * 100
    users = []
    for i in range(5):
        name = f"r{uuid.uuid4().hex[:12]}"
        # Two users join at the same instant: the id breaks the tie.
        user = User(IDS.new_for(name), name, start + min(i, 3))
        repos.users.add(Account(user, "h"))
        users.append(user)
    expected = sorted(users, key=lambda u: (u.created_at, u.id), reverse=True)
    top = FeedPosition(start + 50, "~")
    assert repos.users.recent(limit=5, before=top) == expected
    got: list[User] = []
    before = top
    while len(got) < 5:
        page = repos.users.recent(limit=2, before=before)
        assert page
        got += page
        before = FeedPosition(page[-1].created_at, page[-1].id)
    assert got[:5] == expected
    newest = repos.users.recent(limit=1)
    assert len(newest) == 1
    assert (newest[0].created_at, newest[0].id) >= (expected[0].created_at, expected[0].id)


# -- photos ----------------------------------------------------------------------------


def test_photos_are_found_by_id_and_listed_newest_first(repos: Repos) -> None:
    owner, other = new_user(), new_user()
    photos = [new_photo(owner, 100.0 + i, caption=f"ünïcode {i}") for i in range(5)]
    photos.append(new_photo(owner, 104.0))  # same time as photos[4]: the id decides
    for photo in [*photos, new_photo(other, 200.0)]:
        repos.photos.add(photo, event_for(photo.owner_id))
    assert repos.photos.get(photos[0].id) == photos[0]
    newest = sorted(photos, key=lambda p: p.position, reverse=True)
    assert repos.photos.recent_by_owner(owner.id, limit=10) == newest
    assert repos.photos.recent_by_owner(owner.id, limit=2) == newest[:2]
    assert (
        repos.photos.recent_by_owner(owner.id, limit=10, before=newest[1].position) == (newest[2:])
    )
    assert repos.photos.recent_by_owner("malformed", limit=10) == []
    wanted = [photos[0].id, photos[3].id, make_id(1, 2, 3), "junk", photos[0].id]
    assert repos.photos.get_many(wanted) == {photos[0].id: photos[0], photos[3].id: photos[3]}
    assert repos.photos.existing_ids(wanted) == {photos[0].id, photos[3].id}


@pytest.mark.parametrize("photo_id", [make_id(5, 5, 5), "bad", ""])
def test_unknown_or_malformed_photo_ids_are_not_found(repos: Repos, photo_id: str) -> None:
    with pytest.raises(NotFound):
        repos.photos.get(photo_id)
    event = event_for(photo_id if photo_id.isalnum() and len(photo_id) == 26 else new_user().id)
    with pytest.raises(NotFound):
        repos.photos.delete(photo_id, event)


def test_a_photo_and_its_event_are_stored_together_or_not_at_all(repos: Repos) -> None:
    owner = new_user()
    first = new_photo(owner, 1.0)
    event = event_for(owner.id)
    pending = repos.outbox.pending_count()
    repos.photos.add(first, event)
    assert repos.outbox.pending_count() == pending + 1
    second = new_photo(owner, 2.0)
    with pytest.raises(Conflict):  # the event id is taken: the photo must not stay either
        repos.photos.add(second, event)
    assert repos.photos.existing_ids([second.id]) == set()
    with pytest.raises(Conflict):  # the photo id is taken: the event must not stay either
        repos.photos.add(first, event_for(owner.id))
    assert repos.outbox.pending_count() == pending + 1
    with pytest.raises(InvalidInput):
        repos.photos.add(second, event_for(make_id(1, (shard_of(owner.id) + 1) % 4096, 1)))


def test_delete_removes_the_photo_and_records_its_event(repos: Repos) -> None:
    owner = new_user()
    photo = new_photo(owner, 1.0)
    repos.photos.add(photo, event_for(owner.id))
    pending = repos.outbox.pending_count()
    repos.photos.delete(photo.id, event_for(owner.id, "photo.deleted"))
    assert repos.outbox.pending_count() == pending + 1
    with pytest.raises(NotFound):
        repos.photos.get(photo.id)
    with pytest.raises(NotFound):  # a concurrent delete lost: no second event
        repos.photos.delete(photo.id, event_for(owner.id, "photo.deleted"))
    assert repos.outbox.pending_count() == pending + 1


# -- outbox ----------------------------------------------------------------------------


def add_events(repos: Repos, count: int, *, at: float = 1.0) -> list[OutboxEvent]:
    events = []
    for index in range(count):
        owner = new_user()
        event = event_for(owner.id, at=at + index)
        repos.photos.add(new_photo(owner, at + index), event)
        events.append(event)
    return events


def drain_outbox(repos: Repos) -> None:
    """Mark every pending event sent (the module-scoped PostgreSQL store is shared)."""
    while claimed := repos.outbox.claim("drain", limit=1000, now=1e12, lease=1.0):
        repos.outbox.mark_sent([e.id for e in claimed], now=0.0)


def test_claims_lease_events_until_sent_or_released(repos: Repos) -> None:
    drain_outbox(repos)
    events = add_events(repos, 3)
    first = repos.outbox.claim("a", limit=2, now=100.0, lease=10.0)
    assert len(first) == 2
    assert all(event in events for event in first)
    rest = repos.outbox.claim("b", limit=10, now=101.0, lease=10.0)
    assert len(rest) == 1
    assert {e.id for e in first + rest} == {e.id for e in events}
    assert repos.outbox.claim("c", limit=10, now=105.0, lease=10.0) == []
    repos.outbox.release([rest[0].id], "someone-else")  # not theirs: ignored
    assert repos.outbox.claim("c", limit=10, now=105.0, lease=10.0) == []
    repos.outbox.release([rest[0].id], "b")
    assert repos.outbox.claim("c", limit=10, now=105.0, lease=10.0) == rest
    repos.outbox.mark_sent([e.id for e in first], now=106.0)
    repos.outbox.mark_sent([e.id for e in first], now=107.0)  # idempotent
    assert repos.outbox.pending_count() == 1
    # c's lease (until 115) lapses: its event is claimable again; sent ones never are.
    assert repos.outbox.claim("d", limit=10, now=116.0, lease=10.0) == rest
    repos.outbox.mark_sent([rest[0].id], now=117.0)
    assert repos.outbox.pending_count() == 0
    assert repos.outbox.claim("e", limit=10, now=1000.0, lease=10.0) == []


def test_events_keep_their_payload_and_can_be_claimed_by_id(repos: Repos) -> None:
    drain_outbox(repos)
    events = add_events(repos, 4)
    wanted = [events[2].id, events[0].id, make_id(1, 1, 1), "junk"]
    claimed = repos.outbox.claim("a", limit=10, now=1.0, lease=5.0, ids=wanted)
    assert sorted(claimed, key=lambda e: e.id) == sorted([events[0], events[2]], key=lambda e: e.id)
    assert claimed[0].payload["n"] == [1, 2.5, None, "x"]
    assert repos.outbox.claim("b", limit=10, now=2.0, lease=5.0, ids=[events[0].id]) == []
    assert repos.outbox.claim("b", limit=0, now=2.0, lease=5.0) == []


def test_concurrent_claimers_never_share_an_event(repos: Repos) -> None:
    drain_outbox(repos)
    events = add_events(repos, 30)
    barrier = threading.Barrier(4)

    def claim_all(worker: int) -> list[str]:
        barrier.wait()
        mine: list[str] = []
        while batch := repos.outbox.claim(f"w{worker}", limit=3, now=50.0, lease=100.0):
            mine.extend(e.id for e in batch)
        return mine

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(claim_all, range(4)))
    claimed = [event_id for result in results for event_id in result]
    assert len(claimed) == len(set(claimed)) == len(events)


def test_sent_events_are_purged_after_retention(repos: Repos) -> None:
    drain_outbox(repos)
    repos.outbox.purge_sent(float("inf"))
    events = add_events(repos, 3)
    repos.outbox.claim("a", limit=10, now=1.0, lease=5.0)
    repos.outbox.mark_sent([events[0].id], now=10.0)
    repos.outbox.mark_sent([events[1].id], now=20.0)
    assert repos.outbox.purge_sent(15.0) == 1
    assert repos.outbox.purge_sent(15.0) == 0
    assert repos.outbox.pending_count() == 1


# -- follows ---------------------------------------------------------------------------


def both_sides(repos: Repos, edge: FollowEdge) -> FollowEdge:
    repos.follows.record_follower(edge)
    merged = repos.follows.record_following(edge)
    assert repos.follows.settle(merged)
    return merged


def test_follow_edges_merge_last_writer_wins_and_keep_counts(repos: Repos) -> None:
    ann, ben, cat = new_user(), new_user(), new_user()
    assert repos.follows.counts(ann.id) == FollowCounts(0, 0)
    both_sides(repos, FollowEdge(ben.id, ann.id, followed_at=10.0))
    both_sides(repos, FollowEdge(cat.id, ann.id, followed_at=11.0))
    both_sides(repos, FollowEdge(ben.id, ann.id, followed_at=10.0))  # a repeat
    assert repos.follows.counts(ann.id) == FollowCounts(followers=2, following=0)
    assert repos.follows.counts(ben.id) == FollowCounts(followers=0, following=1)
    assert repos.follows.following(ben.id) == [ann.id]
    assert repos.follows.followers(ann.id, limit=10) == sorted([ben.id, cat.id])
    # An older unfollow loses; a newer one wins; an older follow after it changes nothing.
    both_sides(repos, FollowEdge(ben.id, ann.id, unfollowed_at=9.0))
    assert repos.follows.following(ben.id) == [ann.id]
    both_sides(repos, FollowEdge(ben.id, ann.id, unfollowed_at=12.0))
    both_sides(repos, FollowEdge(ben.id, ann.id, followed_at=11.5))
    assert repos.follows.following(ben.id) == []
    assert repos.follows.followers(ann.id, limit=10) == [cat.id]
    assert repos.follows.counts(ann.id).followers == 1
    assert repos.follows.counts(ben.id).following == 0
    assert repos.follows.following_edge(ben.id, ann.id) == FollowEdge(ben.id, ann.id, 11.5, 12.0)
    assert repos.follows.follower_edge(ann.id, ben.id) == FollowEdge(ben.id, ann.id, 11.5, 12.0)
    assert repos.follows.following_edge(ann.id, ben.id) is None
    assert repos.follows.follower_edge("junk", ben.id) is None


def test_followers_are_paged_in_id_order(repos: Repos) -> None:
    star = new_user()
    fans = sorted(new_user().id for _ in range(7))
    for fan in fans:
        repos.follows.record_follower(FollowEdge(fan, star.id, followed_at=1.0))
    assert repos.follows.followers(star.id, limit=3) == fans[:3]
    assert repos.follows.followers(star.id, limit=3, after=fans[2]) == fans[3:6]
    assert repos.follows.followers(star.id, limit=3, after=fans[5]) == fans[6:]
    assert repos.follows.followers("junk", limit=3) == []


def test_popular_lists_users_with_enough_followers(repos: Repos) -> None:
    star, fans = new_user(), [new_user() for _ in range(3)]
    for fan in fans:
        repos.follows.record_follower(FollowEdge(fan.id, star.id, followed_at=1.0))
    popular = repos.follows.popular(3)
    assert star.id in popular
    assert all(fan.id not in popular for fan in fans)
    repos.follows.record_follower(FollowEdge(fans[0].id, star.id, unfollowed_at=2.0))
    assert star.id not in repos.follows.popular(3)


def test_a_half_written_edge_is_unsettled_until_the_other_side_has_it(repos: Repos) -> None:
    ann, ben = new_user(), new_user()
    edge = FollowEdge(ben.id, ann.id, followed_at=1000.0)
    repos.follows.record_follower(edge)
    pending = repos.follows.unsettled(before=1001.0, limit=100_000)
    assert edge in pending
    assert edge not in repos.follows.unsettled(before=1000.0, limit=100_000)  # too recent
    # The follower's side is still older: settling with it must not clear the mark.
    assert not repos.follows.settle(FollowEdge(ben.id, ann.id))
    assert edge in repos.follows.unsettled(before=1001.0, limit=100_000)
    merged = repos.follows.record_following(edge)
    assert repos.follows.settle(merged)
    assert edge not in repos.follows.unsettled(before=1001.0, limit=100_000)
    # A repeat of what it has already seen leaves it settled.
    repos.follows.record_follower(edge)
    assert edge not in repos.follows.unsettled(before=1001.0, limit=100_000)
    assert repos.follows.settle(FollowEdge(new_user().id, ann.id))  # unknown: nothing to do


def test_a_settle_with_an_older_state_keeps_a_newer_change_unsettled(repos: Repos) -> None:
    ann, ben = new_user(), new_user()
    first = both_sides(repos, FollowEdge(ben.id, ann.id, followed_at=1.0))
    repos.follows.record_follower(FollowEdge(ben.id, ann.id, unfollowed_at=2.0))  # writer B
    assert not repos.follows.settle(first)  # writer A settles late with its older state
    assert FollowEdge(ben.id, ann.id, 1.0, 2.0) in repos.follows.unsettled(
        before=3.0, limit=100_000
    )


def test_user_ids_must_be_well_formed(repos: Repos) -> None:
    user = new_user()
    with pytest.raises(InvalidInput):  # the id must carry the username's logical shard
        repos.users.add(Account(User(make_id(1, (shard_of(user.id) + 1) % 4096, 1),
                                     user.username, 1.0), "h"))  # fmt: skip


def test_malformed_ids_are_refused_by_edge_writes(repos: Repos) -> None:
    ann = new_user()
    with pytest.raises(InvalidInput):
        repos.follows.record_follower(FollowEdge(ann.id, "junk", followed_at=1.0))
    with pytest.raises(InvalidInput):
        repos.follows.record_following(FollowEdge("junk", ann.id, followed_at=1.0))


changes = st.lists(
    st.tuples(st.integers(0, 2), st.booleans(), st.integers(1, 20)), min_size=1, max_size=12
)


@given(ops=changes, data=st.data())
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_edges_converge_whatever_the_order_and_counts_follow(
    repos: Repos, ops: list[tuple[int, bool, int]], data: st.DataObject
) -> None:
    star, fans = new_user(), [new_user() for _ in range(3)]
    model: LWWElementSet[str] = LWWElementSet()
    edges = []
    for which, follow, ts in ops:
        stamp = {"followed_at" if follow else "unfollowed_at": float(ts)}
        edges.append(FollowEdge(fans[which].id, star.id, **stamp))
        model = model.add(fans[which].id, ts) if follow else model.remove(fans[which].id, ts)
    # The followee's side sees the changes in one order, the followers' sides in another,
    # with repeats.
    for edge in data.draw(st.permutations(edges)):
        repos.follows.record_follower(edge)
    for edge in data.draw(st.permutations(edges + edges[:3])):
        repos.follows.record_following(edge)
    active = sorted(model.elements())
    assert repos.follows.followers(star.id, limit=10) == active
    assert repos.follows.counts(star.id).followers == len(active)
    for fan in fans:
        expected = [star.id] if fan.id in active else []
        assert repos.follows.following(fan.id) == expected
        assert repos.follows.counts(fan.id).following == len(expected)


def test_concurrent_writers_of_one_edge_keep_the_count_right(repos: Repos) -> None:
    star, fan = new_user(), new_user()
    edges = [
        FollowEdge(fan.id, star.id, **{"followed_at" if i % 2 else "unfollowed_at": float(i)})
        for i in range(1, 13)
    ]
    barrier = threading.Barrier(4)

    def write(chunk: list[FollowEdge]) -> None:
        barrier.wait()
        for edge in chunk:
            repos.follows.record_follower(edge)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(write, [edges[i::4] for i in range(4)]))
    # The latest change (12) is an unfollow.
    assert repos.follows.followers(star.id, limit=10) == []
    assert repos.follows.counts(star.id).followers == 0
    assert repos.follows.follower_edge(star.id, fan.id) == FollowEdge(fan.id, star.id, 11.0, 12.0)


# -- feed ------------------------------------------------------------------------------


def entry(follower: str, photo: Photo, **stamps: float) -> FeedEntry:
    return FeedEntry(follower, photo.id, photo.owner_id, photo.created_at, **stamps)


def test_feed_pages_visible_entries_newest_first(repos: Repos) -> None:
    reader, ann, ben = new_user(), new_user(), new_user()
    photos = [new_photo(ann if i % 2 else ben, 100.0 + i // 2) for i in range(8)]
    repos.feed.merge(entry(reader.id, photo, added_at=1.0) for photo in photos)
    newest = sorted(photos, key=lambda p: p.position, reverse=True)
    page = repos.feed.page(reader.id, limit=3)
    assert [e.photo_id for e in page] == [p.id for p in newest[:3]]
    assert page[0] == entry(reader.id, newest[0], added_at=1.0)
    rest = repos.feed.page(reader.id, limit=10, before=page[-1].position)
    assert [e.photo_id for e in rest] == [p.id for p in newest[3:]]
    assert repos.feed.page(new_user().id, limit=10) == []
    assert repos.feed.page("junk", limit=10) == []
    far = FeedPosition(0.0, make_id(0, 0, 0))
    assert repos.feed.page(reader.id, limit=10, before=far) == []


def test_feed_entries_merge_last_writer_wins(repos: Repos) -> None:
    reader, owner = new_user(), new_user()
    photo = new_photo(owner, 50.0)
    # A removal arrives before the addition it cancels: it must still win.
    repos.feed.merge([entry(reader.id, photo, removed_at=20.0)])
    assert repos.feed.get(reader.id, photo.id) == entry(reader.id, photo, removed_at=20.0)
    repos.feed.merge([entry(reader.id, photo, added_at=10.0)])
    assert repos.feed.page(reader.id, limit=10) == []
    # A later addition wins over the removal; a duplicate inside one batch is fine.
    later = entry(reader.id, photo, added_at=30.0)
    repos.feed.merge([later, later, entry(reader.id, photo, added_at=25.0)])
    assert repos.feed.page(reader.id, limit=10) == [
        entry(reader.id, photo, added_at=30.0, removed_at=20.0)
    ]
    assert repos.feed.get(reader.id, make_id(1, 1, 1)) is None
    assert repos.feed.get("junk", photo.id) is None


def test_remove_owner_removes_that_owners_entries_only(repos: Repos) -> None:
    reader, ann, ben = new_user(), new_user(), new_user()
    ann_photos = [new_photo(ann, float(i)) for i in range(3)]
    ben_photo = new_photo(ben, 9.0)
    repos.feed.merge(entry(reader.id, p, added_at=5.0) for p in [*ann_photos, ben_photo])
    assert repos.feed.remove_owner(reader.id, ann.id, at=6.0) == 3
    assert repos.feed.remove_owner(reader.id, ann.id, at=6.0) == 0  # already at 6
    assert [e.photo_id for e in repos.feed.page(reader.id, limit=10)] == [ben_photo.id]
    repos.feed.merge([entry(reader.id, ann_photos[0], added_at=7.0)])  # a re-follow backfill
    assert {e.photo_id for e in repos.feed.page(reader.id, limit=10)} == {
        ben_photo.id,
        ann_photos[0].id,
    }
    assert repos.feed.remove_owner("junk", ann.id, at=8.0) == 0


def test_removed_entries_are_purged_after_retention(repos: Repos) -> None:
    reader, owner = new_user(), new_user()
    gone, back, kept = (new_photo(owner, float(i)) for i in range(3))
    repos.feed.merge([
        entry(reader.id, gone, added_at=1.0, removed_at=2.0),
        entry(reader.id, back, added_at=5.0, removed_at=2.0),
        entry(reader.id, kept, added_at=1.0),
    ])  # fmt: skip
    repos.feed.purge_removed(3.0)
    assert repos.feed.get(reader.id, gone.id) is None
    assert repos.feed.get(reader.id, back.id) is not None
    assert repos.feed.get(reader.id, kept.id) is not None


def test_entries_for_a_malformed_follower_are_refused(repos: Repos) -> None:
    with pytest.raises(InvalidInput):
        repos.feed.merge([FeedEntry("junk", make_id(1, 1, 1), make_id(1, 1, 2), 1.0, 1.0)])


feed_ops = st.lists(
    st.tuples(st.integers(0, 3), st.booleans(), st.integers(1, 30)), min_size=1, max_size=15
)


@given(ops=feed_ops, data=st.data())
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_feeds_converge_to_the_lww_set_whatever_the_order(
    repos: Repos, ops: list[tuple[int, bool, int]], data: st.DataObject
) -> None:
    owner, one, two = new_user(), new_user(), new_user()
    photos = [new_photo(owner, float(100 + i)) for i in range(4)]
    model: LWWElementSet[str] = LWWElementSet()
    changes: list[tuple[int, bool, float]] = []
    for index, add, ts in ops:
        photo_id = photos[index].id
        model = model.add(photo_id, ts) if add else model.remove(photo_id, ts)
        changes.append((index, add, float(ts)))

    def apply(reader: str, order: list[tuple[int, bool, float]], batch: int) -> None:
        items = [
            entry(reader, photos[i], **{"added_at" if add else "removed_at": ts})
            for i, add, ts in order
        ]
        for start in range(0, len(items), batch):
            repos.feed.merge(items[start : start + batch])

    apply(one.id, changes, 1)
    apply(two.id, data.draw(st.permutations(changes + changes)), data.draw(st.integers(1, 5)))
    expected = sorted((p.position for p in photos if p.id in model.elements()), reverse=True)
    for reader in (one.id, two.id):
        assert [e.position for e in repos.feed.page(reader, limit=10)] == expected


# -- capabilities ----------------------------------------------------------------------


def write_one_of_each(repos: Repos) -> dict[str, Callable[[Repos], bool]]:
    """Write through every repository; return, per repository, a check that sees it."""
    user, fan = new_user(), new_user()
    repos.users.add(Account(user, "h"))
    photo = new_photo(user, 5.0)
    event = event_for(user.id)
    repos.photos.add(photo, event)
    repos.follows.record_follower(FollowEdge(fan.id, user.id, followed_at=1.0))
    repos.feed.merge([entry(fan.id, photo, added_at=1.0)])

    def sees_user(other: Repos) -> bool:
        try:
            return other.users.get(user.id) == user
        except NotFound:
            return False

    def sees_event(other: Repos) -> bool:
        claimant = uuid.uuid4().hex
        claimed = other.outbox.claim(claimant, limit=5, now=1e12, lease=1.0, ids=[event.id])
        other.outbox.release([event.id], claimant)  # leave it claimable for the next look
        return claimed == [event]

    return {
        "users": sees_user,
        "photos": lambda other: other.photos.existing_ids([photo.id]) == {photo.id},
        "outbox": sees_event,
        "follows": lambda other: other.follows.followers(user.id, limit=5) == [fan.id],
        "feed": lambda other: other.feed.get(fan.id, photo.id) is not None,
    }


def test_instances_see_each_others_writes_iff_shared(make_repos: MakeRepos) -> None:
    first, second = make_repos(), make_repos()
    for name, sees in write_one_of_each(first).items():
        shared = Capability.SHARED in getattr(first, name).capabilities
        assert sees(second) == shared, name
        assert sees(first), name


def test_durable_repositories_keep_their_data_across_a_restart(make_repos: MakeRepos) -> None:
    first = make_repos()
    checks = write_one_of_each(first)
    for name, sees in checks.items():
        if Capability.DURABLE not in getattr(first, name).capabilities:
            continue  # nothing to promise: memory data dies with the process
        restarted = make_repos()  # new engines and pools over the same databases
        assert sees(restarted), name


def test_declared_capabilities_are_known_ones(repos: Repos) -> None:
    for name in ("users", "photos", "outbox", "follows", "feed"):
        declared = getattr(repos, name).capabilities
        assert declared <= {Capability.SHARED, Capability.DURABLE}, name


# -- construction ----------------------------------------------------------------------


def test_sql_repositories_refuse_a_database_without_their_tables(tmp_path: Path) -> None:
    databases = Databases(
        metadata={"users": METADATA["users"], "other": sa.MetaData()},
        shards=[f"sqlite:///{tmp_path}/x.db"],
        stores={"other": f"sqlite:///{tmp_path}/other.db"},
    )
    SqlUserRepository(database=databases.store("users"))
    with pytest.raises(ConfigError) as caught:
        SqlFeedRepository(database=databases.store("other"))
    assert caught.value.key == "database"
    with pytest.raises(ConfigError):
        SqlPhotoRepository(database="sqlite:///x.db")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        MemoryPhotoRepository(outbox=MemoryUserRepository())  # type: ignore[arg-type]


def test_stores_may_live_on_different_databases(tmp_path: Path) -> None:
    """Vertical partitioning: users on one file, the feed on two shards of its own."""
    databases = Databases(
        metadata=METADATA,
        shards=[f"sqlite:///{tmp_path}/main-{i}.db" for i in range(2)],
        stores={
            "users": f"sqlite:///{tmp_path}/users.db",
            "feed": {"shards": [f"sqlite:///{tmp_path}/feed-{i}.db" for i in range(2)]},
        },
    )
    databases.create_schema()
    repos = sql_repos(databases)
    user = new_user()
    repos.users.add(Account(user, "h"))
    photo = new_photo(user, 1.0)
    repos.photos.add(photo, event_for(user.id))
    repos.feed.merge([entry(user.id, photo, added_at=1.0)])
    assert repos.users.get(user.id) == user
    assert [e.photo_id for e in repos.feed.page(user.id, limit=5)] == [photo.id]
    engine = sa.create_engine(f"sqlite:///{tmp_path}/users.db")
    with engine.connect() as conn:
        assert sorted(sa.inspect(conn).get_table_names()) == ["photofeed_users"]
    engine.dispose()
    for repo in (repos.users, repos.photos, repos.outbox, repos.follows, repos.feed):
        repo.ping()
    databases.dispose()


def test_rows_live_on_the_shard_of_their_logical_shard(tmp_path: Path) -> None:
    urls = [f"sqlite:///{tmp_path}/s-{i}.db" for i in range(SHARDS)]
    databases = Databases(metadata=METADATA, shards=urls)
    databases.create_schema()
    repos = sql_repos(databases)
    users = [new_user() for _ in range(12)]
    for user in users:
        repos.users.add(Account(user, "h"))
    store = databases.store("users")
    for user in users:
        expected = store.shard_for(logical_shard_for(user.username))
        with store.read(shard=expected) as conn:
            found = conn.execute(sa.text("SELECT id FROM photofeed_users")).scalars().all()
        assert user.id in found
    databases.dispose()


def test_the_oldest_pending_event_is_reported_until_it_is_sent(repos: Repos) -> None:
    owner = new_user()
    # Older than anything another test leaves pending in a shared database.
    oldest = -1_000_000_000.0 - random.random()
    event = event_for(owner.id, at=oldest)
    repos.photos.add(new_photo(owner, 1.0), event)
    assert repos.outbox.oldest_pending_at() == oldest
    repos.outbox.mark_sent([event.id], now=5.0)
    after = repos.outbox.oldest_pending_at()
    assert after is None or after > oldest
