"""The load-test report: ``report.json`` (everything), ``endpoints.csv``, ``timeline.csv``,
``failures.csv`` and ``index.html`` (tables and inline SVG charts; opens offline).

Latencies are milliseconds, from the load generator's side (the whole round trip);
percentiles are nearest-rank over every recorded request.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from entrypoints.loadtest.charts import line_chart

__all__ = ["percentile", "summarise_requests", "timeline", "write_report"]

TOTAL = "all requests"


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0.0 for an empty one)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(fraction * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def _stats(times: list[float], failures: int, seconds: float) -> dict[str, Any]:
    times.sort()
    return {
        "requests": len(times),
        "failures": failures,
        "rps": round(len(times) / seconds, 2) if seconds > 0 else 0.0,
        "mean_ms": round(sum(times) / len(times), 2) if times else 0.0,
        "p50_ms": round(percentile(times, 0.50), 2),
        "p95_ms": round(percentile(times, 0.95), 2),
        "p99_ms": round(percentile(times, 0.99), 2),
        "max_ms": round(times[-1], 2) if times else 0.0,
    }


def summarise_requests(
    rows: Sequence[tuple[float, str, float, bool]], seconds: float
) -> list[dict[str, Any]]:
    """Per endpoint (and ``all requests``): count, failures, req/s, mean, p50/p95/p99, max."""
    times: dict[str, list[float]] = defaultdict(list)
    failures: dict[str, int] = defaultdict(int)
    for _, name, ms, ok in rows:
        times[name].append(ms)
        if not ok:
            failures[name] += 1
    out = [{"name": name, **_stats(times[name], failures[name], seconds)} for name in sorted(times)]
    everything = [ms for _, _, ms, _ in rows]
    out.append({"name": TOTAL, **_stats(everything, sum(failures.values()), seconds)})
    return out


def timeline(
    rows: Sequence[tuple[float, str, float, bool]], seconds: float, window: float
) -> list[dict[str, Any]]:
    """Per window of ``window`` seconds: req/s, errors/s and p50/p95/p99 per endpoint."""
    buckets: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    errors: dict[int, int] = defaultdict(int)
    for t, name, ms, ok in rows:
        index = int(t // window)
        buckets[index][name].append(ms)
        buckets[index][TOTAL].append(ms)
        if not ok:
            errors[index] += 1
    points = []
    for index in range(math.ceil(seconds / window) if seconds > 0 else 0):
        by_name = {}
        for name, times in sorted(buckets.get(index, {}).items()):
            times.sort()
            by_name[name] = {
                "rps": round(len(times) / window, 2),
                "p50_ms": round(percentile(times, 0.50), 2),
                "p95_ms": round(percentile(times, 0.95), 2),
                "p99_ms": round(percentile(times, 0.99), 2),
            }
        points.append(
            {
                "t": round((index + 1) * window, 2),
                "rps": by_name.get(TOTAL, {}).get("rps", 0.0),
                "errors_per_s": round(errors.get(index, 0) / window, 2),
                "endpoints": by_name,
            }
        )
    return points


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_report(directory: Path, report: dict[str, Any]) -> Path:
    """Write every file of ``report`` into ``directory`` (created); return the HTML page."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    columns = ("requests", "failures", "rps", "mean_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms")
    _write_csv(
        directory / "endpoints.csv",
        ("name", *columns),
        [(e["name"], *(e[c] for c in columns)) for e in report["endpoints"]],
    )
    _write_csv(
        directory / "timeline.csv",
        ("t", "name", "rps", "p50_ms", "p95_ms", "p99_ms"),
        [
            (p["t"], name, v["rps"], v["p50_ms"], v["p95_ms"], v["p99_ms"])
            for p in report["timeline"]
            for name, v in p["endpoints"].items()
        ],
    )
    _write_csv(
        directory / "failures.csv",
        ("name", "error", "occurrences"),
        [(f["name"], f["error"], f["occurrences"]) for f in report["failures"]],
    )
    page = directory / "index.html"
    page.write_text(render_html(report))
    return page


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}
.charts{display:flex;flex-wrap:wrap;gap:12px}.note{color:#555;font-size:13px}
"""


def render_html(report: dict[str, Any]) -> str:
    """The report page: parameters, summary, charts, fan-out lag, target metrics."""
    params = report["parameters"]
    points = report["timeline"]
    names = [e["name"] for e in report["endpoints"] if e["name"] != "all requests"]
    rps_series = {"all requests": [(p["t"], p["rps"]) for p in points]}
    for name in names:
        rps_series[name] = [(p["t"], p["endpoints"].get(name, {}).get("rps", 0.0)) for p in points]
    charts = [
        line_chart(rps_series, title="Requests per second", y_label="req/s"),
        line_chart(
            {
                "errors/s": [(p["t"], p["errors_per_s"]) for p in points],
                "users": [(t, float(u)) for t, u in report.get("users_over_time", [])],
            },
            title="Errors per second, and virtual users",
            y_label="errors/s, users",
        ),
    ]
    for name in ["all requests", *names]:
        series = {
            q: [(p["t"], p["endpoints"][name][f"{q}_ms"]) for p in points if name in p["endpoints"]]
            for q in ("p50", "p95", "p99")
        }
        charts.append(
            line_chart(series, title=f"{name}: latency", y_label="ms", width=540, height=220)
        )
    endpoint_rows = [
        (
            e["name"],
            e["requests"],
            e["failures"],
            e["rps"],
            e["mean_ms"],
            e["p50_ms"],
            e["p95_ms"],
            e["p99_ms"],
            e["max_ms"],
        )
        for e in report["endpoints"]
    ]
    lag = report["fanout_lag"]
    metrics = report["target_metrics"]
    cache_rows = [
        (name, int(c["hit"]), int(c["stale"]), int(c["miss"]), c["hit_rate"])
        for name, c in sorted(metrics.get("cache", {}).items())
    ]
    query_rows = list(metrics.get("db_queries_per_request", {}).items())
    failures = [(f["name"], f["error"], f["occurrences"]) for f in report["failures"]]
    population = report["population"]
    return "".join(
        [
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>scalecore load test: {escape(params['target'])}</title>",
            f"<style>{_STYLE}</style></head><body>",
            f"<h1>Load test of {escape(params['target'])}</h1>",
            f"<p class='note'>Started {escape(report['started_at'])}; "
            f"{params.get('users', '?')} virtual users (spawn rate "
            f"{params.get('spawn_rate', '?')}/s), "
            f"{report['duration_s']} s, think time {params.get('think_time', '?')} s. "
            "Latencies are round trips measured by the load generator.</p>",
            "<h2>Summary per endpoint</h2>",
            _table(
                (
                    "endpoint",
                    "requests",
                    "failures",
                    "req/s",
                    "mean ms",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "max ms",
                ),
                endpoint_rows,
            ),
            "<h2>Over time</h2><div class='charts'>",
            *charts,
            "</div><h2>Fan-out lag</h2>",
            "<p class='note'>From an upload's 201 until the photo shows in the feed of a "
            "follower (a watcher account polling every 0.1 s).</p>",
            _table(
                ("samples", "p50 s", "p99 s", "max s", "timed out", "not probed"),
                [
                    (
                        lag["samples"],
                        lag["p50_s"],
                        lag["p99_s"],
                        lag["max_s"],
                        lag["timed_out"],
                        lag["skipped"],
                    )
                ],
            ),
            f"<h2>From the target's /metrics</h2><p class='note'>Scope: "
            f"{escape(str(metrics.get('scope')))}. Queries per request overall: "
            f"{escape(str(metrics.get('db_queries_per_request_overall')))}.</p>",
            _table(("cache", "hit", "stale", "miss", "hit rate"), cache_rows),
            _table(("route", "database queries per request"), query_rows),
            "<h2>Seeded population</h2>",
            _table(("what", "value"), list(population.items())),
            "<h2>Failures</h2>",
            _table(("endpoint", "error", "occurrences"), failures) if failures else "<p>None.</p>",
            "</body></html>\n",
        ]
    )
