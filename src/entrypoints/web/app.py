"""The Flask application factory. Importing this module builds nothing.

``create_app(container)`` builds the service and the adapters it needs from the container
(connecting to nothing yet), registers the views, the session and CSRF middleware, the
error handlers and the metrics, and returns the app. One app per process: a gunicorn
worker builds its own container and app after the fork, so no connection or lock is ever
shared across processes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, request

from entrypoints.readiness import ReadinessProbe
from entrypoints.tracing import install_web_tracing
from entrypoints.web.api import api
from entrypoints.web.drain import DrainRequestBody, drain_limit
from entrypoints.web.errors import install_error_handlers
from entrypoints.web.health import health
from entrypoints.web.media import media
from entrypoints.web.metrics import Metrics, MetricSources, install_metrics, multiprocess_dir
from entrypoints.web.pages import allow_large_upload_pages, pages
from entrypoints.web.presenters import iso_time, media_url
from entrypoints.web.readonly import install_read_only
from entrypoints.web.requestlog import install_request_log
from entrypoints.web.sessions import install_sessions
from entrypoints.web.state import ServiceContainer, WebState, attach
from scalecore.photofeed.events import TOPOLOGY
from scalecore.ports.cache import CacheStats

if TYPE_CHECKING:
    from scalecore.photofeed.service import PhotoFeed

__all__ = ["MULTIPART_OVERHEAD", "create_app", "create_ops_app"]

_PACKAGE = Path(__file__).resolve().parent.parent
#: Room above ``max_upload_bytes`` for the multipart envelope (boundaries, part headers,
#: the caption and the CSRF field). A body larger than the limit plus this is refused with
#: 413 from its Content-Length, before a byte of it is read.
MULTIPART_OVERHEAD = 64 * 1024
#: Form fields other than files (the caption, the CSRF token) are small.
_MAX_FORM_MEMORY = 64 * 1024

_HTML_POLICY = (
    "default-src 'self'; img-src 'self' data: https: http:; style-src 'self'; "
    "script-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def create_app(container: ServiceContainer, *, metrics: Mapping[str, Any] | None = None) -> Flask:
    """Build the web app over ``container``'s service and adapters.

    Everything the views need is resolved here, once, so requests on many threads never
    race to build a singleton. ``metrics`` takes the keywords of :func:`create_ops_app`
    for a process that also runs the worker or the scheduler (``scalecore run``). Raises
    ``ConfigError`` for a configuration the service cannot run on.
    """
    app = _base_app(container, **(metrics or {}))
    app.before_request(allow_large_upload_pages)
    install_read_only(app, bool(container.settings().read_only))
    install_sessions(app)
    app.register_blueprint(api)
    app.register_blueprint(media)
    app.register_blueprint(pages)
    app.after_request(_security_headers)
    app.jinja_env.globals.update(media_url=media_url, iso_time=iso_time)
    max_upload = int(container.photofeed_settings().max_upload_bytes)
    app.wsgi_app = DrainRequestBody(  # type: ignore[method-assign]
        app.wsgi_app, max_bytes=drain_limit(max_upload)
    )
    return app


def create_ops_app(
    container: ServiceContainer,
    *,
    queues: tuple[tuple[str, str], ...] = (),
    outbox: bool = False,
    cron: Callable[[], object] | None = None,
    feed: Callable[[], object] | None = None,
) -> Flask:
    """Only ``/healthz``, ``/readyz`` and ``/metrics``: for worker and scheduler processes,
    whose bus, cache and loader counters live in their own process.

    ``/metrics`` also reports the depth of the bus ``queues`` ((topic, group) pairs) and,
    with ``outbox``, the outbox backlog; ``cron`` returns the scheduler's CronStats and
    ``feed`` the feed worker, whose counters it then shows.
    """
    app = _base_app(container, queues=queues, outbox=outbox, cron=cron, feed=feed)
    app.after_request(_security_headers)
    return app


def _base_app(
    container: ServiceContainer,
    *,
    queues: tuple[tuple[str, str], ...] = (),
    outbox: bool = False,
    cron: Callable[[], object] | None = None,
    feed: Callable[[], object] | None = None,
) -> Flask:
    settings = container.settings()
    service = container.photofeed()
    max_upload = int(container.photofeed_settings().max_upload_bytes)
    metrics = Metrics(
        MetricSources(
            caches=lambda: _cache_stats(container, service),
            bus=container.bus,
            queues=queues,
            topology=TOPOLOGY,
            outbox=(lambda: service.outbox) if outbox else None,
            cron=cron,
            feed=feed,
            databases=container.database_stats,
            blobs=container.blobs,
            clock=lambda: container.clock().now(),
        ),
        multiprocess_dir=multiprocess_dir(),
    )
    web_state = WebState(
        container=container,
        service=service,
        sessions=container.sessions(),
        blobs=container.blobs(),
        clock=container.clock(),
        web=dict(settings.web),
        metrics=metrics,
        max_upload_bytes=max_upload,
        readiness=ReadinessProbe(container.readiness()),
        read_only=bool(settings.read_only),
    )
    app = Flask(
        "entrypoints",
        root_path=str(_PACKAGE),
        template_folder="templates",
        static_folder="static",
    )
    app.config.update(
        MAX_CONTENT_LENGTH=max_upload + MULTIPART_OVERHEAD,
        MAX_FORM_MEMORY_SIZE=_MAX_FORM_MEMORY,
        MAX_FORM_PARTS=16,
        JSON_SORT_KEYS=False,
        TRAP_HTTP_EXCEPTIONS=False,
        PROPAGATE_EXCEPTIONS=False,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    attach(app, web_state)
    install_metrics(app, metrics)
    _count_queries(app, metrics, container.sql_statements())
    install_request_log(app)
    install_web_tracing(app)
    install_error_handlers(app)
    app.register_blueprint(health)
    return app


def _count_queries(app: Flask, metrics: Metrics, statements: Callable[[], int]) -> None:
    """``scalecore_http_db_queries_total{endpoint}``: SQL statements sent while answering,
    by route; divided by ``scalecore_http_requests_total`` it is queries per request."""

    def start() -> None:
        g.sc_statements = statements()

    def record(response: Response) -> Response:
        started = g.get("sc_statements")
        if started is not None:
            rule = request.url_rule
            endpoint = rule.rule if rule is not None else "unmatched"
            metrics.observe_queries(endpoint, statements() - started)
        return response

    app.before_request_funcs.setdefault(None, []).insert(0, start)
    app.after_request(record)


def _cache_stats(container: ServiceContainer, service: PhotoFeed) -> dict[str, CacheStats]:
    """Stats by the ``cache`` label their metrics carry: the Cache adapter's, and each of
    the service's stampede-safe loaders'."""
    cache = container.cache()
    return {
        cache.name: cache.stats,
        "photofeed.profiles": service.profiles.stats,
        "photofeed.popular": service.popular_lists.stats,
        "photofeed.feed": service.feed_pages.stats,
    }


def _security_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("X-Frame-Options", "DENY")
    if response.mimetype == "text/html":
        headers.setdefault("Content-Security-Policy", _HTML_POLICY)
    if request.path.startswith("/api/") and "Cache-Control" not in headers:
        headers["Cache-Control"] = "no-store"
    return response
