"""The photo feed's values: cursors, LWW rules, JSON forms, settings and event payloads."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalecore.crdt import LWWElementSet
from scalecore.errors import ConfigError, InvalidInput
from scalecore.ids import make_id
from scalecore.photofeed.events import TOPOLOGY, PhotoEvent
from scalecore.photofeed.models import (
    FeedEntry,
    FeedPosition,
    FollowEdge,
    Photo,
    Profile,
    User,
    lww_present,
    photo_from_json,
    photo_to_json,
    profile_from_json,
    profile_to_json,
)
from scalecore.photofeed.settings import PhotoFeedSettings

ids = st.builds(
    make_id,
    st.integers(0, 2**48 - 1),
    st.integers(0, 4095),
    st.integers(0, 2**64 - 1),
)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)


@given(times, ids)
def test_a_cursor_round_trips_exactly(created_at: float, photo_id: str) -> None:
    position = FeedPosition(created_at, photo_id)
    cursor = position.encode()
    assert cursor.isascii()
    assert "=" not in cursor
    assert FeedPosition.decode(cursor) == position


@pytest.mark.parametrize(
    "raw",
    [
        b"1.5",
        b"1.5:short",
        b"nan:" + make_id(1, 1, 1).encode(),
        b"inf:" + make_id(1, 1, 1).encode(),
        b"-1.0:" + make_id(1, 1, 1).encode(),
        b"1.0:" + make_id(1, 1, 1).encode() + b":x",
        b"\xff\xfe:" + make_id(1, 1, 1).encode(),
        b"1.0:" + make_id(1, 1, 1).lower().encode(),
    ],
)
def test_malformed_cursors_are_invalid_input(raw: bytes) -> None:
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    with pytest.raises(InvalidInput):
        FeedPosition.decode(cursor)


@pytest.mark.parametrize("cursor", [None, 5, "", "!!!", "a", "x" * 200])
def test_cursors_that_are_not_even_base64_are_invalid_input(cursor: Any) -> None:
    with pytest.raises(InvalidInput):
        FeedPosition.decode(cursor)


@given(ids, ids, times, times)
def test_positions_order_by_time_then_id(a: str, b: str, t1: float, t2: float) -> None:
    assert (FeedPosition(t1, a) < FeedPosition(t2, b)) == ((t1, a) < (t2, b))


ops = st.lists(st.tuples(st.sampled_from(["add", "remove"]), times), max_size=8)


@given(ops)
def test_lww_present_is_the_crdt_rule_with_add_bias(operations: list[tuple[str, float]]) -> None:
    model: LWWElementSet[str] = LWWElementSet()
    added: float | None = None
    removed: float | None = None
    for op, ts in operations:
        if op == "add":
            model = model.add("x", ts)
            added = ts if added is None else max(added, ts)
        else:
            model = model.remove("x", ts)
            removed = ts if removed is None else max(removed, ts)
    assert lww_present(added, removed) == ("x" in model)


@given(
    st.permutations(list(range(6))),
    st.lists(st.tuples(st.booleans(), times), min_size=6, max_size=6),
)
@settings(max_examples=50)
def test_edges_and_entries_merge_to_the_same_state_in_any_order(
    order: list[int], changes: list[tuple[bool, float]]
) -> None:
    edges = [
        FollowEdge("a", "b", followed_at=ts) if add else FollowEdge("a", "b", unfollowed_at=ts)
        for add, ts in changes
    ]
    entries = [
        FeedEntry("a", "p", "o", 1.0, added_at=ts)
        if add
        else FeedEntry("a", "p", "o", 1.0, removed_at=ts)
        for add, ts in changes
    ]
    forward_edge, shuffled_edge = FollowEdge("a", "b"), FollowEdge("a", "b")
    forward_entry, shuffled_entry = FeedEntry("a", "p", "o", 1.0), FeedEntry("a", "p", "o", 1.0)
    for index in range(6):
        forward_edge = forward_edge.merge(edges[index])
        forward_entry = forward_entry.merge(entries[index])
    for index in order + order:  # every change twice, shuffled
        shuffled_edge = shuffled_edge.merge(edges[index])
        shuffled_entry = shuffled_entry.merge(entries[index])
    assert forward_edge == shuffled_edge
    assert forward_entry == shuffled_entry
    assert forward_edge.covered_by(shuffled_edge)
    assert all(edge.covered_by(forward_edge) for edge in edges)


def test_covered_by_compares_both_timestamps() -> None:
    state = FollowEdge("a", "b", followed_at=2.0, unfollowed_at=1.0)
    assert FollowEdge("a", "b").covered_by(state)
    assert not state.covered_by(FollowEdge("a", "b", followed_at=2.0))
    assert not state.covered_by(FollowEdge("a", "b", followed_at=1.0, unfollowed_at=1.0))
    assert state.covered_by(FollowEdge("a", "b", followed_at=3.0, unfollowed_at=1.0))
    assert state.active
    assert state.changed_at == 2.0
    assert FollowEdge("a", "b").changed_at == 0.0


def test_models_survive_their_json_forms() -> None:
    user = User(make_id(1, 2, 3), "alice", 1.5)
    photo = Photo(make_id(2, 2, 3), user.id, "alice", "hi", 2.5, "photos/x/original.jpg",
                  "photos/x/thumb.jpg", "image/jpeg", 10, 20, 300)  # fmt: skip
    profile = Profile(user, 3, 4, (photo,))
    assert photo_from_json(photo_to_json(photo)) == photo
    assert profile_from_json(profile_to_json(profile)) == profile


def test_settings_defaults_match_the_contract() -> None:
    s = PhotoFeedSettings()
    assert s.max_upload_bytes == 10 * 1024 * 1024
    assert (s.fanout_threshold, s.thumbnail_size, s.recent_photos_for_backfill) == (1000, 320, 20)
    assert (s.feed_default_limit, s.feed_max_limit) == (5, 50)
    assert (s.profile_cache_ttl, s.profile_soft_ttl) == (60, 30)
    assert s.media_cache_control == "public, max-age=31536000, immutable"


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"max_upload_bytes": 0}, "max_upload_bytes"),
        ({"max_upload_bytes": True}, "max_upload_bytes"),
        ({"fanout_threshold": -1}, "fanout_threshold"),
        ({"thumbnail_size": "320"}, "thumbnail_size"),
        ({"profile_cache_ttl": float("inf")}, "profile_cache_ttl"),
        ({"profile_soft_ttl": 0}, "profile_soft_ttl"),
        ({"profile_soft_ttl": 90}, "profile_soft_ttl"),
        ({"feed_default_limit": 60}, "feed_default_limit"),
        ({"media_cache_control": ""}, "media_cache_control"),
        ({"media_cache_control": "a\nb"}, "media_cache_control"),
        ({"upload_tmp_dir": ""}, "upload_tmp_dir"),
        ({"fanout_treshold": 5}, "fanout_treshold"),
    ],
)
def test_bad_settings_name_the_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PhotoFeedSettings.from_mapping(options)
    assert caught.value.key == key


def test_an_unknown_setting_suggests_the_close_one() -> None:
    with pytest.raises(ConfigError, match="fanout_threshold"):
        PhotoFeedSettings.from_mapping({"fanout_treshold": 5})
    assert PhotoFeedSettings.from_mapping({"fanout_threshold": 5}).fanout_threshold == 5


def test_photo_events_round_trip_and_refuse_malformed_payloads() -> None:
    event = PhotoEvent(make_id(1, 5, 1), make_id(1, 5, 2), 10.0, 11.0)
    assert PhotoEvent.from_payload(event.to_payload()) == event
    good = event.to_payload()
    for bad in (
        "text",
        {},
        {**good, "photo_id": "nope"},
        {**good, "owner_id": 5},
        {**good, "occurred_at": float("nan")},
        {**good, "created_at": True},
    ):
        with pytest.raises(InvalidInput):
            PhotoEvent.from_payload(bad)


def test_the_topology_declares_both_topics_for_the_feed_group() -> None:
    assert TOPOLOGY == (("photo.uploaded", "feed-fanout"), ("photo.deleted", "feed-fanout"))
