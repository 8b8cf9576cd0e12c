"""The scaling curve: ``scalecore web`` with 1, 2 and 3 workers, one box and distributed,
with the shared cache on and off, under the load test's mix.

Each point starts a fresh deployment, runs ``scalecore loadtest`` against it (its own
seeded population, think time 0, a fixed number of users, a bounded duration) and stops
it. Points:

* ``one box``: the embedded defaults (SQLite files, local blob folder, in-process bus and
  cache) with SQL sessions, so a login holds across worker processes. The in-process bus
  does not cross processes: uploads are not fanned out (the lag probes time out), which is
  why docs/scaling.md keeps one box on ``scalecore run``.
* ``distributed``: deploy/distributed.toml (PostgreSQL shards, memcached sessions and
  two-tier cache, RabbitMQ, S3) with a ``scalecore worker`` and a ``scalecore scheduler``.
* ``distributed, no shared cache``: the same with ``[cache] backend = "memory"`` (each
  process caches for itself; invalidations reach only the process that made them).

The load generator runs on the same box as the site. With ``--pin`` (the default on a
box of 2 or more cores) it is confined to CPU 0 and every process of the site to the
other cores (``os.sched_setaffinity``; their children inherit it), so the two stop taking
turns on the same core; the shared servers (PostgreSQL, memcached, RabbitMQ, moto) stay
free to run anywhere. Each point records the site's CPU seconds during the load (from
``/proc``): CPU per request, and the cores the site kept busy (CPU seconds / wall
seconds). Figures are written to ``--json FILE`` for bench/capacity.py.

Run: ``python -m bench.scaling [--quick] [--no-pin] [--json FILE]`` from the repository root.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._common import load_average, table
from bench._loadrun import deployment, loadtest, pin_cpus, scratch

#: name -> (deployment kind, environment overrides, per-process cache instead of memcached)
VARIANTS: dict[str, tuple[str, dict[str, str], bool]] = {
    "one box": ("embedded-web", {"SCALECORE_SESSIONS__BACKEND": "sql"}, False),
    "distributed": ("distributed", {}, False),
    "distributed, no shared cache": ("distributed", {}, True),
}


def point_of(
    variant: str, workers: int, users: int, report: dict[str, Any], where: Path
) -> dict[str, Any]:
    """The figures of one point, from its load-test report."""
    endpoints = {e["name"]: e for e in report["endpoints"]}
    total = endpoints["all requests"]
    metrics = report["target_metrics"]
    profiles = metrics.get("cache", {}).get("photofeed.profiles", {})
    return {
        "variant": variant,
        "workers": workers,
        "users": users,
        "duration_s": report["duration_s"],
        "rps": total["rps"],
        "p50_ms": total["p50_ms"],
        "p99_ms": total["p99_ms"],
        "feed_p99_ms": endpoints["GET /api/feed"]["p99_ms"],
        "failures": total["failures"],
        "requests": total["requests"],
        "fanout_lag_p50_s": report["fanout_lag"]["p50_s"],
        "fanout_lag_p99_s": report["fanout_lag"]["p99_s"],
        "fanout_lag_samples": report["fanout_lag"]["samples"],
        "fanout_timed_out": report["fanout_lag"]["timed_out"],
        "profile_hit_rate": profiles.get("hit_rate"),
        "feed_queries_per_request": metrics.get("db_queries_per_request", {}).get("/api/feed"),
        "queries_per_request": metrics.get("db_queries_per_request_overall"),
        "metrics_scope": metrics.get("scope"),
        "cpu_seconds": report.get("deployment", {}).get("cpu_seconds"),
        "load_seconds": report.get("deployment", {}).get("load_seconds"),
        "report": str(where / "report"),
    }


def run(
    quick: bool = False,
    json_path: Path | None = None,
    only: Sequence[str] = (),
    workers_only: Sequence[int] = (),
    pin: bool = True,
) -> dict[str, float]:
    workers_list = tuple(workers_only) or ((1, 2) if quick else (1, 2, 3))
    duration, users = ("10s", 10) if quick else ("25s", 24)
    workdir = scratch("bench-scaling-")
    site_cpus, load_cpus, placement = pin_cpus(pin)
    points: list[dict[str, Any]] = []
    if json_path is not None and json_path.exists() and only:
        kept = json.loads(json_path.read_text())["points"]
        points.extend(
            p
            for p in kept
            if p["variant"] not in only or (workers_only and p["workers"] not in workers_only)
        )
    for variant, (kind, env, local_cache) in VARIANTS.items():
        if only and variant not in only:
            continue
        for workers in workers_list:
            where = workdir / f"{kind}-{workers}-{len(points)}"
            with deployment(
                kind,
                where,
                workers=workers,
                env_extra=env,
                local_cache=local_cache,
                cpus=site_cpus,
            ) as url:
                report = loadtest(
                    url,
                    where / "report",
                    users=users,
                    duration=duration,
                    cpus=load_cpus,
                    spawn_rate=users,
                    think_time=0,
                    seed_users=60,
                    follows=15,
                    photos=60,
                    seed=workers,
                )
            point = point_of(variant, workers, users, report, where)
            point["placement"] = placement
            point["load_average"] = load_average()
            points.append(point)
            print(
                f"{variant}, {workers} worker(s): {point['rps']} req/s, p99 {point['p99_ms']} ms,"
                f" {point['failures']} failed",
                flush=True,
            )
    rows = [
        [
            p["variant"],
            p["workers"],
            f"{p['rps']:,.1f}",
            f"{p['p50_ms']:.0f}",
            f"{p['p99_ms']:.0f}",
            f"{p['feed_p99_ms']:.0f}",
            p["failures"],
            f"{p['fanout_lag_p50_s']:.2f}/{p['fanout_lag_p99_s']:.2f}"
            f" ({p['fanout_timed_out']} t/o)",
            "" if p["profile_hit_rate"] is None else f"{p['profile_hit_rate']:.2f}",
            "" if p["queries_per_request"] is None else f"{p['queries_per_request']:.2f}",
            _cpu_ms(p),
            _busy_cores(p),
        ]
        for p in points
    ]
    print(f"\n{users} users, think time 0, {duration} per point; {placement}")
    print(
        table(
            ["deployment", "workers", "req/s", "p50 ms", "p99 ms", "feed p99", "failed",
             "lag p50/p99 s", "profile hits", "queries/req", "CPU ms/req", "site cores busy"],
            rows,
        )
    )  # fmt: skip
    if json_path is not None:
        json_path.write_text(
            json.dumps(
                {"users": users, "duration": duration, "placement": placement, "points": points},
                indent=2,
            )
            + "\n"
        )
        print(f"figures: {json_path}")
    return {
        f"scaling.{p['variant']}.{p['workers']}": float(p["rps"])
        for p in points
        if p["variant"] == "distributed"
    }


def _cpu_ms(point: dict[str, Any]) -> str:
    cpu = point.get("cpu_seconds")
    return f"{1000 * cpu / point['requests']:.1f}" if cpu and point["requests"] else "-"


def _busy_cores(point: dict[str, Any]) -> str:
    cpu, wall = point.get("cpu_seconds"), point.get("load_seconds")
    return f"{cpu / wall:.2f}" if cpu and wall else "-"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument(
        "--workers", action="append", type=int, default=[], help="only these worker counts"
    )
    parser.add_argument(
        "--variant", action="append", default=[], choices=list(VARIANTS),
        help="only this variant (repeatable); with --json, the file's other points are kept",
    )  # fmt: skip
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false",
        help="let the site and the load generator share every core",
    )  # fmt: skip
    args = parser.parse_args()
    run(args.quick, args.json, args.variant, args.workers, args.pin)
