"""Read the target's ``/metrics`` (Prometheus text format) and summarise what a load test
changed: cache hit rate per cache, database queries per request per route.

Tolerant of any exporter of the text format (a hand-written registry or prometheus_client,
with or without ``# HELP`` lines, ``_created`` series or timestamps): only the samples of the
metrics named here are read, by name and labels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import requests

__all__ = ["Samples", "parse", "scrape", "summarise"]

#: (metric name, sorted (label, value) pairs) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+\S+)?\s*$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_WANTED = (
    "scalecore_http_requests_total",
    "scalecore_http_db_queries_total",
    "scalecore_cache_requests_total",
)


def parse(text: str) -> Samples:
    """The samples of ``text``; lines that are comments or do not parse are ignored."""
    samples: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            continue
        name, labels, value = match.group(1), match.group(2) or "", match.group(3)
        try:
            number = float(value)
        except ValueError:
            continue
        pairs = tuple(sorted((k, v.replace('\\"', '"')) for k, v in _LABEL.findall(labels)))
        samples[(name, pairs)] = samples.get((name, pairs), 0.0) + number
    return samples


def scrape(base: str, timeout: float = 10.0) -> Samples | None:
    """The target's samples, or ``None`` when /metrics cannot be read."""
    try:
        response = requests.get(f"{base}/metrics", timeout=timeout)
    except requests.RequestException:
        return None
    if response.status_code != 200:
        return None
    return parse(response.text)


def _by(samples: Samples, name: str, key: str, **match: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (metric, labels), value in samples.items():
        if metric != name:
            continue
        label_map = dict(labels)
        if any(label_map.get(k) != v for k, v in match.items()):
            continue
        group = label_map.get(key, "")
        out[group] = out.get(group, 0.0) + value
    return out


def _delta(before: Samples, after: Samples) -> tuple[Samples, bool]:
    delta: Samples = {}
    consistent = True
    for key, value in after.items():
        if key[0] not in _WANTED:
            continue
        change = value - before.get(key, 0.0)
        if change < 0:
            consistent = False
        delta[key] = change
    return delta, consistent


def summarise(before: Samples | None, after: Samples | None) -> dict[str, Any]:
    """Cache hit rates and queries per request over the run.

    When both scrapes come from the same process (or from an exporter that aggregates all
    processes), the figures are the run's deltas (``scope: "run"``). If a counter went
    backwards, the scrapes reached different processes (one worker of several, each with
    its own counters); the figures are then that one process's totals since it started
    (``scope: "one process, cumulative"``).
    """
    if after is None:
        return {"scope": "unavailable"}
    scope = "run"
    samples: Mapping[tuple[str, tuple[tuple[str, str], ...]], float] = after
    if before is not None:
        delta, consistent = _delta(before, after)
        if consistent:
            samples = delta
        else:
            scope = "one process, cumulative"
    else:
        scope = "cumulative"
    requests_by_route = _by(dict(samples), "scalecore_http_requests_total", "endpoint")
    queries_by_route = _by(dict(samples), "scalecore_http_db_queries_total", "endpoint")
    caches: dict[str, dict[str, float]] = {}
    for result in ("hit", "miss", "stale"):
        for cache, value in _by(
            dict(samples), "scalecore_cache_requests_total", "cache", result=result
        ).items():
            caches.setdefault(cache, {"hit": 0.0, "miss": 0.0, "stale": 0.0})[result] = value
    for counts in caches.values():
        total = counts["hit"] + counts["miss"] + counts["stale"]
        counts["hit_rate"] = round((counts["hit"] + counts["stale"]) / total, 4) if total else 0.0
    per_request = {
        route: round(queries_by_route.get(route, 0.0) / count, 3)
        for route, count in sorted(requests_by_route.items())
        if count > 0 and route != "/metrics"
    }
    total_requests = sum(c for r, c in requests_by_route.items() if r != "/metrics")
    total_queries = sum(q for r, q in queries_by_route.items() if r != "/metrics")
    return {
        "scope": scope,
        "requests": {k: int(v) for k, v in sorted(requests_by_route.items())},
        "db_queries_per_request": per_request,
        "db_queries_per_request_overall": (
            round(total_queries / total_requests, 3) if total_requests else None
        ),
        "db_queries_counted": bool(queries_by_route) or None,
        "cache": caches,
    }
