"""The read-only switch in the web app: reads served, every write 503 with Retry-After.

A site is populated while writable (two users, a follow, a photo, a logged-in session),
then the same container is served again with ``SCALECORE_DEPLOYMENT__READ_ONLY=true``, as a
restart with the environment override would, and driven over the Flask test client.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import attrs
import pytest
from dependency_injector import providers
from flask import Flask
from flask.testing import FlaskClient
from test_web_pages import Forms
from test_web_support import Web, png_bytes, session_cookie

from entrypoints.photofeed.config import load_settings
from entrypoints.web import create_app
from entrypoints.web.openapi import openapi_document
from entrypoints.web.readonly import ALLOWED_WRITES, RETRY_AFTER
from scalecore.clock import ManualClock

READ_ONLY_ENV = {"SCALECORE_DEPLOYMENT__READ_ONLY": "true"}
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
BANNER = "Read-only for maintenance."
#: The writes of the site as it stands; any route added later is swept up by the url_map test.
KNOWN_WRITES = {
    ("api.sign_up", "POST"),
    ("api.create_session", "POST"),
    ("api.follow", "PUT"),
    ("api.unfollow", "DELETE"),
    ("api.upload_photo", "POST"),
    ("api.delete_photo", "DELETE"),
    ("pages.signup", "POST"),
    ("pages.login", "POST"),
    ("pages.upload", "POST"),
    ("pages.follow", "POST"),
    ("pages.unfollow", "POST"),
    ("pages.delete_photo", "POST"),
}


@attrs.define
class Site:
    """A populated site, and the same data served by a read-only app."""

    web: Web
    app: Flask
    photo_id: str
    photo_url: str
    ada_session: str
    ada_token: str
    bob_session: str
    bob_token: str

    def client(self, session: str | None = None) -> FlaskClient:
        client = self.app.test_client()
        if session is not None:
            client.set_cookie("sc_session", session)
        return client

    def ada(self) -> FlaskClient:
        return self.client(self.ada_session)

    def bob(self) -> FlaskClient:
        return self.client(self.bob_session)


def read_only_app(web: Web, tmp_path: Path) -> Flask:
    """The app a restart with SCALECORE_DEPLOYMENT__READ_ONLY=true builds, on the same data."""
    settings = load_settings(tmp_path / "scalecore.toml", environ=READ_ONLY_ENV)
    assert settings.read_only is True
    web.container.settings.override(providers.Object(settings))
    return create_app(web.container)


def populate(web: Web) -> tuple[FlaskClient, str, FlaskClient, str, Any]:
    ada, ada_token = web.user("ada")
    bob, bob_token = web.user("bob")
    uploaded = Web.upload(bob, bob_token, caption="before the move")
    assert uploaded.status_code == 201, uploaded.json
    assert ada.put("/api/following/bob", headers={"X-CSRF-Token": ada_token}).status_code == 204
    return ada, ada_token, bob, bob_token, uploaded.json


@pytest.fixture
def site(tmp_path: Path) -> Site:
    web = Web(tmp_path)
    ada, ada_token, bob, bob_token, photo = populate(web)
    ada_session, bob_session = session_cookie(ada), session_cookie(bob)
    assert ada_session
    assert bob_session
    return Site(
        web=web,
        app=read_only_app(web, tmp_path),
        photo_id=photo["id"],
        photo_url=photo["url"],
        ada_session=ada_session,
        ada_token=ada_token,
        bob_session=bob_session,
        bob_token=bob_token,
    )


def assert_read_only_json(response: Any) -> None:
    assert response.status_code == 503, (response.status_code, response.get_data(as_text=True))
    assert response.headers["Retry-After"] == str(RETRY_AFTER)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.json == {
        "error": {"code": "read_only", "message": response.json["error"]["message"]}
    }
    assert "read-only" in response.json["error"]["message"]


def assert_unchanged(site: Site) -> None:
    service = site.web.service
    assert service.profile("bob").followers == 1
    assert service.is_following(service.profile("ada").user.id, "bob")
    assert service.get_photo(site.photo_id).caption == "before the move"
    with pytest.raises(Exception, match="no user"):
        service.profile("carol")
    assert site.web.container.sessions().load(site.ada_session) is not None


# --------------------------------------------------------------------------- the API


def test_every_api_write_is_503_json_with_retry_after(site: Site) -> None:
    ada, csrf = site.ada(), {"X-CSRF-Token": site.ada_token}
    anonymous = site.client()
    credentials = {"username": "carol", "password": "password123"}
    photo = {"photo": (io.BytesIO(png_bytes()), "p.png"), "caption": "during the move"}
    writes = [
        anonymous.post("/api/users", json=credentials),
        anonymous.post("/api/session", json={"username": "ada", "password": "password123"}),
        ada.put("/api/following/bob", headers=csrf),
        ada.delete("/api/following/bob", headers=csrf),
        ada.post("/api/photos", data=photo, headers=csrf),
        site.bob().delete(f"/api/photos/{site.photo_id}", headers={"X-CSRF-Token": site.bob_token}),
    ]
    for response in writes:
        assert_read_only_json(response)
    assert anonymous.get_cookie("sc_session") is None  # no login happened
    assert_unchanged(site)


def test_every_write_route_of_the_app_is_refused(site: Site) -> None:
    """Swept from the url_map, so a write route added later is covered without a test."""
    values = {"username": "bob", "photo_id": site.photo_id, "key": "x"}
    refused: set[tuple[str, str]] = set()
    for rule in site.app.url_map.iter_rules():
        for method in sorted(set(rule.methods or ()) & set(WRITE_METHODS)):
            path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: values[m.group(1)], rule.rule)
            for accept in ("application/json", "text/html"):
                response = site.ada().open(
                    path,
                    method=method,
                    headers={"X-CSRF-Token": site.ada_token, "Accept": accept},
                )
                if rule.endpoint in ALLOWED_WRITES:
                    assert response.status_code in (204, 303), (rule.endpoint, response.status_code)
                    continue
                assert response.status_code == 503, (rule.endpoint, method, response.status_code)
                assert response.headers["Retry-After"] == str(RETRY_AFTER)
                refused.add((str(rule.endpoint), method))
    assert refused >= KNOWN_WRITES
    assert {"pages.logout", "api.delete_session"} == ALLOWED_WRITES


def test_unknown_routes_and_wrong_methods_keep_their_status(site: Site) -> None:
    client = site.ada()
    csrf = {"X-CSRF-Token": site.ada_token}
    assert client.post("/api/me", headers=csrf).status_code == 405
    assert client.post("/api/nothing", headers=csrf).status_code == 404
    assert "Retry-After" not in client.post("/api/me", headers=csrf).headers


def test_reads_are_served(site: Site) -> None:
    ada = site.ada()
    assert ada.get("/api/me").json["following"] == 1
    feed = ada.get("/api/feed")
    assert feed.status_code == 200
    assert [item["id"] for item in feed.json["items"]] == [site.photo_id]
    assert ada.get("/api/users/bob").json["followers"] == 1
    assert ada.get(f"/api/photos/{site.photo_id}").json["caption"] == "before the move"
    media = site.client().get(site.photo_url)
    assert media.status_code == 200
    assert media.headers["Content-Type"].startswith("image/")
    assert "Retry-After" not in media.headers
    assert site.client().get("/healthz").status_code == 200
    ready = site.client().get("/readyz")
    assert ready.status_code == 200, ready.json  # it is serving: stay in the pool
    assert site.client().get("/api/openapi.json").status_code == 200


# --------------------------------------------------------------------------- the pages


def forms(client: FlaskClient, path: str) -> dict[str, dict[str, str]]:
    response = client.get(path, headers={"Accept": "text/html"})
    assert response.status_code == 200, (path, response.status_code)
    page = Forms()
    page.feed(response.get_data(as_text=True))
    return page.forms


def test_every_page_shows_the_banner(site: Site) -> None:
    ada = site.ada()
    for path in ("/", "/upload", "/users/bob", f"/photos/{site.photo_id}"):
        page = ada.get(path, headers={"Accept": "text/html"})
        assert page.status_code == 200, path
        assert BANNER in page.get_data(as_text=True), path
    for path in ("/login", "/signup", "/users/ada"):
        assert BANNER in site.client().get(path).get_data(as_text=True), path
    missing = site.client().get("/users/nobody", headers={"Accept": "text/html"})
    assert missing.status_code == 404
    assert BANNER in missing.get_data(as_text=True)


def test_no_banner_while_writable(tmp_path: Path) -> None:
    web = Web(tmp_path)
    client, _ = web.user("ada")
    for path in ("/", "/login", "/users/ada"):
        assert BANNER not in client.get(path).get_data(as_text=True)


def test_every_form_gets_the_notice_page(site: Site) -> None:
    """Each form as a browser sends it (its hidden fields, Accept: text/html)."""
    ada, bob, anonymous = site.ada(), site.bob(), site.client()
    submissions = [
        (anonymous, "/signup", "/signup", {"username": "carol", "password": "password123"}),
        (anonymous, "/login", "/login", {"username": "ada", "password": "password123"}),
        (ada, "/upload", "/upload", {"photo": (io.BytesIO(png_bytes()), "p.png")}),
        (ada, "/users/bob", "/users/bob/unfollow", {}),
        (bob, f"/photos/{site.photo_id}/delete", f"/photos/{site.photo_id}/delete", {}),
    ]
    for client, page, action, fields in submissions:
        form = forms(client, page)[action]
        response = client.post(
            action,
            data={**form, **fields},
            content_type="multipart/form-data",
            headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
        )
        assert response.status_code == 503, (action, response.status_code)
        assert response.headers["Retry-After"] == str(RETRY_AFTER)
        assert response.content_type.startswith("text/html")
        body = response.get_data(as_text=True)
        assert "Nothing was changed: the site is read-only" in body, action
        assert "try again in a few minutes" in body
    # Follow, the other button of the profile page, is refused the same way.
    follow = site.client(site.ada_session).post(
        "/users/ada/follow",
        data={"csrf_token": site.ada_token},
        headers={"Accept": "text/html"},
    )
    assert follow.status_code == 503
    assert_unchanged(site)


# --------------------------------------------------------------------------- sessions


def test_log_out_clears_the_cookie_and_leaves_the_store_alone(site: Site) -> None:
    ada = site.ada()
    logout_form = forms(ada, "/")["/logout"]
    response = ada.post("/logout", data=logout_form, headers={"Accept": "text/html"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/login?logged_out=1"
    assert ada.get_cookie("sc_session") is None
    assert ada.get("/api/me").status_code == 401
    # The store being moved is not written: the record expires on its own.
    assert site.web.container.sessions().load(site.ada_session) is not None
    bob = site.bob()
    assert bob.delete("/api/session", headers={"X-CSRF-Token": site.bob_token}).status_code == 204
    assert bob.get_cookie("sc_session") is None
    assert site.web.container.sessions().load(site.bob_session) is not None


def test_sessions_are_not_refreshed_while_read_only(tmp_path: Path) -> None:
    clock = ManualClock(1_700_000_000.0)
    web = Web(tmp_path, clock=clock)
    client, _ = web.user("ada")
    session_id = session_cookie(client)
    assert session_id is not None
    store = web.container.sessions()
    ttl = float(store.ttl)  # type: ignore[attr-defined]

    def expires() -> float:
        session = store.load(session_id)
        assert session is not None
        return session.expires_at

    # Writable: a session used after half its lifetime is refreshed.
    clock.advance(ttl * 0.6)
    before = expires()
    assert client.get("/api/me").status_code == 200
    refreshed = expires()
    assert refreshed > before
    # Read-only: served, but the store is left as it is.
    app = read_only_app(web, tmp_path)
    clock.advance(ttl * 0.6)
    reader = app.test_client()
    reader.set_cookie("sc_session", session_id)
    assert reader.get("/api/me").status_code == 200
    assert reader.get("/", headers={"Accept": "text/html"}).status_code == 200
    assert expires() == refreshed


# --------------------------------------------------------------------------- OpenAPI


def test_openapi_lists_503_with_retry_after_for_exactly_the_refused_writes(site: Site) -> None:
    values = {"username": "bob", "photo_id": site.photo_id, "key": "x"}
    seen = 0
    for path, item in openapi_document()["paths"].items():
        url = re.sub(r"\{([^}]+)\}", lambda m: values[m.group(1)], path)
        for method, operation in item.items():
            if method.upper() not in WRITE_METHODS:
                continue
            seen += 1
            response = site.ada().open(
                url, method=method.upper(), headers={"X-CSRF-Token": site.ada_token}
            )
            refused = response.status_code == 503
            described = operation["responses"].get("503", {})
            name = operation["operationId"]
            assert ("Retry-After" in described.get("headers", {})) == refused, name
            if refused:
                assert "read-only" in described["description"]
                assert_read_only_json(response)
    assert seen == 7
