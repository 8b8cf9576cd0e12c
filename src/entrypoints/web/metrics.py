"""A small Prometheus registry: labelled counters and histograms, and scrape-time collectors.

No client library: the text exposition format (version 0.0.4) is a few lines per metric, and
the counters scalecore already keeps (cache stats, loader stats, bus stats) are read when
``/metrics`` is scraped rather than copied on every event.

Every metric is thread-safe. In a web server with several worker processes (gunicorn), each
process has its own registry and a scrape sees the process that answered; run one metrics
scrape target per process, or aggregate in Prometheus.
"""

from __future__ import annotations

import abc
import bisect
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_BUCKETS",
    "Counter",
    "Histogram",
    "Registry",
    "Sample",
    "cache_samples",
    "install_metrics",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Request latency buckets in seconds: 5 ms to 10 s.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

_log = logging.getLogger(__name__)

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

#: One line of output from a collector: metric name, labels, value.
Sample = tuple[str, Mapping[str, str], float]


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


def _format_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class _Metric(abc.ABC):
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(f"bad metric name {name!r}")
        for label in labels:
            if not _LABEL.fullmatch(label) or label.startswith("__") or label == "le":
                raise ValueError(f"bad label name {label!r}")
        self.name = name
        self.help = help_text
        self.labels = tuple(labels)
        self._lock = threading.Lock()

    def _key(self, labels: Mapping[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {tuple(labels)}")
        return tuple(str(labels[name]) for name in self.labels)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape(self.help)}", f"# TYPE {self.name} {self.kind}"]

    @abc.abstractmethod
    def render(self) -> list[str]:
        """The metric's sample lines in the Prometheus text format."""


class Counter(_Metric):
    """A value per label set that only grows."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` (>= 0) to the series named by ``labels``."""
        if amount < 0:
            raise ValueError("a counter never decreases")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        """The current value of one series (0 if never incremented)."""
        key = self._key(labels)
        with self._lock:
            return self._values.get(key, 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        lines = self.header()
        for key, value in items:
            lines.append(f"{self.name}{_format_labels(self.labels, key)} {_format_value(value)}")
        return lines


class Histogram(_Metric):
    """Observations counted into cumulative buckets, with their count and sum, per label set."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labels)
        bounds = sorted(float(b) for b in buckets)
        if not bounds or any(math.isnan(b) for b in bounds):
            raise ValueError("a histogram needs at least one numeric bucket")
        if bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.buckets = tuple(bounds)
        # Per series: a count per bucket (not cumulative), the sum and the count.
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        """Record one observation in the series named by ``labels``."""
        key = self._key(labels)
        index = bisect.bisect_left(self.buckets, value)
        with self._lock:
            counts, total = self._series.setdefault(key, ([0] * len(self.buckets), [0.0]))
            counts[index] += 1
            total[0] += value

    def count(self, **labels: str) -> int:
        """How many observations one series holds."""
        key = self._key(labels)
        with self._lock:
            series = self._series.get(key)
            return sum(series[0]) if series else 0

    def render(self) -> list[str]:
        with self._lock:
            items = sorted((key, (list(c), t[0])) for key, (c, t) in self._series.items())
        lines = self.header()
        names = (*self.labels, "le")
        for key, (counts, total) in items:
            running = 0
            for bound, count in zip(self.buckets, counts, strict=True):
                running += count
                labels = _format_labels(names, (*key, _format_value(bound)))
                lines.append(f"{self.name}_bucket{labels} {running}")
            plain = _format_labels(self.labels, key)
            lines.append(f"{self.name}_sum{plain} {_format_value(total)}")
            lines.append(f"{self.name}_count{plain} {running}")
        return lines


class _Collected:
    """A metric whose samples come from a callback at scrape time (counters kept elsewhere)."""

    def __init__(
        self, name: str, kind: str, help_text: str, collect: Callable[[], Iterable[Sample]]
    ) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(f"bad metric name {name!r}")
        self.name = name
        self.kind = kind
        self.help = help_text
        self.collect = collect

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {_escape(self.help)}", f"# TYPE {self.name} {self.kind}"]
        samples = sorted(
            (name, tuple(sorted(labels.items())), value) for name, labels, value in self.collect()
        )
        for name, labels, value in samples:
            names = [k for k, _ in labels]
            values = [v for _, v in labels]
            lines.append(f"{name}{_format_labels(names, values)} {_format_value(value)}")
        return lines


class Registry:
    """The metrics of one process, rendered together in registration order."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric | _Collected] = {}
        self._lock = threading.Lock()

    def _add(self, metric: _Metric | _Collected) -> None:
        with self._lock:
            if metric.name in self._metrics:
                raise ValueError(f"metric {metric.name!r} is registered already")
            self._metrics[metric.name] = metric

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        """Register and return a counter."""
        metric = Counter(name, help_text, labels)
        self._add(metric)
        return metric

    def histogram(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        """Register and return a histogram."""
        metric = Histogram(name, help_text, labels, buckets)
        self._add(metric)
        return metric

    def collector(
        self,
        name: str,
        kind: str,
        help_text: str,
        collect: Callable[[], Iterable[Sample]],
    ) -> None:
        """Register ``collect``, called at every scrape for the samples of metric ``name``.

        ``kind`` is ``counter`` or ``gauge``. A collector that raises is skipped for that
        scrape (its metric shows no samples) so one broken source never hides the others.
        """
        if kind not in ("counter", "gauge"):
            raise ValueError(f"kind must be counter or gauge, not {kind!r}")
        self._add(_Collected(name, kind, help_text, collect))

    def render(self) -> str:
        """Every metric in the Prometheus text format, ending with a newline."""
        with self._lock:
            metrics = list(self._metrics.values())
        lines: list[str] = []
        for metric in metrics:
            try:
                lines.extend(metric.render())
            except Exception:  # a failing source must not break the whole scrape
                _log.warning("metrics: collecting %s failed", metric.name, exc_info=True)
                lines.extend(_failed(metric))
        return "\n".join(lines) + "\n"


def _failed(metric: _Metric | _Collected) -> list[str]:
    return [f"# HELP {metric.name} {_escape(metric.help)}", f"# TYPE {metric.name} {metric.kind}"]


# --------------------------------------------------------------------------- the web app


def cache_samples(stats_by_cache: Mapping[str, object]) -> list[Sample]:
    """Samples of ``scalecore_cache_requests_total`` from CacheStats-like objects by name."""
    samples: list[Sample] = []
    for cache, stats in stats_by_cache.items():
        snapshot = _snapshot(stats)
        for result, field in (("hit", "hits"), ("miss", "misses"), ("stale", "stale")):
            samples.append(
                (
                    "scalecore_cache_requests_total",
                    {"cache": cache, "result": result},
                    float(snapshot.get(field, 0)),
                )
            )
    return samples


def _snapshot(stats: object) -> Mapping[str, int]:
    snapshot = getattr(stats, "snapshot", None)
    if callable(snapshot):
        value = snapshot()
        if isinstance(value, Mapping):
            return value
    return {}


def install_metrics(
    app: Any,
    registry: Registry,
    *,
    caches: Callable[[], Mapping[str, object]],
    bus_stats: Callable[[], object | None],
) -> None:
    """Count every request of ``app``, expose ``registry`` at ``/metrics``, and read the
    cache and bus counters at scrape time.

    ``caches`` returns the CacheStats-like objects (``snapshot() -> dict``) by cache name:
    cache adapters and CachedLoaders; ``bus_stats`` the bus's BusStats, or ``None``.
    """
    from flask import Response, g, request

    requests_total = registry.counter(
        "scalecore_http_requests_total",
        "HTTP requests answered, by method, route and status.",
        ("method", "endpoint", "status"),
    )
    latency = registry.histogram(
        "scalecore_http_request_duration_seconds",
        "Time to answer an HTTP request (until the response starts), by method and route.",
        ("method", "endpoint"),
    )

    def collect_cache_requests() -> list[Sample]:
        return cache_samples(caches())

    def collect_cache_loads() -> list[Sample]:
        return [
            ("scalecore_cache_loads_total", {"cache": name}, float(_snapshot(s).get("loads", 0)))
            for name, s in caches().items()
        ]

    def collect_cache_errors() -> list[Sample]:
        return [
            ("scalecore_cache_errors_total", {"cache": name}, float(_snapshot(s).get("errors", 0)))
            for name, s in caches().items()
        ]

    def collect_published() -> list[Sample]:
        stats = bus_stats()
        if stats is None:
            return []
        snapshot = stats.snapshot()  # type: ignore[attr-defined]
        return [
            ("scalecore_bus_published_total", {"topic": topic}, float(count))
            for topic, count in snapshot.published.items()
        ]

    def collect_handled() -> list[Sample]:
        stats = bus_stats()
        if stats is None:
            return []
        snapshot = stats.snapshot()  # type: ignore[attr-defined]
        return [
            (
                "scalecore_bus_handled_total",
                {"topic": topic, "group": group, "outcome": outcome},
                float(count),
            )
            for (topic, group, outcome), count in snapshot.handled.items()
        ]

    registry.collector(
        "scalecore_cache_requests_total",
        "counter",
        "Cache reads by result: hit (fresh), miss, or stale (served while refreshing).",
        collect_cache_requests,
    )
    registry.collector(
        "scalecore_cache_loads_total",
        "counter",
        "Loader calls made to fill a cache entry.",
        collect_cache_loads,
    )
    registry.collector(
        "scalecore_cache_errors_total",
        "counter",
        "Cache backend failures and coordination errors (each one degraded to a miss).",
        collect_cache_errors,
    )
    registry.collector(
        "scalecore_bus_published_total",
        "counter",
        "Messages published, by topic.",
        collect_published,
    )
    registry.collector(
        "scalecore_bus_handled_total",
        "counter",
        "Deliveries by topic, consumer group and outcome (ok, retry, dead).",
        collect_handled,
    )

    def start_timer() -> None:
        g.sc_started = time.perf_counter()

    def record(response: Any) -> Any:
        started = g.get("sc_started")
        rule = request.url_rule
        endpoint = rule.rule if rule is not None else "unmatched"
        # Methods come from the client: bound the label to the standard set.
        method = request.method if request.method in _METHODS else "other"
        requests_total.inc(method=method, endpoint=endpoint, status=str(response.status_code))
        if started is not None:
            latency.observe(time.perf_counter() - started, method=method, endpoint=endpoint)
        return response

    def metrics_view() -> Any:
        response = Response(registry.render(), mimetype="text/plain")
        response.headers["Content-Type"] = CONTENT_TYPE
        response.headers["Cache-Control"] = "no-store"
        return response

    # The timer must run before anything else may fail, so it goes first.
    app.before_request_funcs.setdefault(None, []).insert(0, start_timer)
    app.after_request(record)
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
