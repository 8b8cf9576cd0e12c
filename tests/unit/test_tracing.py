"""OpenTelemetry: a web request and the fan-out it causes are one trace."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from test_web_support import Web, png_bytes

from entrypoints.photofeed.config import load_settings
from entrypoints.tracing import configure_tracing, shutdown_tracing
from scalecore.errors import ConfigError

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert configure_tracing({"service_name": "feed-test"}, role="web", exporter=exporter)
    yield exporter
    shutdown_tracing()


def test_an_upload_and_its_fan_out_are_one_trace(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    web = Web(tmp_path)  # built after tracing is on: its requests are spans
    owner, owner_token = web.user("ada")
    follower, follower_token = web.user("bob")
    follower.put("/api/following/ada", headers={"X-CSRF-Token": follower_token})
    spans.clear()

    response = owner.post(
        "/api/photos",
        data={"photo": (io.BytesIO(png_bytes(32, 32)), "p.png"), "caption": ""},
        headers={
            "X-CSRF-Token": owner_token,
            "traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01",
        },
    )
    assert response.status_code == 201
    finished = spans.get_finished_spans()
    [server] = [span for span in finished if span.kind is SpanKind.SERVER]
    [consumer] = [span for span in finished if span.kind is SpanKind.CONSUMER]
    assert server.name == "POST /api/photos"
    assert server.attributes["http.response.status_code"] == 201
    assert server.resource.attributes["service.name"] == "feed-test"
    # The caller's trace continues through the web request into the worker's handler.
    assert f"{server.context.trace_id:032x}" == TRACE_ID
    assert f"{server.parent.span_id:016x}" == CALLER_SPAN
    assert consumer.name == "photo.uploaded process"
    assert consumer.context.trace_id == server.context.trace_id
    assert consumer.parent.span_id == server.context.span_id
    assert consumer.attributes["messaging.destination.name"] == "photo.uploaded"


def test_off_by_default_and_validated(tmp_path: Path) -> None:
    assert configure_tracing(None, role="web") is False
    assert load_settings(None).tracing["exporter"] == "none"
    config = tmp_path / "scalecore.toml"
    for body, key in (
        ('[tracing]\nexporter = "jaeger"\n', "tracing.exporter"),
        ('[tracing]\nendpoint = "collector:4318"\n', "tracing.endpoint"),
        ('[tracing]\nservice_name = ""\n', "tracing.service_name"),
        ("[tracing]\nsample = 1\n", "tracing.sample"),
    ):
        config.write_text(body)
        with pytest.raises(ConfigError) as info:
            load_settings(str(config))
        assert key in str(info.value)


class _Broken:
    def inject(self, headers: object) -> None:
        raise RuntimeError("no context today")

    def handling(self, message: object) -> object:
        raise RuntimeError("no context today")


def test_a_failing_propagator_never_costs_a_message() -> None:
    from adapters.bus.inprocess import InProcessBus
    from scalecore import propagation, requestid

    broken = _Broken()
    propagation.install(broken)
    try:
        bus = InProcessBus(mode="sync")
        seen: list[str | None] = []
        bus.subscribe("t.x", "g", lambda _message: seen.append(requestid.current()))
        bus.start()
        with requestid.bind("req-99999999"):
            sent = bus.publish("t.x", {"n": 1})
        assert sent.headers == {"x-request-id": "req-99999999"}
        assert seen == ["req-99999999"]
    finally:
        propagation.uninstall(broken)
