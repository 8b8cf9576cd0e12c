"""`scalecore run` on waitress vs werkzeug's development server, under the load test's mix.

One embedded site (one data directory); the two servers take turns serving it
(``scalecore run --server NAME``), in alternating order over the rounds, each loaded by
``scalecore loadtest`` with the same users, think time 0 (as fast as they answer), and a
bounded duration. Each load run seeds its own small population first (over HTTP, not
timed). Reports req/s and p50/p99 of all requests and of the feed per server, and the
ratio waitress / werkzeug.

Run: ``python -m bench.run_server [--quick]`` from the repository root.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from bench._common import parse_args, table
from bench._loadrun import deployment, loadtest, scratch

SERVERS = ("werkzeug", "waitress")


def run(quick: bool = False) -> dict[str, float]:
    rounds, duration, users = (1, "10s", 10) if quick else (2, "25s", 20)
    workdir = scratch("bench-run-server-")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in SERVERS}
    for round_ in range(rounds):
        order = SERVERS if round_ % 2 == 0 else SERVERS[::-1]
        for server in order:
            with deployment("embedded-run", workdir, server=server) as url:
                report = loadtest(
                    url,
                    workdir / f"report-{server}-{round_}",
                    users=users,
                    duration=duration,
                    spawn_rate=users,
                    think_time=0,
                    seed_users=30,
                    follows=10,
                    photos=30,
                    seed=round_,
                )
            endpoints = {e["name"]: e for e in report["endpoints"]}
            total, feed = endpoints["all requests"], endpoints["GET /api/feed"]
            results[server].append(
                {
                    "rps": total["rps"],
                    "p50": total["p50_ms"],
                    "p99": total["p99_ms"],
                    "feed_p50": feed["p50_ms"],
                    "feed_p99": feed["p99_ms"],
                    "failures": total["failures"],
                }
            )
            print(f"round {round_ + 1}: {server}: {total['rps']} req/s, p99 {total['p99_ms']} ms")

    def mean(server: str, key: str) -> float:
        return statistics.mean(r[key] for r in results[server])

    rows: list[Sequence[object]] = [
        [
            server,
            f"{mean(server, 'rps'):,.1f}",
            f"{mean(server, 'p50'):.1f}",
            f"{mean(server, 'p99'):.1f}",
            f"{mean(server, 'feed_p50'):.1f}",
            f"{mean(server, 'feed_p99'):.1f}",
            int(sum(r["failures"] for r in results[server])),
        ]
        for server in SERVERS
    ]
    print(
        f"\n{users} users, think time 0, {duration} x {rounds} round(s) per server "
        "(means over rounds)"
    )
    print(
        table(
            ["server", "req/s", "p50 ms", "p99 ms", "feed p50 ms", "feed p99 ms", "failures"],
            rows,
        )
    )
    ratio_rps = mean("waitress", "rps") / mean("werkzeug", "rps")
    ratio_p99 = mean("waitress", "p99") / mean("werkzeug", "p99")
    print(f"waitress / werkzeug: req/s x{ratio_rps:.2f}, p99 x{ratio_p99:.2f}")
    return {"run.waitress_rps_ratio": ratio_rps, "run.waitress_p99_ratio": ratio_p99}


if __name__ == "__main__":
    run(parse_args(__doc__.splitlines()[0]).quick)
