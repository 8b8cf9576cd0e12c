"""``scalecore loadtest``: seed, run the locust scenario headless for a bounded time, report.

Imports locust, which patches the standard library for gevent on import: import this module
only in a process that runs the load test (the CLI imports it inside the command).
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import gevent
import requests
from locust.env import Environment

from entrypoints.loadtest.report import percentile, summarise_requests, timeline, write_report
from entrypoints.loadtest.scenario import LagProbe, Recorder, Scenario, install
from entrypoints.loadtest.scrape import Samples, scrape, summarise
from entrypoints.loadtest.seed import seed
from scalecore.errors import BackendUnavailable

__all__ = ["Run", "prepare", "run_loadtest"]

#: Charts get about this many points over the run.
TIMELINE_POINTS = 40


@attrs.define
class Run:
    """A seeded scenario, ready to load; :meth:`finish` writes its report."""

    environment: Any
    scenario: Scenario
    parameters: dict[str, Any]
    metrics_before: Samples | None
    fanout_threshold: int
    started_at: str = attrs.field(factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def finish(self, directory: Path, *, users: int) -> dict[str, Any]:
        """Stop the lag probes, scrape /metrics again, and write the report to ``directory``."""
        recorder = self.scenario.recorder
        seconds = max(1e-9, time.time() - recorder.started)
        recorder.sample_users(users)
        self.scenario.probe.stop()
        after = scrape(self.scenario.base)
        rows = list(recorder.rows)
        window = max(1.0, round(seconds / TIMELINE_POINTS))
        lags = sorted(self.scenario.probe.lags)
        probe = self.scenario.probe
        stats = self.environment.stats
        endpoints = summarise_requests(rows, seconds)
        sizes = {entry.name: entry.avg_content_length for entry in stats.entries.values()}
        for endpoint in endpoints:
            endpoint["avg_bytes"] = round(float(sizes.get(endpoint["name"], 0.0)), 1)
        report = {
            "parameters": self.parameters,
            "started_at": self.started_at,
            "duration_s": round(seconds, 1),
            "population": self.scenario.population.summary(self.fanout_threshold),
            "endpoints": endpoints,
            "timeline": timeline(rows, seconds, window),
            "timeline_window_s": window,
            "users_over_time": [[round(t, 1), n] for t, n in recorder.users],
            "fanout_lag": {
                "samples": len(lags),
                "p50_s": round(percentile(lags, 0.5), 3),
                "p99_s": round(percentile(lags, 0.99), 3),
                "max_s": round(lags[-1], 3) if lags else 0.0,
                "timed_out": probe.timed_out,
                "skipped": probe.skipped,
                "probe_errors": probe.errors,
            },
            "target_metrics": summarise(self.metrics_before, after),
            "failures": [
                {
                    "name": f"{e.method} {e.name}".strip(),
                    "error": str(e.error),
                    "occurrences": e.occurrences,
                }
                for e in stats.errors.values()
            ],
            "recorded_requests_dropped": recorder.dropped,
        }
        write_report(directory, report)
        return report


def prepare(
    environment: Any,
    *,
    target: str,
    seed_users: int,
    follows: int,
    photos: int,
    think_time: float,
    fanout_threshold: int,
    progress: Callable[[str], None],
    rng_seed: int | None = None,
) -> Run:
    """Seed the target, install the shared scenario, start recording ``environment``'s
    requests; raise ``BackendUnavailable`` if the target is down or refuses the seeding."""
    try:
        health = requests.get(f"{target}/healthz", timeout=10)
    except requests.RequestException as exc:
        raise BackendUnavailable(f"{target}/healthz cannot be reached: {exc}") from None
    if health.status_code != 200:
        raise BackendUnavailable(f"{target}/healthz answered {health.status_code}")
    rng = random.Random(rng_seed)
    population = seed(
        target, accounts=seed_users, follows=follows, photos=photos, rng=rng, progress=progress
    )
    progress(f"seeded in {population.seconds:.1f}s")
    recorder = Recorder()
    environment.events.request.add_listener(recorder.on_request)
    probe = LagProbe(target, population.watcher)
    probe.start()
    scenario = Scenario(
        base=target,
        population=population,
        think_time=think_time,
        recorder=recorder,
        probe=probe,
        rng=rng,
    )
    install(scenario)
    before = scrape(target)
    recorder.restart()
    parameters = {
        "target": target,
        "seed_users": seed_users,
        "follows": follows,
        "photos": photos,
        "think_time": think_time,
        "fanout_threshold": fanout_threshold,
    }
    return Run(environment, scenario, parameters, before, fanout_threshold)


def _progress_loop(
    run: Run, runner: Any, duration: float, echo: Callable[[str], None], tty: bool
) -> None:
    started = time.monotonic()
    last_line = -math.inf
    while True:
        elapsed = time.monotonic() - started
        run.scenario.recorder.sample_users(runner.user_count)
        rows = run.scenario.recorder.rows
        errors = sum(1 for row in rows if not row[3])
        rate = len(rows) / max(elapsed, 1e-9)
        status = (
            f"{min(elapsed, duration):5.0f}/{duration:.0f}s  {runner.user_count} users  "
            f"{len(rows)} requests ({rate:.0f}/s)  {errors} errors"
        )
        if tty:
            filled = int(30 * min(1.0, elapsed / duration))
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {status}")
            sys.stderr.flush()
        elif elapsed - last_line >= 5:
            echo(f"loadtest: {status}")
            last_line = elapsed
        gevent.sleep(1.0)


def run_loadtest(
    *,
    target: str,
    users: int,
    spawn_rate: float,
    duration: float,
    report_dir: Path,
    seed_users: int,
    follows: int,
    photos: int,
    think_time: float,
    fanout_threshold: int,
    echo: Callable[[str], None],
    rng_seed: int | None = None,
) -> dict[str, Any]:
    """Seed ``target``, run ``users`` virtual users for ``duration`` seconds, write the
    report to ``report_dir``; return it."""
    from entrypoints.loadtest.locustfile import FeedViewer

    environment = Environment(user_classes=[FeedViewer], host=target)
    run = prepare(
        environment,
        target=target,
        seed_users=seed_users,
        follows=follows,
        photos=photos,
        think_time=think_time,
        fanout_threshold=fanout_threshold,
        progress=lambda line: echo(f"loadtest: {line}"),
        rng_seed=rng_seed,
    )
    run.parameters.update({"users": users, "spawn_rate": spawn_rate, "duration_s": duration})
    runner = environment.create_local_runner()
    echo(f"loadtest: {users} users at {spawn_rate}/s for {duration:.0f}s against {target}")
    runner.start(users, spawn_rate=spawn_rate)
    tty = sys.stderr.isatty()
    ticker = gevent.spawn(_progress_loop, run, runner, duration, echo, tty)
    gevent.sleep(duration)
    ticker.kill()
    if tty:
        sys.stderr.write("\n")
    final_users = runner.user_count
    runner.quit()
    return run.finish(report_dir, users=final_users)
