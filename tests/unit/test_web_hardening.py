"""Hostile or broken input gets a clear 4xx (or 503), never a 500 or a redirect off-site."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_web_support import Web

from adapters.sessions.memory import MemorySessionStore
from scalecore.errors import BackendUnavailable
from scalecore.ports.sessions import Session


@pytest.mark.parametrize(
    "target",
    [
        "/%09/evil.com",
        "/%0a/evil.com",
        "/%0d%0a/x",
        "//evil.com",
        "/\\evil.com",
        "https://evil.com/",
        "/ /evil.com",
        "evil.com",
    ],
)
def test_login_never_redirects_off_site(tmp_path: Path, target: str) -> None:
    web = Web(tmp_path)
    web.user("ada")
    client = web.client()
    page = client.get(f"/login?next={target}").get_data(as_text=True)
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', page))
    response = client.post("/login", data={**fields, "username": "ada", "password": "password123"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/"


def test_a_local_next_is_kept(tmp_path: Path) -> None:
    web = Web(tmp_path)
    web.user("ada")
    client = web.client()
    page = client.get("/login?next=/users/ada").get_data(as_text=True)
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', page))
    response = client.post("/login", data={**fields, "username": "ada", "password": "password123"})
    assert response.headers["Location"] == "/users/ada"


@pytest.mark.parametrize("path", ["/api/users", "/api/session"])
def test_a_password_that_is_not_unicode_text_is_a_4xx(tmp_path: Path, path: str) -> None:
    client = Web(tmp_path).client()
    body = '{"username": "zed", "password": "\\ud800aaaaaaaa"}'
    response = client.post(path, data=body, content_type="application/json")
    assert response.status_code in (400, 401)
    assert set(response.json["error"]) == {"code", "message"}


def test_deeply_nested_json_is_a_400(tmp_path: Path) -> None:
    client = Web(tmp_path).client()
    body = "[" * 100_000 + "]" * 100_000
    response = client.post("/api/users", data=body, content_type="application/json")
    assert response.status_code in (400, 413)
    assert response.json["error"]["code"] in ("invalid_json", "too_large")


def test_an_oversized_json_body_is_a_413(tmp_path: Path) -> None:
    client = Web(tmp_path).client()
    body = '{"username": "zed", "password": "' + "a" * 100_000 + '"}'
    response = client.post("/api/users", data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.json["error"]["code"] == "too_large"


class FlakySessions(MemorySessionStore):
    """A session store whose writes fail once ``down`` is set (a store outage)."""

    down = False

    def save(self, session: Session) -> None:
        if self.down:
            raise BackendUnavailable("session store is down")
        super().save(session)


def test_a_session_store_outage_after_the_view_is_a_503(tmp_path: Path) -> None:
    sessions = FlakySessions()
    web = Web(tmp_path, overrides={"sessions": sessions})
    client, token = web.user("ada")
    web.user("bob")
    sessions.down = True
    response = client.post(
        "/api/session",
        json={"username": "bob", "password": "password123"},
        headers={"X-CSRF-Token": token},
    )
    assert response.status_code == 503
    assert response.json["error"]["code"]


def test_made_up_http_methods_do_not_grow_the_metrics(tmp_path: Path) -> None:
    web = Web(tmp_path)
    client = web.client()
    for index in range(5):
        client.open("/healthz", method=f"ZZ{index}")
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "ZZ" not in metrics
    assert 'method="other"' in metrics
