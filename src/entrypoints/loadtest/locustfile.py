"""The photo-feed load-test scenario as a locustfile.

``scalecore loadtest`` runs it headless. To watch it in locust's own web UI instead (charts
live, users changed on the fly), point locust at this file::

    locust -f src/entrypoints/loadtest/locustfile.py --host http://127.0.0.1:8000 \\
        --sc-seed-users 200 --sc-report var/loadtest-ui

then open http://127.0.0.1:8089 and press Start: the population is seeded first (over
HTTP), then users spawn. ``--sc-report DIR`` writes the same report as the headless
command when the test stops.

The mix, per virtual user: one seeded account each (it starts on the session seeding
opened for that account, or logs in when another user took it), a think time of
``think_time`` +-50% between actions, and these actions: feed page views (most), an older
feed page now and then, profile views with 80% of them on the 20% most-followed accounts,
about one upload per 100 views, follows and unfollows, and a log-out and log-in again.
"""

from __future__ import annotations

import random
from typing import Any

from locust import HttpUser, events, task

from entrypoints.loadtest.graph import pick_profile
from entrypoints.loadtest.scenario import current
from entrypoints.loadtest.seed import PASSWORD, photo_bytes

__all__ = ["FeedViewer"]

#: Task weights: views dominate; one upload per ~100 views (600 + 60 + 250 = 910 views).
WEIGHT_FEED = 600
WEIGHT_FEED_OLDER = 60
WEIGHT_PROFILE = 250
WEIGHT_UPLOAD = 9
WEIGHT_FOLLOW = 15
WEIGHT_UNFOLLOW = 15
WEIGHT_RELOGIN = 10

_IMAGE: bytes | None = None


def _image() -> bytes:
    global _IMAGE
    if _IMAGE is None:
        _IMAGE = photo_bytes(random.Random(7))
    return _IMAGE


class FeedViewer(HttpUser):
    """A logged-in visitor of the photo feed (see the module docstring for the mix)."""

    def wait_time(self) -> float:
        think = current().think_time
        return think * (0.5 + current().rng.random()) if think > 0 else 0.0

    def on_start(self) -> None:
        scenario = current()
        self.account = scenario.next_account()
        self.username = scenario.population.usernames[self.account]
        self.following = set(scenario.population.graph.following[self.account])
        self.added: list[int] = []
        self.cursor: str | None = None
        seeded = scenario.take_session(self.account)
        if seeded is None:
            self._log_in()
        else:
            cookie, csrf = seeded
            self.client.cookies.set_cookie(cookie)
            self.client.headers["X-CSRF-Token"] = csrf

    def _log_in(self) -> None:
        with self.client.post(
            "/api/session",
            json={"username": self.username, "password": PASSWORD},
            name="POST /api/session",
            catch_response=True,
        ) as response:
            if response.status_code == 200:
                self.client.headers["X-CSRF-Token"] = response.json()["csrf_token"]
            else:
                response.failure(f"log-in answered {response.status_code}")

    @task(WEIGHT_FEED)
    def feed(self) -> None:
        with self.client.get("/api/feed", name="GET /api/feed", catch_response=True) as response:
            if response.status_code == 200:
                self.cursor = response.json().get("next")

    @task(WEIGHT_FEED_OLDER)
    def feed_older(self) -> None:
        if self.cursor is None:
            self.feed()
            return
        self.client.get("/api/feed", params={"before": self.cursor}, name="GET /api/feed?before")

    @task(WEIGHT_PROFILE)
    def profile(self) -> None:
        scenario = current()
        name = scenario.population.usernames[pick_profile(scenario.population.graph, scenario.rng)]
        self.client.get(f"/api/users/{name}", name="GET /api/users/<username>")

    @task(WEIGHT_UPLOAD)
    def upload(self) -> None:
        with self.client.post(
            "/api/photos",
            files={"photo": ("photo.png", _image(), "image/png")},
            data={"caption": "load test"},
            name="POST /api/photos",
            catch_response=True,
        ) as response:
            if response.status_code == 201:
                current().probe.watch(response.json()["id"])

    def _other_account(self) -> int | None:
        scenario = current()
        graph = scenario.population.graph
        for _ in range(10):
            candidate = pick_profile(graph, scenario.rng)
            if candidate != self.account and candidate not in self.following:
                return candidate
        return None

    @task(WEIGHT_FOLLOW)
    def follow(self) -> None:
        target = self._other_account()
        if target is None:
            return
        name = current().population.usernames[target]
        response = self.client.put(f"/api/following/{name}", name="PUT /api/following/<username>")
        if response.status_code == 204:
            self.following.add(target)
            self.added.append(target)

    @task(WEIGHT_UNFOLLOW)
    def unfollow(self) -> None:
        # Undo this run's follows first, so the seeded graph keeps its shape.
        if not self.added:
            return
        target = self.added.pop()
        name = current().population.usernames[target]
        response = self.client.delete(
            f"/api/following/{name}", name="DELETE /api/following/<username>"
        )
        if response.status_code == 204:
            self.following.discard(target)

    @task(WEIGHT_RELOGIN)
    def relogin(self) -> None:
        self.client.delete("/api/session", name="DELETE /api/session")
        self.client.headers.pop("X-CSRF-Token", None)
        self._log_in()


# --------------------------------------------------------------------------- locust's own CLI


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("scalecore")
    group.add_argument("--sc-seed-users", type=int, default=200, help="Accounts to seed.")
    group.add_argument("--sc-follows", type=int, default=20, help="Follows per account.")
    group.add_argument("--sc-photos", type=int, default=100, help="Photos to seed.")
    group.add_argument("--sc-think-time", type=float, default=1.0, help="Mean think time (s).")
    group.add_argument("--sc-fanout-threshold", type=int, default=1000)
    group.add_argument("--sc-report", default="", help="Write the report here at test stop.")


@events.test_start.add_listener
def _seed_for_ui(environment: Any, **_kwargs: Any) -> None:
    from entrypoints.loadtest.headless import prepare

    options = environment.parsed_options
    if options is None:  # driven by `scalecore loadtest`, which seeded already
        return
    environment.sc_run = prepare(
        environment,
        target=environment.host,
        seed_users=options.sc_seed_users,
        follows=options.sc_follows,
        photos=options.sc_photos,
        think_time=options.sc_think_time,
        fanout_threshold=options.sc_fanout_threshold,
        progress=print,
    )


@events.test_stop.add_listener
def _report_for_ui(environment: Any, **_kwargs: Any) -> None:
    options = environment.parsed_options
    run = getattr(environment, "sc_run", None)
    if options is None or run is None or not options.sc_report:
        return
    from pathlib import Path

    runner = environment.runner
    run.parameters.update(
        {
            "users": getattr(runner, "target_user_count", None) or runner.user_count,
            "spawn_rate": getattr(runner, "spawn_rate", None) or "set in the UI",
            "duration_s": "until stopped in the UI",
        }
    )
    run.finish(Path(options.sc_report), users=runner.user_count)
