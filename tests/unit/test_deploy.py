"""deploy/ tells the truth: the units run real commands, the alert rules read metrics that
exist, and docs/operations.md explains every rule."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from entrypoints.cli import main
from entrypoints.web.metrics import Metrics, MetricSources
from scalecore.busstats import BusStats
from scalecore.cron import CronStats
from scalecore.ports.bus import QueueDepth

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OPERATIONS = ROOT / "docs" / "operations.md"


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


class _Bus:
    stats = BusStats()

    def depth(self, _topic: str, _group: str) -> QueueDepth:
        return QueueDepth(ready=0, dead=0)


class _Outbox:
    def pending_count(self) -> int:
        return 0

    def oldest_pending_at(self) -> float | None:
        return None


class _Feed:
    def counters(self) -> tuple[dict[str, int], int]:
        return {"photo.uploaded": 1}, 3


def every_metric_name() -> set[str]:
    """The sample names a process running every part exposes."""
    cron = CronStats()
    cron.record_missed("tick")
    bus = _Bus()
    bus.stats.record_published("photo.uploaded")
    bus.stats.record_handled("photo.uploaded", "feed-fanout", "ok")
    metrics = Metrics(
        MetricSources(
            caches=lambda: {"cache": _Stats()},
            bus=lambda: bus,
            queues=(("photo.uploaded", "feed-fanout"),),
            outbox=_Outbox,
            cron=lambda: cron,
            feed=_Feed,
        )
    )
    metrics.observe_request("GET", "/", 200, 0.1)
    text = metrics.render().decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}


class _Stats:
    def snapshot(self) -> dict[str, int]:
        return {"hits": 1, "misses": 1, "stale": 0, "loads": 1, "errors": 0}


def test_every_alert_is_complete_reads_real_metrics_and_is_explained() -> None:
    exposed = every_metric_name()
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    explained = OPERATIONS.read_text()
    alerts = [rule for rule in rules() if "alert" in rule]
    assert {rule["alert"] for rule in alerts} >= {
        "ScalecoreOutboxBacklog",
        "ScalecoreDeadLetters",
        "ScalecoreCacheHitRateLow",
        "ScalecoreCronMissedSlots",
    }
    for rule in rules():
        for name in re.findall(r"\b(scalecore_\w+)", rule["expr"]):
            assert name in exposed, f"{name} in {rule.get('alert') or rule.get('record')}"
        for name in re.findall(r"\b(scalecore:[\w:]+)", rule["expr"]):
            assert name in recorded, name
    for rule in alerts:
        assert rule["labels"]["severity"] in ("page", "ticket")
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]
        assert re.match(r"^\d+[smh]$", rule["for"])
        assert f"### {rule['alert']}" in explained, f"{rule['alert']} is not in operations.md"


@pytest.mark.parametrize("unit", sorted((DEPLOY / "systemd").glob("*.service")))
def test_every_unit_runs_a_real_command(unit: Path) -> None:
    [exec_start] = re.findall(r"^ExecStart=(.+)$", unit.read_text(), re.MULTILINE)
    args = shlex.split(exec_start)
    assert args[0].endswith("/scalecore")
    # Parsing the arguments with the CLI itself: a renamed option fails here.
    context = main.make_context("scalecore", [*args[1:2], "--help"], resilient_parsing=True)
    command = main.get_command(context, args[1])
    assert command is not None, args
    command.make_context(args[1], args[2:])
    scraped = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    ports = {
        target.rsplit(":", 1)[1]
        for job in scraped["scrape_configs"]
        for config in job["static_configs"]
        for target in config["targets"]
    }
    bound = [arg.rsplit(":", 1)[1] for arg in args if re.fullmatch(r"[\d.]+:\d+", arg)]
    assert bound, "the unit names no port for its metrics"
    assert set(bound) <= ports
