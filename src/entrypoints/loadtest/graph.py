"""The load test's synthetic population: accounts, a Pareto follow graph, a skewed pick.

Pure functions of a seeded ``random.Random``: the same seed gives the same graph, so two
runs (two deployments, two worker counts) load the same shape of site.

Popularity follows a Pareto law (shape ``alpha``; 1.16 is the classic 80/20): a few accounts
are followed by many, most by few. Each account follows ``follows`` others, drawn without
replacement with probability proportional to popularity, so the most popular accounts end
up with followers from nearly everyone (above the service's ``fanout_threshold`` when the
population is large enough, or the threshold small enough).
"""

from __future__ import annotations

import bisect
import itertools
import random

import attrs

__all__ = ["FollowGraph", "build_graph", "pick_profile"]

#: Pareto shape giving the 80/20 rule.
PARETO_ALPHA = 1.16
#: Share of profile views that go to the most-followed ``HOT_SHARE`` of accounts.
HOT_VIEWS = 0.8
HOT_SHARE = 0.2


@attrs.frozen
class FollowGraph:
    """``following[i]``: the indexes account ``i`` follows; ``by_followers``: account
    indexes, most followed first; ``followers[i]``: how many follow account ``i``."""

    size: int
    following: tuple[tuple[int, ...], ...]
    followers: tuple[int, ...]
    by_followers: tuple[int, ...]

    @property
    def edges(self) -> int:
        return sum(len(f) for f in self.following)

    def hot(self) -> tuple[int, ...]:
        """The most-followed ``HOT_SHARE`` of accounts (at least one)."""
        return self.by_followers[: max(1, round(self.size * HOT_SHARE))]

    def above(self, threshold: int) -> int:
        """How many accounts have more than ``threshold`` followers."""
        return sum(1 for count in self.followers if count > threshold)


def build_graph(
    size: int, follows: int, rng: random.Random, *, alpha: float = PARETO_ALPHA
) -> FollowGraph:
    """A follow graph of ``size`` accounts, each following ``min(follows, size - 1)`` others.

    Raises ``ValueError`` for a size below 2 or a negative ``follows``.
    """
    if size < 2:
        raise ValueError("a follow graph needs at least 2 accounts")
    if follows < 0:
        raise ValueError("follows must be >= 0")
    weights = [rng.paretovariate(alpha) for _ in range(size)]
    per_account = min(follows, size - 1)
    following: list[tuple[int, ...]] = []
    followers = [0] * size
    for account in range(size):
        chosen = _weighted_sample(weights, per_account, exclude=account, rng=rng)
        following.append(tuple(sorted(chosen)))
        for followee in chosen:
            followers[followee] += 1
    order = sorted(range(size), key=lambda i: (-followers[i], i))
    return FollowGraph(
        size=size,
        following=tuple(following),
        followers=tuple(followers),
        by_followers=tuple(order),
    )


def _weighted_sample(
    weights: list[float], count: int, *, exclude: int, rng: random.Random
) -> set[int]:
    """``count`` distinct indexes other than ``exclude``, drawn by weight."""
    cumulative = list(itertools.accumulate(weights))
    total = cumulative[-1]
    chosen: set[int] = set()
    # Rejection of repeats stays cheap while count is well below the population; past a
    # bound (a very skewed draw), fill up with the heaviest accounts not yet chosen.
    for _ in range(count * 20):
        if len(chosen) >= count:
            break
        index = bisect.bisect_left(cumulative, rng.random() * total)
        index = min(index, len(weights) - 1)
        if index != exclude:
            chosen.add(index)
    if len(chosen) < count:
        for index in sorted(range(len(weights)), key=lambda i: -weights[i]):
            if len(chosen) >= count:
                break
            if index != exclude:
                chosen.add(index)
    return chosen


def pick_profile(graph: FollowGraph, rng: random.Random) -> int:
    """An account whose profile is viewed: ``HOT_VIEWS`` of picks go to ``graph.hot()``,
    the rest to the other accounts, uniformly within each group."""
    hot = graph.hot()
    cold = graph.by_followers[len(hot) :]
    if not cold or rng.random() < HOT_VIEWS:
        return rng.choice(hot)
    return rng.choice(cold)
