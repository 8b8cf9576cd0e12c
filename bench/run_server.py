"""`scalecore run` on waitress vs werkzeug's development server, under the load test's mix,
at several concurrency levels.

One embedded site (one data directory); the servers take turns serving it (``scalecore
run --server NAME``; waitress with ``[web] threads`` = 4, the default, and 8), each loaded
by ``scalecore loadtest`` with think time 0 (every virtual user sends its next request as
soon as the last one is answered) at each number of users, in an order that rotates from
one level to the next. Each load run seeds its own small population first (over HTTP, not
timed). With ``--pin`` (the default on 2 or more cores) the site runs on CPU 1 and the
load generator on CPU 0. Reports req/s, p50/p99 of all requests and of the feed,
failures, and the site's CPU milliseconds per request (its processes' user + system time
over the load phase), per server and level.

Run: ``python -m bench.run_server [--quick] [--users 1,8,32] [--no-pin]`` from the
repository root.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._common import load_average, table
from bench._loadrun import deployment, loadtest, pin_cpus, scratch

#: label -> (server, environment overrides)
SERVERS: dict[str, tuple[str, dict[str, str]]] = {
    "werkzeug": ("werkzeug", {}),
    "waitress, 4 threads": ("waitress", {"SCALECORE_WEB__THREADS": "4"}),
    "waitress, 8 threads": ("waitress", {"SCALECORE_WEB__THREADS": "8"}),
}


def run(
    quick: bool = False,
    levels: Sequence[int] = (),
    pin: bool = True,
    json_path: Path | None = None,
    rounds: int = 1,
) -> dict[str, float]:
    levels = tuple(levels) or ((4, 16) if quick else (1, 8, 32, 64))
    duration = "10s" if quick else "20s"
    workdir = scratch("bench-run-server-")
    site_cpus, load_cpus, placement = pin_cpus(pin)
    results = _runs(levels, duration, workdir, site_cpus, load_cpus, rounds)
    names = list(SERVERS)
    return _report(results, levels, names, duration, rounds, placement, json_path)


def _runs(
    levels: Sequence[int],
    duration: str,
    workdir: Path,
    site_cpus: set[int] | None,
    load_cpus: set[int] | None,
    rounds: int,
) -> list[dict[str, Any]]:
    names = list(SERVERS)
    results: list[dict[str, Any]] = []
    turns = [(round_, users) for round_ in range(rounds) for users in levels]
    for index, (round_, users) in enumerate(turns):
        order = names[index % len(names) :] + names[: index % len(names)]
        for label in order:
            server, env = SERVERS[label]
            with deployment(
                "embedded-run", workdir, server=server, env_extra=env, cpus=site_cpus
            ) as url:
                report = loadtest(
                    url,
                    workdir / f"report-{server}-{len(results)}",
                    users=users,
                    duration=duration,
                    cpus=load_cpus,
                    spawn_rate=users,
                    think_time=0,
                    seed_users=30,
                    follows=10,
                    photos=30,
                    seed=index,
                )
            endpoints = {e["name"]: e for e in report["endpoints"]}
            total, feed = endpoints["all requests"], endpoints["GET /api/feed"]
            cpu = report.get("deployment", {}).get("cpu_seconds", float("nan"))
            load_seconds = report.get("deployment", {}).get("load_seconds", float("nan"))
            result = {
                "server": label,
                "users": users,
                "round": round_,
                "rps": total["rps"],
                "p50": total["p50_ms"],
                "p99": total["p99_ms"],
                "feed_p50": feed["p50_ms"],
                "feed_p99": feed["p99_ms"],
                "failures": total["failures"],
                "requests": total["requests"],
                # CPU time of the site's processes per request answered in the load phase.
                "cpu_ms": 1000 * cpu / (total["rps"] * load_seconds) if total["rps"] else 0,
                "load_average": load_average(),
            }
            results.append(result)
            print(
                f"{users} users, {label}: {total['rps']} req/s, p99 {total['p99_ms']} ms, "
                f"{result['cpu_ms']:.2f} CPU ms per request, {total['failures']} failed; "
                f"{result['load_average']}",
                flush=True,
            )
    return results


def _report(
    results: list[dict[str, Any]],
    levels: Sequence[int],
    names: list[str],
    duration: str,
    rounds: int,
    placement: str,
    json_path: Path | None,
) -> dict[str, float]:
    merged = _merge_rounds(results)
    rows: list[Sequence[object]] = [
        [
            r["users"],
            r["server"],
            f"{r['rps']:,.1f}",
            f"{r['p50']:.1f}",
            f"{r['p99']:.1f}",
            f"{r['feed_p50']:.1f}",
            f"{r['feed_p99']:.1f}",
            f"{r['cpu_ms']:.2f}",
            f"{r['failures']} of {r['requests']}",
            r["range"],
        ]
        for r in sorted(merged, key=lambda r: (r["users"], names.index(r["server"])))
    ]
    print(
        f"\nthink time 0, {duration} per run, {rounds} round(s) (medians over rounds; "
        f"req/s of each round in the last column); {placement}"
    )
    print(
        table(
            ["users", "server", "req/s", "p50 ms", "p99 ms", "feed p50", "feed p99",
             "CPU ms/req", "failed", "req/s per round"],
            rows,
        )
    )  # fmt: skip
    ratios: dict[str, float] = {}
    for users in levels:
        by = {r["server"]: r for r in merged if r["users"] == users}
        base = by["werkzeug"]
        for label in names[1:]:
            rps = by[label]["rps"] / base["rps"] if base["rps"] else float("nan")
            p99 = by[label]["p99"] / base["p99"] if base["p99"] else float("nan")
            print(f"{users} users: {label} / werkzeug: req/s x{rps:.2f}, p99 x{p99:.2f}")
            ratios[f"run.{label}.{users}.rps_ratio"] = rps
    if json_path is not None:
        json_path.write_text(
            json.dumps({"placement": placement, "duration": duration, "runs": results}, indent=2)
            + "\n"
        )
        print(f"figures: {json_path}")
    return ratios


def _merge_rounds(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (server, users): the median of each figure over the rounds."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for result in results:
        groups.setdefault((result["server"], result["users"]), []).append(result)
    merged = []
    for (server, users), runs in groups.items():
        row: dict[str, Any] = {"server": server, "users": users}
        for key in ("rps", "p50", "p99", "feed_p50", "feed_p99", "cpu_ms"):
            row[key] = statistics.median(run[key] for run in runs)
        row["failures"] = sum(run["failures"] for run in runs)
        row["requests"] = sum(run["requests"] for run in runs)
        row["range"] = " / ".join(f"{run['rps']:.0f}" for run in runs)
        merged.append(row)
    return merged


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    parser.add_argument(
        "--users", default="", help="comma-separated concurrency levels (default 1,8,32,64)"
    )
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false",
        help="let the site and the load generator share every core",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--rounds", type=int, default=1, help="runs per server and level")
    args = parser.parse_args()
    chosen = [int(part) for part in args.users.split(",") if part.strip()]
    run(args.quick, chosen, args.pin, args.json, args.rounds)
