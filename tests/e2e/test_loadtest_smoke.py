"""A short smoke of ``scalecore loadtest`` against its own embedded deployment.

About 30 virtual users for 20 s, as a user runs the command (a subprocess: locust patches
its process for gevent). Checks that the run works and reports, never how fast it was.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from e2e_harness import ROOT, scalecore_command, start_embedded

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_short_load_test_runs_without_errors_and_writes_its_report(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    deployment = start_embedded(site)
    report_dir = tmp_path / "report"
    try:
        done = subprocess.run(
            scalecore_command(
                "loadtest", "--target", deployment.base_url, "--users", "30",
                "--spawn-rate", "15", "--duration", "20s", "--report", str(report_dir),
                "--seed-users", "30", "--follows", "6", "--photos", "10", "--think-time", "0.5",
                "--max-error-rate", "0",
            ),
            cwd=ROOT, capture_output=True, text=True, timeout=150,
        )  # fmt: skip
    finally:
        codes = deployment.stop()
    assert done.returncode == 0, done.stdout + done.stderr + deployment.output()
    assert codes == [0], deployment.output()
    assert f"report: {report_dir / 'index.html'}" in done.stdout

    report = json.loads((report_dir / "report.json").read_text())
    endpoints = {e["name"]: e for e in report["endpoints"]}
    total = endpoints["all requests"]
    assert total["requests"] > 0
    assert total["failures"] == 0
    assert report["failures"] == []
    for name in ("GET /api/feed", "GET /api/users/<username>"):
        assert endpoints[name]["requests"] > 0, name
    assert report["population"]["accounts"] == 30
    assert report["population"]["follow_edges"] == 30 * 6
    assert report["timeline"]
    # Read from the target's /metrics: one process, so the deltas are the run's.
    metrics = report["target_metrics"]
    assert metrics["scope"] == "run"
    assert metrics["requests"]["/api/feed"] >= endpoints["GET /api/feed"]["requests"]
    assert metrics["db_queries_per_request"]["/api/feed"] > 0
    assert "photofeed.profiles" in metrics["cache"]
    lag = report["fanout_lag"]
    assert (
        lag["samples"] + lag["timed_out"] + lag["skipped"]
        == endpoints.get("POST /api/photos", {"requests": 0})["requests"]
    )

    html = (report_dir / "index.html").read_text()
    assert html.count("<svg") >= 4
    for name in ("endpoints.csv", "timeline.csv", "failures.csv"):
        assert (report_dir / name).stat().st_size > 0
