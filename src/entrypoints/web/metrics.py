"""Prometheus metrics of a scalecore process, with prometheus_client.

One process (``scalecore run``, ``worker``, ``scheduler``) keeps its metrics in a private
registry and ``/metrics`` shows them. Under ``scalecore web`` the gunicorn workers run in
prometheus_client's multiprocess mode: each worker writes its samples to files in a
directory of its own ``scalecore web`` instance (``PROMETHEUS_MULTIPROC_DIR``, set by the
master before any worker imports the library), and whichever worker answers ``/metrics``
reads every worker's files, so one scrape shows the whole host. Counters of workers that
were replaced (a rolling restart) stay in the sum, so totals never go backwards.

The core counts (cache stats, bus stats, cron stats, the feed worker's counters); this
module exports. Those counters live in each process: they are copied into prometheus
counters by difference after every request and before every scrape, which works in both
modes (multiprocess mode has no scrape-time collectors). Gauges that ask a backend (queue
depths, the outbox backlog) are read at scrape time, by the process that serves ``/metrics``
for a worker or scheduler.

Metric names (every counter's samples end in ``_total``):

- ``scalecore_http_requests_total{method,endpoint,status}`` and
  ``scalecore_http_request_duration_seconds{method,endpoint}`` (histogram),
  ``scalecore_http_db_queries_total{endpoint}`` (SQL statements sent while answering);
- ``scalecore_cache_requests_total{cache,result}`` (hit, miss, stale),
  ``scalecore_cache_loads_total{cache}``, ``scalecore_cache_errors_total{cache}``;
- ``scalecore_bus_published_total{topic}``,
  ``scalecore_bus_handled_total{topic,group,outcome}`` (ok, retry, dead),
  ``scalecore_bus_queued_messages{topic,group}`` and ``scalecore_bus_dead_letters{topic,group}``
  (gauges, on a worker);
- ``scalecore_outbox_pending_events`` and ``scalecore_outbox_oldest_pending_age_seconds``
  (gauges, on a worker);
- ``scalecore_feed_events_applied_total{topic}``, ``scalecore_feed_entries_written_total``
  (on a worker);
- ``scalecore_cron_runs_total{job,outcome}``, ``scalecore_cron_missed_slots_total{job}``
  (on a scheduler);
- ``scalecore_db_queries_total{store,shard,role}``, and the gauges
  ``scalecore_db_pool_connections_in_use`` and ``scalecore_db_pool_size`` (same labels;
  summed over the live workers of a web instance);
- ``scalecore_blob_operations_total{operation,outcome}``, ``scalecore_blob_bytes_total{operation}``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import attrs

from scalecore.busstats import OUTCOMES
from scalecore.ports.cache import CacheStats

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_BUCKETS",
    "MULTIPROC_ENV",
    "MetricSources",
    "Metrics",
    "install_metrics",
]

#: The exposition format served: the classic text format, which every scraper reads.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
#: Set (by ``scalecore web``) to the directory where worker processes write their samples.
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

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

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@attrs.frozen
class MetricSources:
    """Where the counters kept by the core come from, read on every sync.

    ``caches``: :class:`~scalecore.ports.cache.CacheStats` by cache name. ``bus``:
    the process's Bus (its ``stats``, and ``depth`` of each of ``queues``); the bus
    counters of every (topic, group) of ``topology`` show from the start, at 0. ``outbox``:
    the outbox repository whose backlog to report. ``cron``: a scheduler's CronStats.
    ``feed``: the feed worker (``counters()``). ``databases``: (store, shard, role,
    queries, connections in use, pool size) of each SQL engine. ``blobs``: the blob
    store (its ``stats``). Sources a process lacks stay ``None``.
    """

    caches: Callable[[], Mapping[str, CacheStats]] = dict
    bus: Callable[[], Any] | None = None
    queues: tuple[tuple[str, str], ...] = ()
    topology: tuple[tuple[str, str], ...] = ()
    outbox: Callable[[], Any] | None = None
    cron: Callable[[], Any] | None = None
    feed: Callable[[], Any] | None = None
    databases: Callable[[], Iterable[tuple[Any, ...]]] | None = None
    blobs: Callable[[], Any] | None = None
    clock: Callable[[], float] = time.time


class _Mirror:
    """Copies a growing count kept elsewhere into a prometheus counter, by difference."""

    def __init__(self, counter: Any) -> None:
        self._counter = counter
        self._seen: dict[tuple[str, ...], float] = {}

    def update(self, values: Iterable[tuple[tuple[str, ...], float]]) -> None:
        for labels, value in values:
            last = self._seen.get(labels)
            # A smaller value means the source was replaced (restarted): count it anew.
            delta = value if last is None or value < last else value - last
            self._seen[labels] = value
            if delta > 0 or last is None:  # a series at 0 shows too, so rate() has a start
                target = self._counter.labels(*labels) if labels else self._counter
                target.inc(delta)


class Metrics:
    """The metrics of one process, and their text for ``/metrics``.

    In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set when prometheus_client was
    first imported) the metrics write to that directory and :meth:`render` reads every
    process's files; otherwise they live in a private registry. Thread-safe.
    """

    def __init__(self, sources: MetricSources, *, multiprocess_dir: str | None = None) -> None:
        import prometheus_client as prom

        prom.disable_created_metrics()
        self.sources = sources
        self.multiprocess_dir = multiprocess_dir
        self._lock = threading.Lock()
        if multiprocess_dir is None:
            self._registry: Any = prom.CollectorRegistry(auto_describe=True)
            registry = self._registry
        else:
            from prometheus_client import multiprocess

            self._registry = prom.CollectorRegistry()
            multiprocess.MultiProcessCollector(self._registry, path=multiprocess_dir)
            registry = None  # values go to files; the collector above reads them all

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
            return prom.Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
            return prom.Gauge(name, doc, labels, registry=registry, multiprocess_mode="mostrecent")

        self.http_requests = counter(
            "scalecore_http_requests",
            "HTTP requests answered, by method, route and status.",
            ("method", "endpoint", "status"),
        )
        self.http_latency = prom.Histogram(
            "scalecore_http_request_duration_seconds",
            "Time to answer an HTTP request (until the response starts), by method and route.",
            ("method", "endpoint"),
            buckets=DEFAULT_BUCKETS,
            registry=registry,
        )
        self.http_db_queries = counter(
            "scalecore_http_db_queries",
            "SQL statements sent while answering HTTP requests, by route.",
            ("endpoint",),
        )
        self._cache_requests = _Mirror(
            counter(
                "scalecore_cache_requests",
                "Cache reads by result: hit (fresh), miss, or stale (served while refreshing).",
                ("cache", "result"),
            )
        )
        self._cache_loads = _Mirror(
            counter("scalecore_cache_loads", "Loader calls made to fill a cache entry.", ("cache",))
        )
        self._cache_errors = _Mirror(
            counter(
                "scalecore_cache_errors",
                "Cache backend failures and coordination errors (each one degraded to a miss).",
                ("cache",),
            )
        )
        self._published = _Mirror(
            counter("scalecore_bus_published", "Messages published, by topic.", ("topic",))
        )
        self._handled = _Mirror(
            counter(
                "scalecore_bus_handled",
                "Deliveries by topic, consumer group and outcome: ok (delivered and "
                "acknowledged), retry (failed, will be delivered again), dead (dead-lettered).",
                ("topic", "group", "outcome"),
            )
        )
        self._db_queries = _Mirror(
            counter(
                "scalecore_db_queries",
                "SQL statements run, by logical store, physical shard and role "
                "(primary or replica).",
                ("store", "shard", "role"),
            )
        )
        # Summed over the live processes of a web instance: the host's connections.
        self._db_in_use = prom.Gauge(
            "scalecore_db_pool_connections_in_use",
            "Pooled database connections checked out, by store, shard and role.",
            ("store", "shard", "role"),
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._db_size = prom.Gauge(
            "scalecore_db_pool_size",
            "Connections a database pool keeps open (0 for pools without a fixed size).",
            ("store", "shard", "role"),
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._blob_operations = _Mirror(
            counter(
                "scalecore_blob_operations",
                "Blob store operations (put, open, head, delete, list) by outcome (ok, error).",
                ("operation", "outcome"),
            )
        )
        self._blob_bytes = _Mirror(
            counter(
                "scalecore_blob_bytes",
                "Bytes of the objects put into and opened from the blob store.",
                ("operation",),
            )
        )
        self._feed_applied: _Mirror | None = None
        self._feed_written: _Mirror | None = None
        if sources.feed is not None:
            self._feed_applied = _Mirror(
                counter(
                    "scalecore_feed_events_applied",
                    "Photo events the feed worker applied to followers' feeds, by topic.",
                    ("topic",),
                )
            )
            self._feed_written = _Mirror(
                counter(
                    "scalecore_feed_entries_written",
                    "Feed entries written by the fan-out of photo events.",
                )
            )
        self._cron_runs: _Mirror | None = None
        self._cron_missed: _Mirror | None = None
        if sources.cron is not None:
            self._cron_runs = _Mirror(
                counter(
                    "scalecore_cron_runs",
                    "Cron job passes of this scheduler by outcome: ran, failed, lease_lost, error.",
                    ("job", "outcome"),
                )
            )
            self._cron_missed = _Mirror(
                counter(
                    "scalecore_cron_missed_slots",
                    "Cron slots that ended without the job completing, seen by this scheduler.",
                    ("job",),
                )
            )
        self._queued: Any = None
        self._dead: Any = None
        if sources.queues:
            self._queued = gauge(
                "scalecore_bus_queued_messages",
                "Messages waiting in a consumer group's queue, retries included (consumer lag).",
                ("topic", "group"),
            )
            self._dead = gauge(
                "scalecore_bus_dead_letters",
                "Messages in a consumer group's dead letters (replay: scalecore bus replay).",
                ("topic", "group"),
            )
        self._outbox_pending: Any = None
        self._outbox_age: Any = None
        if sources.outbox is not None:
            self._outbox_pending = gauge(
                "scalecore_outbox_pending_events", "Outbox events not yet published to the bus."
            )
            self._outbox_age = gauge(
                "scalecore_outbox_oldest_pending_age_seconds",
                "Age of the oldest outbox event not yet published (0 when none is pending).",
            )

    # -- recording ----------------------------------------------------------------------

    def observe_request(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered HTTP request."""
        method = method if method in _METHODS else "other"  # bound a client-chosen label
        self.http_requests.labels(method, endpoint, str(status)).inc()
        self.http_latency.labels(method, endpoint).observe(seconds)

    def observe_queries(self, endpoint: str, count: int) -> None:
        """Count the SQL statements one request of ``endpoint`` sent."""
        self.http_db_queries.labels(endpoint).inc(max(0, count))

    def sync(self) -> None:
        """Copy the core's counters of this process into the prometheus counters.

        A failing source is logged and skipped, so one broken part never hides the others.
        """
        with self._lock:
            for name, step in (
                ("cache", self._sync_caches),
                ("bus", self._sync_bus),
                ("feed worker", self._sync_feed),
                ("cron", self._sync_cron),
                ("database", self._sync_databases),
                ("blob store", self._sync_blobs),
            ):
                try:
                    step()
                except Exception:
                    _log.warning("metrics: reading the %s counters failed", name, exc_info=True)

    def _sync_caches(self) -> None:
        snapshots = {name: stats.snapshot() for name, stats in self.sources.caches().items()}
        self._cache_requests.update(
            ((name, result), float(snapshot.get(field, 0)))
            for name, snapshot in snapshots.items()
            for result, field in (("hit", "hits"), ("miss", "misses"), ("stale", "stale"))
        )
        self._cache_loads.update(
            ((name,), float(snapshot.get("loads", 0))) for name, snapshot in snapshots.items()
        )
        self._cache_errors.update(
            ((name,), float(snapshot.get("errors", 0))) for name, snapshot in snapshots.items()
        )

    def _sync_bus(self) -> None:
        bus = self.sources.bus() if self.sources.bus is not None else None
        if bus is None:
            return
        snapshot = bus.stats.snapshot()
        published = {(topic,): 0.0 for topic, _group in self.sources.topology}
        published.update(((topic,), float(n)) for topic, n in snapshot.published.items())
        handled = {
            (topic, group, outcome): 0.0
            for topic, group in self.sources.topology
            for outcome in OUTCOMES
        }
        handled.update(
            ((topic, group, outcome), float(n))
            for (topic, group, outcome), n in snapshot.handled.items()
        )
        self._published.update(published.items())
        self._handled.update(handled.items())

    def _sync_feed(self) -> None:
        feed = self.sources.feed() if self.sources.feed is not None else None
        if feed is None or self._feed_applied is None or self._feed_written is None:
            return
        applied, written = feed.counters()
        self._feed_applied.update(((topic,), float(n)) for topic, n in applied.items())
        self._feed_written.update([((), float(written))])

    def _sync_cron(self) -> None:
        stats = self.sources.cron() if self.sources.cron is not None else None
        if stats is None or self._cron_runs is None or self._cron_missed is None:
            return
        self._cron_runs.update(
            ((job, outcome), float(n)) for (job, outcome), n in stats.runs().items()
        )
        self._cron_missed.update(((job,), float(n)) for job, n in stats.missed().items())

    def _sync_blobs(self) -> None:
        if self.sources.blobs is None:
            return
        stats = self.sources.blobs().stats
        self._blob_operations.update(
            ((operation, outcome), float(n))
            for (operation, outcome), n in stats.operations().items()
        )
        self._blob_bytes.update(((operation,), float(n)) for operation, n in stats.bytes().items())

    def _sync_databases(self) -> None:
        if self.sources.databases is None:
            return
        rows = list(self.sources.databases())
        self._db_queries.update(
            ((str(store), str(shard), str(role)), float(queries))
            for store, shard, role, queries, _in_use, _size in rows
        )
        for store, shard, role, _queries, in_use, size in rows:
            self._db_in_use.labels(str(store), str(shard), str(role)).set(in_use)
            self._db_size.labels(str(store), str(shard), str(role)).set(size)

    def _read_backends(self) -> None:
        """Set the gauges that ask a backend (at scrape time only); a backend that fails
        is logged and its gauges keep their last value."""
        if self.sources.queues and self.sources.bus is not None:
            bus = self.sources.bus()
            for topic, group in self.sources.queues:
                try:
                    depth = bus.depth(topic, group)
                except Exception as exc:
                    _log.warning(
                        "metrics: reading the depth of %s/%s failed: %s", topic, group, exc
                    )
                    continue
                self._queued.labels(topic, group).set(depth.ready)
                self._dead.labels(topic, group).set(depth.dead)
        outbox = self.sources.outbox() if self.sources.outbox is not None else None
        if outbox is not None and self._outbox_pending is not None:
            try:
                pending = outbox.pending_count()
                oldest = outbox.oldest_pending_at()
            except Exception as exc:
                _log.warning("metrics: reading the outbox backlog failed: %s", exc)
            else:
                self._outbox_pending.set(pending)
                age = 0.0 if oldest is None else max(0.0, self.sources.clock() - oldest)
                self._outbox_age.set(age)

    def render(self) -> bytes:
        """Every metric of this process (or, in multiprocess mode, of every process that
        shares the directory) in the Prometheus text format."""
        from prometheus_client import generate_latest

        self.sync()
        try:
            self._read_backends()
        except Exception:
            _log.warning("metrics: reading the backends failed", exc_info=True)
        data: bytes = generate_latest(self._registry)
        return data


def multiprocess_dir() -> str | None:
    """The multiprocess directory this process writes to, or ``None`` (one process)."""
    return os.environ.get(MULTIPROC_ENV) or None


def install_metrics(app: Any, metrics: Metrics) -> None:
    """Count every request of ``app`` into ``metrics`` and serve them at ``/metrics``."""
    from flask import Response, g, request

    def start_timer() -> None:
        g.sc_started = time.perf_counter()

    def record(response: Any) -> Any:
        started = g.get("sc_started")
        rule = request.url_rule
        endpoint = rule.rule if rule is not None else "unmatched"
        elapsed = time.perf_counter() - started if started is not None else 0.0
        metrics.observe_request(request.method, endpoint, response.status_code, elapsed)
        if metrics.multiprocess_dir is not None:
            # Another worker may answer the next scrape: publish this one's counters now.
            metrics.sync()
        return response

    def metrics_view() -> Any:
        response = Response(metrics.render(), mimetype="text/plain")
        response.headers["Content-Type"] = CONTENT_TYPE
        response.headers["Cache-Control"] = "no-store"
        return response

    # The timer must run before anything else may fail, so it goes first.
    app.before_request_funcs.setdefault(None, []).insert(0, start_timer)
    app.after_request(record)
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
