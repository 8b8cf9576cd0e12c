"""The load test's pure parts: the population, the /metrics reader, the report, the CLI's
argument checks. (The whole command runs in tests/e2e/test_loadtest.py.) Nothing here
imports locust, which would patch this process for gevent."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from entrypoints.cli import main
from entrypoints.loadtest.charts import line_chart
from entrypoints.loadtest.graph import HOT_VIEWS, build_graph, pick_profile
from entrypoints.loadtest.report import percentile, summarise_requests, timeline, write_report
from entrypoints.loadtest.scrape import parse, summarise
from entrypoints.loadtest.target import check_target
from scalecore.errors import ConfigError

# --------------------------------------------------------------------------- population


def test_the_follow_graph_is_pareto_skewed_and_well_formed() -> None:
    graph = build_graph(500, 20, random.Random(3))
    assert graph.size == 500
    assert graph.edges == 500 * 20
    for account, followees in enumerate(graph.following):
        assert len(followees) == len(set(followees)) == 20
        assert account not in followees
    assert sum(graph.followers) == graph.edges
    assert list(graph.by_followers) == sorted(range(500), key=lambda i: (-graph.followers[i], i))
    hot_share = sum(graph.followers[i] for i in graph.hot()) / graph.edges
    assert hot_share > 0.5  # uniform follows would give 0.2
    assert graph.followers[graph.by_followers[0]] > 10 * (graph.edges / 500)
    assert graph.above(100) >= 1


def test_the_same_seed_gives_the_same_graph() -> None:
    assert build_graph(100, 10, random.Random(9)) == build_graph(100, 10, random.Random(9))


def test_small_graphs_follow_everyone_they_can() -> None:
    graph = build_graph(3, 20, random.Random(1))
    assert [len(f) for f in graph.following] == [2, 2, 2]
    with pytest.raises(ValueError, match="at least 2"):
        build_graph(1, 1, random.Random(1))


def test_profile_views_go_80_percent_to_the_top_20_percent() -> None:
    graph = build_graph(200, 10, random.Random(5))
    rng = random.Random(11)
    hot = set(graph.hot())
    picks = [pick_profile(graph, rng) for _ in range(20_000)]
    share = sum(1 for p in picks if p in hot) / len(picks)
    assert abs(share - HOT_VIEWS) < 0.02
    assert len(set(picks)) > 150  # the cold accounts are viewed too


# --------------------------------------------------------------------------- /metrics


HAND_WRITTEN = """# HELP scalecore_http_requests_total HTTP requests answered.
# TYPE scalecore_http_requests_total counter
scalecore_http_requests_total{endpoint="/api/feed",method="GET",status="200"} 10
scalecore_http_requests_total{endpoint="/api/users/<username>",method="GET",status="200"} 4
scalecore_http_requests_total{endpoint="/metrics",method="GET",status="200"} 1
scalecore_http_db_queries_total{endpoint="/api/feed"} 30
scalecore_http_db_queries_total{endpoint="/api/users/<username>"} 2
scalecore_cache_requests_total{cache="photofeed.profiles",result="hit"} 3
scalecore_cache_requests_total{cache="photofeed.profiles",result="miss"} 1
scalecore_cache_requests_total{cache="photofeed.profiles",result="stale"} 0
"""

# prometheus_client's style: floats, _created series, a timestamp, odd spacing in labels.
CLIENT_STYLE = """# HELP scalecore_http_requests_total HTTP requests answered.
# TYPE scalecore_http_requests_total counter
scalecore_http_requests_total{endpoint="/api/feed",method="GET",status="200"} 30.0
scalecore_http_requests_created{endpoint="/api/feed",method="GET",status="200"} 1.7e+09
scalecore_http_requests_total{endpoint="/api/users/<username>",method="GET",status="200"} 8.0
scalecore_http_db_queries_total{endpoint="/api/feed"} 50.0 1700000000000
scalecore_http_db_queries_total{endpoint="/api/users/<username>"} 2.0
scalecore_cache_requests_total{cache="photofeed.profiles",result="hit"} 7.0
scalecore_cache_requests_total{cache="photofeed.profiles",result="miss"} 1.0
not a sample line
"""


def test_metrics_are_summarised_over_the_run() -> None:
    summary = summarise(parse(HAND_WRITTEN), parse(CLIENT_STYLE))
    assert summary["scope"] == "run"
    assert summary["requests"]["/api/feed"] == 20
    assert summary["db_queries_per_request"] == {
        "/api/feed": 1.0,  # (50 - 30) / (30 - 10)
        "/api/users/<username>": 0.0,  # warm: no new query for 4 more reads
    }
    assert summary["cache"]["photofeed.profiles"]["hit_rate"] == 1.0  # 4 hits, 0 misses


def test_scrapes_of_different_processes_fall_back_to_one_process_totals() -> None:
    summary = summarise(parse(CLIENT_STYLE), parse(HAND_WRITTEN))
    assert summary["scope"] == "one process, cumulative"
    assert summary["db_queries_per_request"]["/api/feed"] == 3.0
    assert summary["cache"]["photofeed.profiles"]["hit_rate"] == 0.75
    assert summarise(None, None) == {"scope": "unavailable"}


# --------------------------------------------------------------------------- report


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([], 0.5) == 0


def test_requests_are_summarised_per_endpoint_and_over_time() -> None:
    rows = [(0.1 * i, "GET /a", float(i), i % 10 != 0) for i in range(100)]
    rows += [(5.0 + 0.5 * i, "GET /b", 100.0, True) for i in range(10)]
    endpoints = {e["name"]: e for e in summarise_requests(rows, 10.0)}
    assert endpoints["GET /a"]["requests"] == 100
    assert endpoints["GET /a"]["failures"] == 10
    assert endpoints["GET /a"]["rps"] == 10.0
    assert endpoints["GET /a"]["p99_ms"] == 98.0
    assert endpoints["all requests"]["requests"] == 110
    points = timeline(rows, 10.0, 2.0)
    assert [p["t"] for p in points] == [2.0, 4.0, 6.0, 8.0, 10.0]
    assert points[0]["rps"] == 10.0
    assert points[0]["errors_per_s"] == 1.0
    assert "GET /b" not in points[0]["endpoints"]
    assert points[3]["endpoints"]["GET /b"]["p50_ms"] == 100.0


def _report() -> dict[str, object]:
    rows = [(0.2 * i, "GET /api/feed", 5.0 + i % 7, True) for i in range(50)]
    return {
        "parameters": {"target": "http://127.0.0.1:1", "users": 3, "spawn_rate": 1.0,
                       "think_time": 0.0},
        "started_at": "2026-01-01T00:00:00+00:00",
        "duration_s": 10.0,
        "population": {"accounts": 5},
        "endpoints": summarise_requests(rows, 10.0),
        "timeline": timeline(rows, 10.0, 1.0),
        "users_over_time": [[0.0, 1], [5.0, 3]],
        "fanout_lag": {"samples": 0, "p50_s": 0.0, "p99_s": 0.0, "max_s": 0.0, "timed_out": 0,
                       "skipped": 0},
        "target_metrics": summarise(parse(HAND_WRITTEN), parse(CLIENT_STYLE)),
        "failures": [{"name": "GET /x", "error": "<b>boom</b>", "occurrences": 2}],
    }  # fmt: skip


def test_the_report_is_written_whole_and_self_contained(tmp_path: Path) -> None:
    page = write_report(tmp_path / "r", _report())
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        "endpoints.csv", "failures.csv", "index.html", "report.json", "timeline.csv",
    ]  # fmt: skip
    html = page.read_text()
    assert html.count("<svg") == 4  # req/s, errors+users, latency of all and of the one route
    for external in ("<script", "<link", "<img", "src=", "href=", "url(", "@import"):
        assert external not in html  # nothing to fetch: renders offline
    assert "&lt;b&gt;boom&lt;/b&gt;" in html
    assert json.loads((tmp_path / "r" / "report.json").read_text())["duration_s"] == 10.0
    csv_lines = (tmp_path / "r" / "endpoints.csv").read_text().splitlines()
    assert csv_lines[0].startswith("name,requests,failures,rps")
    assert csv_lines[-1].startswith("all requests,50,0,5.0,")


def test_charts_scale_to_their_data() -> None:
    svg = line_chart({"a": [(0, 0), (10, 50)], "b": []}, title="t <1>", y_label="ms")
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")
    assert "t &lt;1&gt;" in svg
    assert ">50<" in svg
    assert "polyline" in svg


# --------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("http://10.0.0.1:8000", "not a loopback address"),
        ("http://example.com", "not a loopback address"),
        ("ftp://127.0.0.1", "must be an http"),
        ("127.0.0.1:8000", "must be an http"),
    ],
)
def test_only_loopback_targets_unless_allowed(target: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_target(target)
    assert check_target("http://[::1]:8000/") == "http://[::1]:8000"
    assert check_target("http://localhost:1") == "http://localhost:1"
    assert check_target("http://10.0.0.1:8000", allow_remote=True) == "http://10.0.0.1:8000"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "http://example.com"], "not a loopback address"),
        (["--target", "http://127.0.0.1:1", "--duration", "2x"], "must look like 60s"),
        (["--target", "http://127.0.0.1:1", "--duration", "2h"], "at most 3600s"),
        (["--target", "http://127.0.0.1:1", "--users", "0"], "--users"),
    ],
)
def test_loadtest_refuses_bad_arguments_in_one_line(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = CliRunner().invoke(main, ["loadtest", *args, "--report", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert result.output.startswith("error: ")
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
    assert "locust" not in sys.modules  # refused before the load generator was imported


# --------------------------------------------------------------------------- capacity


def _measured(cpu_seconds: float | None = 20.0) -> dict[str, object]:
    report = _report()
    report["endpoints"] = [
        {"name": "GET /api/feed", "requests": 700, "avg_bytes": 2000.0, "rps": 70.0,
         "p99_ms": 50.0},
        {"name": "GET /api/users/<username>", "requests": 290, "avg_bytes": 8000.0,
         "rps": 29.0, "p99_ms": 60.0},
        {"name": "POST /api/photos", "requests": 10, "avg_bytes": 300.0, "rps": 1.0,
         "p99_ms": 90.0},
        {"name": "all requests", "requests": 1000, "avg_bytes": 0.0, "rps": 100.0,
         "p99_ms": 80.0},
    ]  # fmt: skip
    report["target_metrics"] = {"scope": "run", "db_queries_per_request_overall": 0.5}
    if cpu_seconds is not None:
        report["deployment"] = {"cpu_seconds": cpu_seconds}
    return report


def test_the_capacity_plan_follows_its_formulas() -> None:
    from entrypoints.loadtest.capacity import Assumptions, plan

    p = plan(_measured(), 50_000, Assumptions(think_time=10, utilisation=0.5))
    assert p["demand_rps"] == 5000  # 50,000 viewers / 10 s
    assert p["cpu_per_request_ms"] == pytest.approx(20.0)  # 20 CPU s / 1,000 requests
    assert p["web_cores"] == pytest.approx(200.0)  # 5,000 x 0.02 / 0.5
    assert p["web_processes"] == 200
    assert p["web_servers"] == 25  # 8 cores each
    assert p["uploads_s"] == pytest.approx(50.0)  # 1% of 5,000
    assert p["fanout_entries_s"] == pytest.approx(5000.0)  # x 100 followers
    assert p["worker_processes"] == 1
    assert p["queries_s"] == pytest.approx(2500.0)
    assert p["shards"] == 1
    assert p["connections_per_shard"] == 200 * 4 + 1
    # (50,000 x (300 + 2,000) + 50,000 x 4 x 0.2 x 8,000) / 0.7 bytes
    assert p["cache_mib"] == pytest.approx((50_000 * 2300 + 40_000 * 8000) / 0.7 / 2**20)
    # Without a CPU figure: the cores the site had over the measured throughput.
    fallback = plan(_measured(None), 50_000, Assumptions(site_cores=2.0))
    assert fallback["cpu_per_request_ms"] == pytest.approx(20.0)  # 2 cores / 100 req/s


def test_capacity_prints_the_plan_and_refuses_what_is_not_a_report(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "report.json").write_text(json.dumps(_measured()))
    result = CliRunner().invoke(
        main, ["capacity", "--viewers", "50000", "--report", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("# Capacity plan: 50,000 concurrent feed viewers")
    assert "| web cores | D x CPU per request / utilisation | 166.7 |" in result.output
    for stage in ("Stage 0-1", "Stage 2", "Stage 3", "Stage 4", "Stage 5"):
        assert stage in result.output
    # The two throughput figures bench.feed_postgres measures are options.
    measured = CliRunner().invoke(
        main,
        ["capacity", "--viewers", "50000", "--report", str(tmp_path / "r"),
         "--queries-per-shard-s", "1000", "--fanout-entries-per-worker-s", "2000"],
    )  # fmt: skip
    assert measured.exit_code == 0, measured.output
    assert "| PostgreSQL shards | ceil(queries/s / queries_per_shard_s) | 3 |" in measured.output
    assert "| feed worker processes | ceil(entries/s / fanout_entries_per_worker_s) | 3 |" in (
        measured.output
    )
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "report.json").write_text('{"x": 1}')
    for where, message in ((tmp_path / "none", "does not exist"), (tmp_path / "bad", "not a")):
        result = CliRunner().invoke(main, ["capacity", "--viewers", "5", "--report", str(where)])
        assert result.exit_code == 2
        assert result.output.startswith("error: ")
        assert message in result.output
