"""Follow edges in dicts of this process, kept on both sides as the SQL adapter does.

Backend: "memory"
Install extra: none
Options: none
Differs from the port: edges live in this process only; one lock serialises everything
    (both sides are separate maps, so half-written edges can still be simulated by
    calling one side's method alone, as the contract suite does). Ids are checked as the
    SQL adapter checks them (``InvalidInput`` for a malformed one).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import ClassVar

import attrs

from scalecore.capabilities import Capability
from scalecore.ids import shard_of
from scalecore.photofeed.models import FollowCounts, FollowEdge
from scalecore.photofeed.ports import FollowRepository

__all__ = ["MemoryFollowRepository"]


@attrs.frozen
class _InSide:
    edge: FollowEdge
    unsettled: bool


class MemoryFollowRepository(FollowRepository):
    """Both sides of every edge and the counts, under one lock; thread-safe."""

    #: Not SHARED, not DURABLE: the data lives in this process.
    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in: dict[tuple[str, str], _InSide] = {}  # (followee, follower)
        self._out: dict[tuple[str, str], FollowEdge] = {}  # (follower, followee)
        self._followers: Counter[str] = Counter()
        self._following: Counter[str] = Counter()

    def record_follower(self, edge: FollowEdge) -> FollowEdge:
        _check_ids(edge)
        key = (edge.followee_id, edge.follower_id)
        with self._lock:
            old = self._in.get(key)
            base = old.edge if old is not None else _empty(edge)
            merged = base.merge(edge)
            unsettled = (old is not None and old.unsettled) or merged != base
            self._in[key] = _InSide(merged, unsettled)
            self._followers[edge.followee_id] += int(merged.active) - int(base.active)
        return merged

    def record_following(self, edge: FollowEdge) -> FollowEdge:
        _check_ids(edge)
        key = (edge.follower_id, edge.followee_id)
        with self._lock:
            base = self._out.get(key) or _empty(edge)
            merged = base.merge(edge)
            self._out[key] = merged
            self._following[edge.follower_id] += int(merged.active) - int(base.active)
        return merged

    def settle(self, edge: FollowEdge) -> bool:
        key = (edge.followee_id, edge.follower_id)
        with self._lock:
            side = self._in.get(key)
            if side is None:
                return True
            if not side.edge.covered_by(edge):
                return not side.unsettled
            self._in[key] = _InSide(side.edge, unsettled=False)
            return True

    def follower_edge(self, followee_id: str, follower_id: str) -> FollowEdge | None:
        with self._lock:
            side = self._in.get((followee_id, follower_id))
        return side.edge if side is not None else None

    def following_edge(self, follower_id: str, followee_id: str) -> FollowEdge | None:
        with self._lock:
            return self._out.get((follower_id, followee_id))

    def unsettled(self, *, before: float, limit: int) -> list[FollowEdge]:
        with self._lock:
            found = [
                side.edge
                for side in self._in.values()
                if side.unsettled and side.edge.changed_at < before
            ]
        found.sort(key=lambda edge: edge.changed_at)
        return found[:limit]

    def followers(self, user_id: str, *, limit: int, after: str | None = None) -> list[str]:
        with self._lock:
            ids = sorted(
                follower
                for (followee, follower), side in self._in.items()
                if followee == user_id and side.edge.active and (after is None or follower > after)
            )
        return ids[:limit]

    def following(self, user_id: str) -> list[str]:
        with self._lock:
            return sorted(
                followee
                for (follower, followee), edge in self._out.items()
                if follower == user_id and edge.active
            )

    def counts(self, user_id: str) -> FollowCounts:
        with self._lock:
            return FollowCounts(
                followers=self._followers[user_id], following=self._following[user_id]
            )

    def popular(self, min_followers: int) -> list[str]:
        with self._lock:
            return sorted(user for user, n in self._followers.items() if n >= min_followers)


def _check_ids(edge: FollowEdge) -> None:
    # As the SQL adapter, which routes by them: a malformed id is refused, not stored.
    shard_of(edge.follower_id)
    shard_of(edge.followee_id)


def _empty(edge: FollowEdge) -> FollowEdge:
    return FollowEdge(edge.follower_id, edge.followee_id)
