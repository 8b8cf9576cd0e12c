"""Operating a fleet: one scrape shows every gunicorn worker, two web instances on a host
keep apart, SIGHUP restarts the workers without a failed request, and a request id
travels from the upload through the bus into the worker's JSON log lines."""

from __future__ import annotations

import http.client
import json
import re
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import (
    Client,
    Deployment,
    free_port,
    init_distributed,
    multipart,
    png_bytes,
    poll,
    spawn_part,
    start_web,
)

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

_SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1) != name:
            continue
        found = dict(_LABEL.findall(match.group(2) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match.group(3))
    return total


def scrape(base_url: str) -> str:
    reply = Client(base_url).get("/metrics")
    assert reply.status == 200, reply
    return reply.body.decode()


def json_lines(log: Path) -> list[dict[str, Any]]:
    """The JSON log lines of ``log`` (every line must be one, but for plain echo lines)."""
    lines = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def fleet_env(tmp_path: Path) -> dict[str, str]:
    """The distributed deployment with JSON logs and a bus exchange of this test's own, so
    another run's workers on the same broker never take its messages."""
    env = init_distributed(tmp_path)
    env["SCALECORE_LOGGING__FORMAT"] = "json"
    env["SCALECORE_BUS__EXCHANGE"] = f"fleet-{uuid.uuid4().hex[:12]}"
    return env


def hit(base_url: str, path: str, count: int, request_id: str | None = None) -> None:
    client = Client(base_url)
    headers = {"X-Request-ID": request_id} if request_id else None
    for _ in range(count):
        assert client.get(path, headers=headers).status == 200


def test_two_web_instances_each_count_all_their_workers_and_keep_apart(tmp_path: Path) -> None:
    env = fleet_env(tmp_path)
    first = start_web(tmp_path, env, "web-a", workers=3)
    second = start_web(tmp_path, env, "web-b", workers=2)
    try:
        hit(first.base_url, "/api/openapi.json", 90)
        hit(second.base_url, "/api/openapi.json", 25)

        first_text, second_text = scrape(first.base_url), scrape(second.base_url)
        # Every request of the instance, whichever worker served it (its access lines say
        # which), and none of the other instance's.
        for deployment, text, sent in ((first, first_text, 90), (second, second_text, 25)):
            counted = metric(
                text, "scalecore_http_requests_total", endpoint="/api/openapi.json", status="200"
            )
            served = [
                line
                for line in json_lines(deployment.logs[0])
                if line.get("logger") == "scalecore.access"
                and line.get("path") == "/api/openapi.json"
            ]
            assert counted == sent
            assert len(served) == sent, deployment.output()
        served_by = {
            line["pid"]
            for line in json_lines(first.logs[0])
            if line.get("logger") == "scalecore.access"
        }
        assert len(served_by) >= 2, "the kernel gave every request to one worker"

        # Each instance has its own runtime directory and control socket.
        sockets = [
            re.findall(r"Control socket listening at (\S+)", d.output()) for d in (first, second)
        ]
        assert sockets[0]
        assert sockets[1]
        assert set(sockets[0]).isdisjoint(sockets[1])
        roots = [
            re.findall(r"runtime files \(.*\) in (\S+)", d.output())[0] for d in (first, second)
        ]
        assert roots[0] != roots[1]
        assert all(Path(root).is_dir() for root in roots)
    finally:
        codes = first.stop() + second.stop()
    assert codes == [0, 0], first.output() + second.output()
    assert not any(Path(root).exists() for root in roots)  # removed at exit


class SteadyLoad:
    """``threads`` clients sending GETs back to back, bounded in count and time."""

    def __init__(self, base_url: str, *, threads: int = 2, limit: int = 3000) -> None:
        self.base_url = base_url
        self.limit = limit
        self.sent = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self) -> None:
        client = Client(self.base_url)
        deadline = time.monotonic() + 90
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if self.sent >= self.limit:
                    return
                self.sent += 1
            try:
                reply = client.get("/api/users/nobody-here")
                if reply.status != 404:
                    self.failures.append(f"status {reply.status}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
            time.sleep(0.005)


def booted_workers(deployment: Deployment) -> int:
    return len(re.findall(r"Booting worker with pid", deployment.output()))


def test_sighup_replaces_every_worker_three_times_without_a_failed_request(
    tmp_path: Path,
) -> None:
    env = fleet_env(tmp_path)
    # The config is a file of the test's own, changed between the reloads.
    config = tmp_path / "fleet.toml"
    original = Path(env["SCALECORE_CONFIG"]).read_text()
    config.write_text(original + '\n[logging]\nformat = "json"\n')
    env["SCALECORE_CONFIG"] = str(config)
    del env["SCALECORE_LOGGING__FORMAT"]
    web = start_web(tmp_path, env, "web", workers=3)
    master = web.processes[0]
    configs = [
        '\n[logging]\nformat = "xml"\n',  # invalid: the workers keep the previous config
        '\n[logging]\nformat = "text"\n',  # valid: the new workers log text lines
        '\n[logging]\nformat = "json"\n',
    ]
    try:
        poll(lambda: booted_workers(web) >= 3, timeout=30)
        with SteadyLoad(web.base_url) as load:
            time.sleep(1.0)
            for reload, logging_section in enumerate(configs, start=1):
                config.write_text(original + logging_section)
                master.send_signal(signal.SIGHUP)
                deadline = time.monotonic() + 30
                while booted_workers(web) < 3 * (reload + 1):
                    assert time.monotonic() < deadline, web.output()
                    time.sleep(0.2)
                time.sleep(2.0)  # the new workers serve a while under the load
        assert load.failures == [], load.failures[:5]
        assert load.sent >= 200, "the load was too light to mean anything"
        assert load.sent < load.limit, "the load ran out before the reloads finished"
        # Counters of the replaced workers stay in the sum: the total never goes back.
        counted = metric(
            scrape(web.base_url),
            "scalecore_http_requests_total",
            endpoint="/api/users/<username>",
            status="404",
        )
        assert counted == load.sent
        assert master.poll() is None
        output = web.output()
        assert "config reload failed" in output
        assert "logging.format" in output
        # The second reload's workers wrote text access lines, the others JSON.
        assert re.search(r" INFO scalecore\.access \[\w+\]: GET /api/users/nobody-here 404", output)
        assert '"logger": "scalecore.access"' in output.split("config reload failed")[0]
    finally:
        codes = web.stop()
    assert codes == [0], web.output()


def test_a_worker_logs_and_counts_the_fan_out_under_the_uploads_request_id(
    tmp_path: Path,
) -> None:
    env = fleet_env(tmp_path)
    web = start_web(tmp_path, env, "web", workers=1)
    metrics_port = free_port()
    worker, log = spawn_part(
        tmp_path, env, "worker", "worker", "--metrics-bind", f"127.0.0.1:{metrics_port}"
    )
    web.processes.append(worker)
    web.logs.append(log)
    worker_url = f"http://127.0.0.1:{metrics_port}"
    try:
        poll(lambda: "metrics: http://" in log.read_text(errors="replace"), timeout=30)
        suffix = uuid.uuid4().hex[:10]
        owner, follower = Client(web.base_url), Client(web.base_url)
        for client, name in ((owner, f"own_{suffix}"), (follower, f"fol_{suffix}")):
            assert client.sign_up(name).status == 201
            assert client.log_in(name).status == 200
        assert follower.request("PUT", f"/api/following/own_{suffix}").status in (200, 204)

        request_id = f"upload-{suffix}"
        body, ctype = multipart(
            {"caption": "fan me out"}, {"photo": ("p.png", "image/png", png_bytes(64, 48))}
        )
        reply = owner.request(
            "POST",
            "/api/photos",
            body=body,
            headers={"Content-Type": ctype, "X-Request-ID": request_id},
        )
        assert reply.status == 201, reply
        assert reply.headers["X-Request-ID"] == request_id
        photo_id = reply.json()["id"]

        def fanned_out() -> list[dict[str, Any]]:
            return [
                line
                for line in json_lines(log)
                if line.get("logger") == "scalecore.photofeed.workers"
                and photo_id in str(line.get("message"))
            ]

        [line] = poll(fanned_out, timeout=30)
        assert line["request_id"] == request_id
        assert line["level"] == "INFO"
        # The web's own lines of that request carry it too.
        access = [
            entry
            for entry in json_lines(web.logs[0])
            if entry.get("logger") == "scalecore.access" and entry.get("path") == "/api/photos"
        ]
        assert [entry["request_id"] for entry in access] == [request_id]

        text = scrape(worker_url)
        assert metric(text, "scalecore_feed_events_applied_total", topic="photo.uploaded") == 1
        assert metric(text, "scalecore_feed_entries_written_total") >= 1
        assert (
            metric(
                text,
                "scalecore_bus_handled_total",
                topic="photo.uploaded",
                group="feed-fanout",
                outcome="ok",
            )
            == 1
        )
        assert metric(text, "scalecore_bus_queued_messages", topic="photo.uploaded") == 0
        assert metric(text, "scalecore_bus_dead_letters", topic="photo.uploaded") == 0
        assert "scalecore_outbox_pending_events" in text
        assert "scalecore_outbox_oldest_pending_age_seconds" in text
        # The web's scrape shows the publish.
        assert (
            metric(scrape(web.base_url), "scalecore_bus_published_total", topic="photo.uploaded")
            == 1
        )
    finally:
        codes = web.stop()
    assert codes == [0, 0], web.output()
