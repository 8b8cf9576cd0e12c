"""The app around the views: error shapes, health, readiness, metrics, OpenAPI, the factory."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_web_support import Web

from adapters.cache.memory import MemoryCache
from adapters.sessions.memory import MemorySessionStore
from entrypoints.container import create_tables
from entrypoints.web.metrics import Metrics, MetricSources
from entrypoints.web.openapi import openapi_document, render
from scalecore.errors import BackendUnavailable, ShardMoved

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture
def web(tmp_path: Path) -> Web:
    return Web(tmp_path)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/api/nothing", 404, "not_found"),
        ("GET", "/nothing/at/all", 404, "not_found"),
        ("POST", "/api/me", 405, "method_not_allowed"),
        ("PATCH", "/api/photos/abc", 405, "method_not_allowed"),
        ("DELETE", "/api/users", 405, "method_not_allowed"),
        ("POST", "/healthz", 405, "method_not_allowed"),
        ("PUT", "/media/a/b", 405, "method_not_allowed"),
    ],
)
def test_flask_errors_are_json_for_programs(
    web: Web, method: str, path: str, status: int, code: str
) -> None:
    response = web.client().open(path, method=method, headers={"Accept": "application/json"})
    assert response.status_code == status
    assert response.json == {"error": {"code": code, "message": response.json["error"]["message"]}}
    if status == 405:
        assert response.headers["Allow"]


def test_routing_errors_win_over_csrf_for_a_logged_in_client(web: Web) -> None:
    client, _ = web.user("ada")  # a live session, and no CSRF token sent below
    for method, path, status in (
        ("PATCH", "/api/me", 405),
        ("POST", "/api/me", 405),
        ("POST", "/api/nothing", 404),
        ("DELETE", "/nothing/at/all", 404),
    ):
        response = client.open(path, method=method, headers={"Accept": "application/json"})
        assert response.status_code == status, (method, path, response.json)
    still_guarded = client.delete("/api/session")
    assert still_guarded.status_code == 403
    assert still_guarded.json["error"]["code"] == "csrf_failed"


def test_a_body_over_the_limit_is_413_json_before_it_is_read(web: Web) -> None:
    client, token = web.user("ada")
    response = client.post(
        "/api/photos",
        data=b"x" * 300_000,
        content_type="multipart/form-data; boundary=x",
        headers={"X-CSRF-Token": token},
    )
    assert response.status_code == 413
    assert response.json["error"]["code"] == "too_large"
    assert web.app.config["MAX_CONTENT_LENGTH"] == 200_000 + 64 * 1024


def test_browsers_get_html_error_pages(web: Web) -> None:
    response = web.client().get("/nothing", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert response.content_type.startswith("text/html")
    assert "404" in response.get_data(as_text=True)
    missing_user = web.client().get("/users/nobody", headers={"Accept": "text/html"})
    assert missing_user.status_code == 404
    assert "no user" in missing_user.get_data(as_text=True)


def test_an_unexpected_error_is_a_generic_500(web: Web, caplog: pytest.LogCaptureFixture) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    web.service.profile = boom  # type: ignore[method-assign]
    response = web.client().get("/api/users/ada")
    assert response.status_code == 500
    assert response.json == {"error": {"code": "internal_error", "message": "internal error"}}
    assert "secret internals" not in response.get_data(as_text=True)
    assert "secret internals" in caplog.text  # logged for the operator


def test_a_backend_outage_is_503(web: Web) -> None:
    def down(*args: object, **kwargs: object) -> None:
        raise BackendUnavailable("users store: connection refused")

    web.service.profile = down  # type: ignore[method-assign]
    response = web.client().get("/api/users/ada")
    assert response.status_code == 503
    assert response.json["error"]["code"] == "backend_unavailable"
    assert response.headers["Retry-After"] == "1"


def test_a_write_to_a_moving_logical_shard_is_503_with_retry_after(web: Web) -> None:
    def moving(*args: object, **kwargs: object) -> None:
        raise ShardMoved("logical shard 7 is not on this database (moved)", retry_after=2.0)

    web.service.profile = moving  # type: ignore[method-assign]
    response = web.client().get("/api/users/ada")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    assert response.json["error"]["code"] == "backend_unavailable"


# --------------------------------------------------------------------------- health


def test_healthz(web: Web) -> None:
    response = web.client().get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_pings_every_backend(web: Web) -> None:
    response = web.client().get("/readyz")
    assert response.status_code == 200
    assert response.json["status"] == "ok"
    assert set(response.json["checks"]) == {
        "blobs",
        "sessions",
        "bus",
        "cache",
        "ledger",
        "photofeed.users",
        "photofeed.photos",
        "photofeed.outbox",
        "photofeed.follows",
        "photofeed.feed",
    }
    assert set(response.json["checks"].values()) == {"ok"}


class DownCache(MemoryCache):
    def ping(self) -> None:
        raise BackendUnavailable("memcached at 10.0.0.9:11211 refused the connection")


class DownSessions(MemorySessionStore):
    def ping(self) -> None:
        raise RuntimeError("driver exploded")


def test_readyz_names_the_backend_that_fails(tmp_path: Path) -> None:
    web = Web(tmp_path, overrides={"cache": DownCache(name="cache")})
    response = web.client().get("/readyz")
    assert response.status_code == 503
    assert response.json["status"] == "unavailable"
    assert response.json["checks"]["cache"].startswith("unavailable: memcached")
    assert response.json["checks"]["blobs"] == "ok"
    assert response.json["error"]["code"] == "backend_unavailable"
    assert "cache" in response.json["error"]["message"]
    assert web.client().get("/healthz").status_code == 200  # alive, just not ready


def test_readyz_survives_a_ping_that_raises_anything(tmp_path: Path) -> None:
    web = Web(tmp_path, overrides={"sessions": DownSessions()})
    response = web.client().get("/readyz")
    assert response.status_code == 503
    assert "sessions" in response.json["error"]["message"]


class FrozenCache(MemoryCache):
    """A cache whose server stopped answering without closing anything."""

    def __init__(self) -> None:
        super().__init__(name="cache")
        self.thaw = threading.Event()
        self.pings = 0

    def ping(self) -> None:
        self.pings += 1
        self.thaw.wait(30)


def test_readyz_answers_in_bounded_time_when_a_backend_hangs(tmp_path: Path) -> None:
    frozen = FrozenCache()
    web = Web(tmp_path, overrides={"cache": frozen})
    web.app.extensions["scalecore"].readiness.timeout = 0.3
    try:
        for _ in range(3):  # a load balancer probing again and again
            began = time.monotonic()
            response = web.client().get("/readyz")
            assert time.monotonic() - began < 2.0
            assert response.status_code == 503
            assert response.json["checks"]["cache"] == "unavailable: no answer within 0.3 s"
            assert response.json["checks"]["blobs"] == "ok"
        assert frozen.pings == 1  # one stuck ping is waited on again, not started anew
        frozen.thaw.set()
        deadline = time.monotonic() + 5
        while web.client().get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "ready again once the backend answers"
            time.sleep(0.05)
    finally:
        frozen.thaw.set()


# --------------------------------------------------------------------------- metrics

_SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_key(sample: str) -> tuple[str, frozenset[tuple[str, str]]]:
    name, _, rest = sample.partition("{")
    return name, frozenset(_LABEL.findall(rest))


def parse_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text as {(name, labels): value}; fails on a malformed line."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = _SAMPLE.match(line)
        assert match, f"malformed line: {line!r}"
        key = (match.group(1), frozenset(_LABEL.findall(match.group(2) or "")))
        assert key not in samples, f"duplicate sample: {line!r}"
        samples[key] = float(match.group(3))
    return samples


def test_metrics_expose_http_cache_and_bus_counters(web: Web) -> None:
    ada, ada_token = web.user("ada")
    bob, bob_token = web.user("bob")
    ada.put("/api/following/bob", headers={"X-CSRF-Token": ada_token})
    Web.upload(bob, bob_token)
    for _ in range(3):
        web.client().get("/api/users/bob")
    web.client().get("/no/such/path")

    response = web.client().get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = response.get_data(as_text=True)
    for name, kind in (
        ("scalecore_http_requests_total", "counter"),
        ("scalecore_http_request_duration_seconds", "histogram"),
        ("scalecore_cache_requests_total", "counter"),
        ("scalecore_cache_loads_total", "counter"),
        ("scalecore_bus_published_total", "counter"),
        ("scalecore_bus_handled_total", "counter"),
    ):
        assert f"# TYPE {name} {kind}\n" in text
    samples = parse_samples(text)

    def value(sample: str) -> float:
        key = parse_key(sample)
        assert key in samples, f"{sample} not in\n{text}"
        return samples[key]

    assert (
        value('scalecore_http_requests_total{endpoint="/api/photos",method="POST",status="201"}')
        == 1
    )
    assert (
        value('scalecore_http_requests_total{endpoint="unmatched",method="GET",status="404"}') == 1
    )
    assert (
        value(
            'scalecore_http_request_duration_seconds_count{endpoint="/api/users/<username>",'
            'method="GET"}'
        )
        == 3
    )
    assert (
        value(
            'scalecore_http_request_duration_seconds_bucket{endpoint="/api/users/<username>",'
            'le="+Inf",method="GET"}'
        )
        == 3
    )
    # The profile loader: the first read of bob's profile was a miss, then hits.
    hits = [
        v
        for (name, labels), v in samples.items()
        if name == "scalecore_cache_requests_total" and ("result", "hit") in labels
    ]
    assert any(v >= 2 for v in hits), text
    for result in ("hit", "miss", "stale"):
        assert f'result="{result}"' in text
    assert value('scalecore_cache_requests_total{cache="cache",result="miss"}') >= 0
    assert any(name == "scalecore_cache_loads_total" and v >= 1 for (name, _), v in samples.items())
    assert value('scalecore_bus_published_total{topic="photo.uploaded"}') == 1
    # The upload put the photo and its thumbnail.
    assert value('scalecore_blob_operations_total{operation="put",outcome="ok"}') == 2
    assert value('scalecore_blob_bytes_total{operation="put"}') > 0
    assert (
        value(
            'scalecore_bus_handled_total{group="feed-fanout",outcome="ok",topic="photo.uploaded"}'
        )
        == 1
    )


class _Stats:
    """A CacheStats-like source whose counters the test sets."""

    def __init__(self) -> None:
        self.values = {"hits": 0, "misses": 0, "stale": 0, "loads": 0, "errors": 0}

    def snapshot(self) -> dict[str, int]:
        return dict(self.values)


def test_metrics_mirror_core_counters_by_difference_and_survive_broken_sources() -> None:
    stats = _Stats()
    sources = {"ok": stats}

    def broken_bus() -> object:
        raise RuntimeError("the bus is gone")

    metrics = Metrics(MetricSources(caches=lambda: sources, bus=broken_bus))

    def value(sample: str) -> float:
        return parse_samples(metrics.render().decode()).get(parse_key(sample), 0.0)

    stats.values["hits"] = 5
    assert value('scalecore_cache_requests_total{cache="ok",result="hit"}') == 5
    assert value('scalecore_cache_requests_total{cache="ok",result="hit"}') == 5  # no double
    stats.values["hits"] = 7
    assert value('scalecore_cache_requests_total{cache="ok",result="hit"}') == 7
    # A source that starts again from zero (a replaced object) keeps the total growing.
    stats.values["hits"] = 2
    assert value('scalecore_cache_requests_total{cache="ok",result="hit"}') == 9

    def work() -> None:
        for _ in range(500):
            metrics.observe_request("ZZZ", "/x", 200, 0.5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    text = metrics.render().decode()
    assert 'scalecore_http_requests_total{endpoint="/x",method="other",status="200"} 2000.0' in text
    assert (
        'scalecore_http_request_duration_seconds_bucket{endpoint="/x",le="0.25",method="other"} 0.0'
        in text
    )
    assert (
        'scalecore_http_request_duration_seconds_bucket{endpoint="/x",le="0.5",method="other"} '
        "2000.0" in text
    )
    assert "_created" not in text
    # Parts this process does not run show no metrics at all (not a misleading 0).
    assert "scalecore_outbox" not in text
    assert "scalecore_feed" not in text
    assert "scalecore_cron" not in text


# --------------------------------------------------------------------------- OpenAPI


def test_metrics_count_database_queries_per_route(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import test_web_support

    # The SQL repositories (SQLite in tmp_path), so there are queries to count.
    sql = test_web_support.BASE_CONFIG.replace('repositories = "memory"', 'repositories = "sql"')
    monkeypatch.setattr(test_web_support, "BASE_CONFIG", sql)
    web = Web(tmp_path)
    create_tables(web.container)
    web.user("bob")
    route = 'scalecore_http_db_queries_total{endpoint="/api/users/<username>"}'

    def queries() -> float:
        samples = parse_samples(web.client().get("/metrics").get_data(as_text=True))
        return samples.get(parse_key(route), 0.0)

    assert "# TYPE scalecore_http_db_queries_total counter\n" in (
        web.client().get("/metrics").get_data(as_text=True)
    )
    web.client().get("/api/users/bob")
    cold = queries()
    assert cold >= 1  # the first read loads the profile from the database
    for _ in range(3):
        assert web.client().get("/api/users/bob").status_code == 200
    assert queries() == cold  # warm, anonymous reads come from the cache: no query


def test_docs_openapi_is_the_served_document(web: Web) -> None:
    served = web.client().get("/api/openapi.json")
    assert served.status_code == 200
    assert served.json == openapi_document()
    assert (DOCS / "openapi.json").read_text() == render(), (
        "docs/openapi.json is stale: regenerate it with entrypoints.web.openapi.render()"
    )


def test_openapi_describes_exactly_the_api_routes(web: Web) -> None:
    described = {
        (path, method.upper())
        for path, item in openapi_document()["paths"].items()
        for method in item
        if method != "parameters"
    }
    routed = set()
    for rule in web.app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        if not path.startswith(("/api", "/media", "/healthz", "/readyz", "/metrics")):
            continue
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                routed.add((path, method))
    assert described == routed


def test_every_documented_status_of_the_issue_is_in_the_document() -> None:
    paths = openapi_document()["paths"]
    expected = {
        ("/api/users", "post"): {"201", "400", "409"},
        ("/api/session", "post"): {"200", "401"},
        ("/api/session", "delete"): {"204"},
        ("/api/me", "get"): {"200", "401"},
        ("/api/following/{username}", "put"): {"204", "404"},
        ("/api/following/{username}", "delete"): {"204", "404"},
        ("/api/photos", "post"): {"201", "413", "415"},
        ("/api/photos/{photo_id}", "get"): {"200", "404"},
        ("/api/photos/{photo_id}", "delete"): {"204", "403", "404"},
        ("/api/feed", "get"): {"200"},
        ("/api/users/{username}", "get"): {"200", "404"},
        ("/media/{key}", "get"): {"200", "302", "304"},
        ("/readyz", "get"): {"200", "503"},
    }
    for (path, method), statuses in expected.items():
        assert statuses <= set(paths[path][method]["responses"]), (path, method)
    json.dumps(paths)  # plain JSON all the way down


# --------------------------------------------------------------------------- the factory


def test_importing_the_web_package_builds_nothing() -> None:
    code = (
        "import sys, entrypoints.web, entrypoints.web.app, entrypoints.cli, entrypoints.runner\n"
        "import flask\n"
        "assert not any(isinstance(v, flask.Flask) for m in list(sys.modules.values())\n"
        "           for v in vars(m).values() if m is not None), 'an app was built at import'\n"
        "assert 'sqlalchemy' not in sys.modules\n"
        "assert 'gunicorn' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_two_apps_do_not_share_state(tmp_path: Path) -> None:
    first = Web(tmp_path / "one")
    second = Web(tmp_path / "two")
    first.user("ada")
    assert second.client().get("/api/users/ada").status_code == 404


def test_metrics_show_queries_and_pool_use_of_the_sql_stores(tmp_path: Path) -> None:
    from entrypoints.container import close_adapters, create_container, create_tables
    from entrypoints.photofeed.config import load_settings
    from entrypoints.web import create_app

    config = tmp_path / "scalecore.toml"
    config.write_text(f'[deployment]\ndata_dir = "{tmp_path}"\n\n[bus]\nmode = "sync"\n')
    container = create_container(load_settings(str(config)))
    try:
        create_tables(container)
        client = create_app(container).test_client()
        assert client.get("/api/users/nobody").status_code == 404
        text = client.get("/metrics").get_data(as_text=True)
    finally:
        close_adapters(container)
    samples = parse_samples(text)
    queries = [
        (dict(labels), value)
        for (name, labels), value in samples.items()
        if name == "scalecore_db_queries_total"
    ]
    assert queries, text
    labels, value = queries[0]
    assert (labels["shard"], labels["role"]) == ("0", "primary")
    assert "users" in labels["store"].split("+")
    assert value >= 1
    assert any(name == "scalecore_db_pool_size" for name, _ in samples)
    assert any(name == "scalecore_db_pool_connections_in_use" for name, _ in samples)
