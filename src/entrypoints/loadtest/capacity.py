"""A capacity plan from a load-test report: what N concurrent feed viewers need.

Everything measured comes from the report (``scalecore loadtest`` writes it; the
deployment benchmarks add the site's CPU seconds); everything else is an assumption with
a default, printed with the plan. The model, for ``viewers`` concurrent viewers who each
act every ``think_time`` seconds on average:

* demand ``D = viewers / think_time`` requests/s, in the measured mix;
* CPU per request ``c`` = the site's CPU seconds during the load / requests answered (or,
  without a CPU figure, ``site_cores / measured req/s``);
* web cores ``= D * c / utilisation`` (headroom keeps p99 near the measured one), one
  ``scalecore web`` worker process per core;
* uploads/s ``= D * upload share``; fan-out entries/s ``= uploads/s * followers per upload``;
  feed worker processes ``= entries/s / entries per worker-second``;
* memcached memory ``= (sessions + first feed pages for every viewer + hot profiles) *
  bytes each / fill``, each value's size taken from the measured response sizes;
* database queries/s ``= D * queries per request`` (from the target's /metrics, warm);
  shards ``= queries/s / queries per shard-second``; connections per shard ``= web
  processes * threads + worker processes`` (one per thread at most, pools sized to it).

The plan is printed per stage of docs/scaling.md, with the largest number of viewers each
stage's shape can carry on the measured throughput.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

__all__ = ["Assumptions", "plan", "render_plan"]


@attrs.frozen
class Assumptions:
    """The knobs of the model that the load test does not measure."""

    think_time: float = 10.0
    utilisation: float = 0.6
    site_cores: float = 1.5
    threads_per_process: int = 4
    followers_per_upload: float = 100.0
    fanout_entries_per_worker_s: float = 5000.0
    queries_per_shard_s: float = 10000.0
    hot_profile_share: float = 0.2
    accounts_per_viewer: float = 4.0
    session_bytes: int = 300
    cache_fill: float = 0.7
    cores_per_server: int = 8


def _endpoint(report: dict[str, Any], name: str) -> dict[str, Any]:
    for endpoint in report["endpoints"]:
        if endpoint["name"] == name:
            return dict(endpoint)
    return {"requests": 0, "avg_bytes": 0.0, "rps": 0.0}


def plan(report: dict[str, Any], viewers: int, a: Assumptions) -> dict[str, Any]:
    """The figures of the plan (see the module docstring for the formulas)."""
    total = _endpoint(report, "all requests")
    requests = max(1, int(total["requests"]))
    duration = float(report["duration_s"])
    measured_rps = float(total["rps"])
    cpu = report.get("deployment", {}).get("cpu_seconds")
    if cpu:
        cpu_per_request = float(cpu) / requests
        cpu_source = f"measured: {cpu} CPU s over {requests:,} requests"
    else:
        cpu_per_request = a.site_cores / max(measured_rps, 1e-9)
        cpu_source = f"assumed: {a.site_cores} cores / {measured_rps} req/s"
    demand = viewers / a.think_time
    web_cores = demand * cpu_per_request / a.utilisation
    web_processes = max(1, math.ceil(web_cores))
    uploads = _endpoint(report, "POST /api/photos")["requests"]
    upload_share = uploads / requests
    uploads_s = demand * upload_share
    entries_s = uploads_s * a.followers_per_upload
    worker_processes = max(1, math.ceil(entries_s / a.fanout_entries_per_worker_s))
    feed_bytes = float(_endpoint(report, "GET /api/feed").get("avg_bytes", 0.0))
    profile_bytes = float(_endpoint(report, "GET /api/users/<username>").get("avg_bytes", 0.0))
    accounts = viewers * a.accounts_per_viewer
    cache_bytes = (
        viewers * a.session_bytes
        + viewers * feed_bytes
        + accounts * a.hot_profile_share * profile_bytes
    ) / a.cache_fill
    metrics = report.get("target_metrics", {})
    queries_per_request = metrics.get("db_queries_per_request_overall")
    queries_s = demand * float(queries_per_request or 0.0)
    shards = max(1, math.ceil(queries_s / a.queries_per_shard_s))
    connections = web_processes * a.threads_per_process + worker_processes
    return {
        "viewers": viewers,
        "demand_rps": demand,
        "measured_rps": measured_rps,
        "measured_p99_ms": float(total["p99_ms"]),
        "measured_duration_s": duration,
        "cpu_per_request_ms": cpu_per_request * 1000,
        "cpu_source": cpu_source,
        "web_cores": web_cores,
        "web_processes": web_processes,
        "web_servers": math.ceil(web_processes / a.cores_per_server),
        "upload_share": upload_share,
        "uploads_s": uploads_s,
        "fanout_entries_s": entries_s,
        "worker_processes": worker_processes,
        "feed_bytes": feed_bytes,
        "profile_bytes": profile_bytes,
        "cache_mib": cache_bytes / 2**20,
        "queries_per_request": queries_per_request,
        "queries_scope": metrics.get("scope"),
        "queries_s": queries_s,
        "shards": shards,
        "connections_per_shard": connections,
        "viewers_per_core": a.think_time * a.utilisation / cpu_per_request,
    }


def _stages(p: dict[str, Any], a: Assumptions) -> list[tuple[str, str]]:
    per_core = p["viewers_per_core"]
    one_process = per_core  # scalecore run: one process, the GIL keeps it near one core
    one_box = per_core * a.cores_per_server
    return [
        (
            "Stage 0-1: one box, `scalecore run`",
            f"one process (the GIL keeps Python near one core): about {one_process:,.0f} "
            f"viewers; {p['viewers']:,} need {math.ceil(p['viewers'] / one_process):,} such "
            "processes, which this stage cannot run together (its bus and cache are in-process)",
        ),
        (
            "Stage 2: several web processes on one box",
            f"`scalecore web --workers {a.cores_per_server}` on a box of {a.cores_per_server} "
            "cores: "
            f"about {one_box:,.0f} viewers (RabbitMQ and memcached are now needed); "
            f"{p['viewers']:,} need {p['web_processes']} processes, i.e. "
            f"{p['web_servers']} such box(es)",
        ),
        (
            "Stage 3: several servers",
            f"{p['web_servers']} web server(s) of {a.cores_per_server} cores "
            f"({p['web_processes']} web worker processes in all), {p['worker_processes']} feed "
            f"worker process(es), memcached {p['cache_mib']:,.0f} MiB, S3 for media, "
            "sessions in memcached",
        ),
        (
            "Stage 4: the database",
            f"{p['queries_s']:,.0f} queries/s at {p['queries_per_request']} per request: "
            f"{p['shards']} PostgreSQL shard(s) at {a.queries_per_shard_s:,.0f} queries/s "
            f"each (add read replicas before shards when reads dominate); about "
            f"{p['connections_per_shard']} client connections per shard (past a few hundred, "
            "put PgBouncer in transaction mode in front)",
        ),
        (
            "Stage 5: hot keys and spikes",
            f"fan-out {p['fanout_entries_s']:,.0f} feed entries/s from {p['uploads_s']:,.1f} "
            f"uploads/s; lower fanout_threshold if a celebrity's upload backs the queue up; "
            f"plan for a spike of 3x by keeping utilisation at {a.utilisation:.0%}",
        ),
    ]


def render_plan(report: dict[str, Any], viewers: int, a: Assumptions, *, source: str) -> str:
    """The plan as Markdown: measured inputs, assumptions, formulas, results, stages."""
    p = plan(report, viewers, a)
    params = report.get("parameters", {})
    lines = [
        f"# Capacity plan: {viewers:,} concurrent feed viewers",
        "",
        f"From the load-test report `{source}` (target {params.get('target', '?')}, "
        f"{params.get('users', '?')} virtual users, {p['measured_duration_s']:.0f} s).",
        "",
        "## Measured",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| throughput | {p['measured_rps']:,.1f} req/s (p99 {p['measured_p99_ms']:,.0f} ms) |",
        f"| CPU per request | {p['cpu_per_request_ms']:.2f} ms ({p['cpu_source']}) |",
        f"| upload share of requests | {p['upload_share']:.2%} |",
        f"| feed response / profile response | {p['feed_bytes']:,.0f} B / "
        f"{p['profile_bytes']:,.0f} B |",
        f"| database queries per request | {p['queries_per_request']} "
        f"(/metrics, scope: {p['queries_scope']}) |",
        "",
        "## Assumptions",
        "",
        "| assumption | value |",
        "| --- | --- |",
    ]
    lines += [f"| {field.name} | {getattr(a, field.name)} |" for field in attrs.fields(Assumptions)]
    lines += [
        "",
        "## Formulas and results",
        "",
        "| quantity | formula | value |",
        "| --- | --- | --- |",
        f"| demand D | viewers / think_time | {p['demand_rps']:,.0f} req/s |",
        f"| web cores | D x CPU per request / utilisation | {p['web_cores']:,.1f} |",
        f"| web worker processes | ceil(web cores), one per core | {p['web_processes']} |",
        f"| web servers | ceil(processes / cores_per_server) | {p['web_servers']} |",
        f"| uploads/s | D x upload share | {p['uploads_s']:,.1f} |",
        f"| fan-out entries/s | uploads/s x followers_per_upload | {p['fanout_entries_s']:,.0f} |",
        f"| feed worker processes | ceil(entries/s / fanout_entries_per_worker_s) | "
        f"{p['worker_processes']} |",
        f"| memcached memory | (viewers x (session_bytes + feed response) + viewers x "
        f"accounts_per_viewer x hot_profile_share x profile response) / cache_fill | "
        f"{p['cache_mib']:,.0f} MiB |",
        f"| database queries/s | D x queries per request | {p['queries_s']:,.0f} |",
        f"| PostgreSQL shards | ceil(queries/s / queries_per_shard_s) | {p['shards']} |",
        f"| connections per shard | web processes x threads + worker processes | "
        f"{p['connections_per_shard']} |",
        f"| viewers per web core | think_time x utilisation / CPU per request | "
        f"{p['viewers_per_core']:,.0f} |",
        "",
        "## Per stage of docs/scaling.md",
        "",
    ]
    for title, text in _stages(p, a):
        lines += [f"- **{title}**: {text}."]
    return "\n".join(lines) + "\n"
