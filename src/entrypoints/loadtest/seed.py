"""Seed the target over HTTP: accounts, the Pareto follow graph, a few photos, a watcher.

Only the public API is used (``POST /api/users``, ``POST /api/session``, ``PUT
/api/following/<name>``, ``POST /api/photos``), so any deployment can be seeded, and the
seeding itself is a realistic write burst. Names carry a random run tag, so runs against
the same target never collide. Runs inside the load test's gevent hub: ``requests`` is
cooperative there, and a pool bounds how many calls are in flight.
"""

from __future__ import annotations

import io
import random
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from http.cookiejar import Cookie
from typing import Any

import attrs
import requests

from entrypoints.loadtest.graph import FollowGraph, build_graph
from scalecore.errors import BackendUnavailable

__all__ = ["PASSWORD", "SESSION_COOKIE", "Population", "login", "photo_bytes", "seed"]

#: Every seeded account's password (the accounts exist only for the test).
PASSWORD = "loadtest password"  # noqa: S105 (throwaway test accounts)
#: The service's session cookie.
SESSION_COOKIE = "sc_session"
#: Calls in flight while seeding.
SEED_CONCURRENCY = 8
#: Seconds before one seeding call gives up.
SEED_TIMEOUT = 60.0


@attrs.frozen
class Population:
    """What seeding made: ``usernames[i]`` is account ``i`` of ``graph``; ``watcher``
    follows every account (the fan-out lag probe reads its feed); ``sessions[i]`` is the
    (session cookie, CSRF token) seeding logged account ``i`` in with, handed to the
    first virtual user of that account, so a load run does not start with a burst of
    password hashing."""

    tag: str
    usernames: tuple[str, ...]
    graph: FollowGraph
    watcher: str
    photos: int
    seconds: float
    sessions: dict[int, tuple[Cookie, str]] = attrs.field(factory=dict, eq=False)

    def summary(self, fanout_threshold: int) -> dict[str, Any]:
        followers = sorted(self.graph.followers, reverse=True)
        return {
            "tag": self.tag,
            "accounts": self.graph.size,
            "follow_edges": self.graph.edges,
            "follows_per_account": len(self.graph.following[0]) if self.graph.size else 0,
            "max_followers": followers[0],
            "median_followers": followers[len(followers) // 2],
            "top_20pct_share_of_follows": round(
                sum(followers[: max(1, round(len(followers) * 0.2))]) / max(1, sum(followers)),
                3,
            ),
            "fanout_threshold": fanout_threshold,
            "accounts_above_threshold": self.graph.above(fanout_threshold),
            "photos": self.photos,
            "seconds": round(self.seconds, 1),
        }


def photo_bytes(rng: random.Random, width: int = 160, height: int = 120) -> bytes:
    """A PNG of noise (it does not compress, like a photo): about 55 KiB at 160x120."""
    from PIL import Image

    image = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _check(response: requests.Response, what: str, ok: Iterable[int]) -> requests.Response:
    if response.status_code not in tuple(ok):
        raise BackendUnavailable(
            f"seeding failed: {what} answered {response.status_code}: {response.text[:200]}"
        )
    return response


def login(session: requests.Session, base: str, username: str) -> None:
    """Log ``session`` in as ``username``; it then sends the CSRF token on every write."""
    response = _check(
        session.post(
            f"{base}/api/session",
            json={"username": username, "password": PASSWORD},
            timeout=SEED_TIMEOUT,
        ),
        f"log-in of {username}",
        (200,),
    )
    session.headers["X-CSRF-Token"] = response.json()["csrf_token"]


def _run_all(pool: Any, work: Callable[[Any], None], items: Iterable[Any]) -> None:
    """``work`` on every item through ``pool``; the first error is raised here, after all
    calls ended (a greenlet that dies with an exception would print a traceback)."""
    errors: list[BaseException] = []

    def guarded(item: Any) -> None:
        try:
            work(item)
        except (BackendUnavailable, requests.RequestException, ValueError, KeyError) as exc:
            errors.append(exc)

    for _ in pool.imap_unordered(guarded, items):
        pass
    if errors:
        first = errors[0]
        if isinstance(first, BackendUnavailable):
            raise first
        raise BackendUnavailable(f"seeding failed: {type(first).__name__}: {first}") from first


def seed(
    base: str,
    *,
    accounts: int,
    follows: int,
    photos: int,
    rng: random.Random,
    progress: Callable[[str], None],
) -> Population:
    """Create the population on the target at ``base``; raise ``BackendUnavailable`` with
    the failing call when the target refuses one (nothing is retried: a refused seed is a
    finding)."""
    from gevent.pool import Pool

    started = time.monotonic()
    tag = secrets.token_hex(3)
    graph = build_graph(accounts, follows, rng)
    names = tuple(f"lt{tag}_{i}" for i in range(accounts))
    watcher = f"lt{tag}_watch"
    pool = Pool(SEED_CONCURRENCY)

    def sign_up(name: str) -> None:
        with requests.Session() as session:
            _check(
                session.post(
                    f"{base}/api/users",
                    json={"username": name, "password": PASSWORD},
                    timeout=SEED_TIMEOUT,
                ),
                f"sign-up of {name}",
                (201,),
            )

    progress(f"seeding {accounts} accounts ({tag})")
    _run_all(pool, sign_up, (*names, watcher))

    sessions: dict[int, tuple[Cookie, str]] = {}
    index_of = {name: i for i, name in enumerate(names)}

    def follow_all(item: tuple[str, Iterable[str]]) -> None:
        name, followees = item
        with requests.Session() as session:
            login(session, base, name)
            # The cookie as the server set it (its domain and path), for the virtual user.
            cookie = next((c for c in session.cookies if c.name == SESSION_COOKIE), None)
            if name in index_of and cookie is not None:
                sessions[index_of[name]] = (cookie, str(session.headers["X-CSRF-Token"]))
            for followee in followees:
                _check(
                    session.put(f"{base}/api/following/{followee}", timeout=SEED_TIMEOUT),
                    f"{name} following {followee}",
                    (204,),
                )

    progress(f"seeding {graph.edges} follows (Pareto), and a watcher following everyone")
    plan: list[tuple[str, Sequence[str]]] = [
        (names[i], [names[j] for j in graph.following[i]]) for i in range(accounts)
    ]
    plan.append((watcher, names))
    _run_all(pool, follow_all, plan)

    # Photos go to accounts by popularity rank (the most followed post most), so feeds and
    # the hot profiles have something to show from the start.
    owners = [graph.by_followers[i % max(1, len(graph.hot()))] for i in range(photos)]
    image = photo_bytes(rng)

    def upload(owner: int) -> None:
        with requests.Session() as session:
            login(session, base, names[owner])
            _check(
                session.post(
                    f"{base}/api/photos",
                    files={"photo": ("seed.png", image, "image/png")},
                    data={"caption": "seed"},
                    timeout=SEED_TIMEOUT,
                ),
                f"upload by {names[owner]}",
                (201,),
            )

    if photos:
        progress(f"seeding {photos} photos")
        _run_all(pool, upload, owners)
    return Population(
        tag=tag,
        usernames=names,
        graph=graph,
        watcher=watcher,
        photos=photos,
        seconds=time.monotonic() - started,
        sessions=sessions,
    )
