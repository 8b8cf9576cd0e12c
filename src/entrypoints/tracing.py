"""OpenTelemetry traces across web -> bus -> worker (optional extra ``tracing``).

``[tracing]`` in the config::

    [tracing]
    exporter = "none"           # "none" (off), "otlp" (OTLP over HTTP) or "console"
    endpoint = ""               # for "otlp": e.g. "http://127.0.0.1:4318/v1/traces"
                                # ("" = the exporter's default / OTEL_EXPORTER_OTLP_* env)
    service_name = "scalecore"  # the ``service.name`` of every span

With an exporter, every web request is a SERVER span (continuing the caller's trace when
it sends ``traceparent``), every bus message carries the W3C trace context in its headers
(through :mod:`scalecore.propagation`), and the worker handles it inside a CONSUMER span
of the same trace: an upload and its fan-out are one trace. Spans leave in batches from a
background thread; a process flushes them when it stops. Off (the default), nothing of
OpenTelemetry is imported.

The tracer provider is this module's own, not OpenTelemetry's global one, so a library
that traces through the global API is not affected, and tests can configure it again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from entrypoints.config import TRACING_DEFAULTS
from scalecore import propagation
from scalecore.errors import ConfigError
from scalecore.ports.bus import Message

__all__ = ["configure_tracing", "install_web_tracing", "shutdown_tracing"]

_log = logging.getLogger(__name__)

#: The process's tracing, once configured: (provider, tracer, bus propagator).
_state: dict[str, Any] = {}


def configure_tracing(
    section: Mapping[str, Any] | None, *, role: str, exporter: Any = None
) -> bool:
    """Start tracing this process as ``[tracing]`` says; return whether it is on.

    ``role`` (web, worker, scheduler, run) becomes the ``service.instance.role`` resource
    attribute. ``exporter`` replaces the configured one (tests pass an in-memory one,
    whose spans are then exported at once). Calling it again replaces the previous setup.
    Raises ``ConfigError`` when the ``tracing`` extra is missing.
    """
    options = {**TRACING_DEFAULTS, **(section or {})}
    shutdown_tracing()
    if exporter is None and options["exporter"] == "none":
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ModuleNotFoundError:
        raise ConfigError(
            "needs OpenTelemetry: install scalecore[tracing]", key="tracing.exporter"
        ) from None
    resource = Resource.create(
        {"service.name": options["service_name"], "service.instance.role": role}
    )
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        provider.add_span_processor(BatchSpanProcessor(_exporter(options)))
    tracer = provider.get_tracer("scalecore")
    bus = _BusPropagator(tracer, TraceContextTextMapPropagator())
    propagation.install(bus)
    _state.update(provider=provider, tracer=tracer, bus=bus, format=bus.format)
    return True


def _exporter(options: Mapping[str, Any]) -> Any:
    if options["exporter"] == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ModuleNotFoundError:
        raise ConfigError(
            "the otlp exporter needs scalecore[tracing]", key="tracing.exporter"
        ) from None
    # A bounded timeout: a collector that is down must not hold a stopping process long.
    return OTLPSpanExporter(endpoint=options["endpoint"] or None, timeout=5.0)


def shutdown_tracing() -> None:
    """Flush the spans not yet exported and stop tracing this process. Idempotent."""
    bus = _state.pop("bus", None)
    if bus is not None:
        propagation.uninstall(bus)
    provider = _state.pop("provider", None)
    _state.clear()
    if provider is not None:
        try:
            provider.shutdown()
        except Exception:  # a collector that is down must not fail a stop
            _log.warning("tracing: flushing the last spans failed", exc_info=True)


class _BusPropagator:
    """The W3C trace context into message headers, and a CONSUMER span around a handler."""

    def __init__(self, tracer: Any, text_format: Any) -> None:
        self.tracer = tracer
        self.format = text_format

    def inject(self, headers: MutableMapping[str, str]) -> None:
        carrier: dict[str, str] = {}
        self.format.inject(carrier)
        for name, value in carrier.items():
            headers.setdefault(name, value)

    def handling(self, message: Message) -> contextlib.AbstractContextManager[object]:
        from opentelemetry.trace import SpanKind

        return self.tracer.start_as_current_span(  # type: ignore[no-any-return]
            f"{message.topic} process",
            context=self.format.extract(dict(message.headers)),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "scalecore",
                "messaging.destination.name": message.topic,
                "messaging.message.id": message.id,
                "messaging.operation.type": "process",
            },
        )


def install_web_tracing(app: Any) -> None:
    """Make every request of ``app`` a SERVER span, if tracing is on in this process."""
    tracer = _state.get("tracer")
    text_format = _state.get("format")
    if tracer is None or text_format is None:
        return
    from flask import g, request
    from opentelemetry import context, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    def begin() -> None:
        # The W3C propagator looks header names up in lower case.
        parent = text_format.extract({k.lower(): v for k, v in request.headers.items()})
        span = tracer.start_span(
            request.method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "url.path": request.path},
        )
        g.sc_span = span
        g.sc_span_token = context.attach(trace.set_span_in_context(span, parent))

    def finish(response: Any) -> Any:
        span = g.get("sc_span")
        if span is not None:
            rule = request.url_rule
            route = rule.rule if rule is not None else "unmatched"
            span.update_name(f"{request.method} {route}")
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_status(Status(StatusCode.ERROR))
        return response

    def end(_exc: BaseException | None) -> None:
        token = g.pop("sc_span_token", None)
        span = g.pop("sc_span", None)
        if span is not None:
            span.end()
        if token is not None:
            context.detach(token)

    app.before_request_funcs.setdefault(None, []).insert(0, begin)
    app.after_request(finish)
    app.teardown_request(end)


@contextlib.contextmanager
def traced(section: Mapping[str, Any] | None, role: str) -> Iterator[None]:
    """Tracing on for the block (as ``section`` says), flushed at its end."""
    configure_tracing(section, role=role)
    try:
        yield
    finally:
        shutdown_tracing()
