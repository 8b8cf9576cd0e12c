"""Sessions over the SessionStore port: cookie flags, rotation, forged cookies and CSRF."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_web_support import Web, session_cookie

from scalecore.clock import ManualClock
from scalecore.ports.sessions import new_session_id


@pytest.fixture
def web(tmp_path: Path) -> Web:
    return Web(tmp_path)


def set_cookie_header(response) -> str:  # type: ignore[no-untyped-def]
    headers = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("sc_session=")]
    assert len(headers) == 1, response.headers
    return str(headers[0])


def test_the_session_cookie_is_httponly_lax_and_not_secure_by_default(web: Web) -> None:
    client = web.client()
    client.post("/api/users", json={"username": "ada", "password": "password123"})
    response = client.post("/api/session", json={"username": "ada", "password": "password123"})
    header = set_cookie_header(response)
    assert "HttpOnly" in header
    assert "SameSite=Lax" in header
    assert "Path=/" in header
    assert "Secure" not in header
    assert "Cookie" in response.headers["Vary"]


def test_secure_cookies_when_configured(tmp_path: Path) -> None:
    web = Web(tmp_path, "[web]\nsecure_cookies = true\n")
    client = web.client()
    client.post("/api/users", json={"username": "ada", "password": "password123"})
    response = client.post("/api/session", json={"username": "ada", "password": "password123"})
    assert "Secure" in set_cookie_header(response)


def test_login_rotates_the_session_id(web: Web) -> None:
    client, token = web.user("ada")
    first = session_cookie(client)
    assert first is not None
    # Log in again (as the same or another user) while holding the first session.
    web.client().post("/api/users", json={"username": "bob", "password": "password123"})
    response = client.post(
        "/api/session",
        json={"username": "bob", "password": "password123"},
        headers={"X-CSRF-Token": token},
    )
    assert response.status_code == 200
    second = session_cookie(client)
    assert second is not None
    assert second != first
    store = web.container.sessions()
    assert store.load(first) is None  # the old id stopped working
    assert client.get("/api/me").json["username"] == "bob"
    assert response.json["csrf_token"] != token  # a new token with the new session


def test_a_planted_session_id_is_useless_after_login(web: Web) -> None:
    store = web.container.sessions()
    planted = store.create({})
    client = web.client()
    client.set_cookie("sc_session", planted.id)
    client.post("/api/users", json={"username": "ada", "password": "password123"})
    client.post("/api/session", json={"username": "ada", "password": "password123"})
    # The attacker's copy of the id is not logged in.
    attacker = web.client()
    attacker.set_cookie("sc_session", planted.id)
    assert attacker.get("/api/me").status_code == 401


@pytest.mark.parametrize(
    "value",
    [
        "forged",
        "",
        "x" * 43,  # the right shape, but no such session
        new_session_id(),
        "../../etc/passwd",
        "a" * 4000,
        "%00%ff",
        '"quoted"',
    ],
)
def test_forged_or_malformed_cookies_are_no_session(web: Web, value: str) -> None:
    client = web.client()
    client.set_cookie("sc_session", value)
    response = client.get("/api/me")
    assert response.status_code == 401
    assert response.json["error"]["code"] == "authentication_failed"
    cleared = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("sc_session=")]
    assert cleared
    assert "Max-Age=0" in cleared[0] or "1970" in cleared[0]
    # A state-changing request with a forged cookie is simply anonymous: no 500, no 403.
    client.set_cookie("sc_session", value)
    assert client.put("/api/following/bob").status_code == 401
    client.set_cookie("sc_session", value)
    assert client.get("/").status_code == 303  # pages: off to the login form


def test_an_expired_session_is_no_session(tmp_path: Path) -> None:
    clock = ManualClock()
    web = Web(tmp_path, '[sessions]\nbackend = "memory"\nttl = 60\n', clock=clock)
    client, _ = web.user("ada")
    assert client.get("/api/me").status_code == 200
    clock.advance(61)
    assert client.get("/api/me").status_code == 401


def test_sessions_slide_after_half_their_ttl(tmp_path: Path) -> None:
    clock = ManualClock()
    web = Web(tmp_path, '[sessions]\nbackend = "memory"\nttl = 60\n', clock=clock)
    client, _ = web.user("ada")
    for _ in range(5):
        clock.advance(40)  # each request after half the TTL restarts it
        assert client.get("/api/me").status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/api/following/bob"),
        ("DELETE", "/api/following/bob"),
        ("POST", "/api/photos"),
        ("DELETE", "/api/photos/01M80QZTQK10SJ879SQ1XB5WM3"),
        ("DELETE", "/api/session"),
        ("POST", "/api/session"),
        ("POST", "/logout"),
        ("POST", "/users/bob/follow"),
    ],
)
def test_state_changes_with_a_session_need_the_csrf_token(web: Web, method: str, path: str) -> None:
    web.user("bob")
    client, _token = web.user("ada")
    for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}):
        response = client.open(path, method=method, headers=headers)
        assert response.status_code == 403, (path, headers)
        body = response.get_json()
        if path.startswith("/api/"):
            assert body == {"error": {"code": "csrf_failed", "message": body["error"]["message"]}}
    # The session survived the refused attempts.
    assert client.get("/api/me").status_code == 200


def test_the_csrf_token_may_come_as_a_form_field(web: Web) -> None:
    web.user("bob")
    client, token = web.user("ada")
    refused = client.post("/users/bob/follow", data={"csrf_token": "nope"})
    assert refused.status_code == 403
    assert "text/html" in refused.content_type  # a browser gets a page
    followed = client.post("/users/bob/follow", data={"csrf_token": token})
    assert followed.status_code == 303
    assert client.get("/api/me").json["following"] == 1


def test_anonymous_forms_need_the_double_submit_cookie(web: Web) -> None:
    client = web.client()
    form = client.get("/signup")
    cookie = client.get_cookie("sc_csrf")
    assert cookie is not None
    assert cookie.http_only
    assert cookie.value in form.get_data(as_text=True)
    # Without the field, or with a field that does not match the cookie: refused.
    data = {"username": "ada", "password": "password123"}
    assert client.post("/signup", data=data).status_code == 403
    assert client.post("/signup", data={**data, "csrf_token": "x" * 43}).status_code == 403
    other = web.client()  # another site's form: no cookie to match
    assert other.post("/signup", data={**data, "csrf_token": cookie.value}).status_code == 403
    signed_up = client.post("/signup", data={**data, "csrf_token": cookie.value})
    assert signed_up.status_code == 303
    assert client.get("/api/me").json["username"] == "ada"


def test_session_ids_are_never_logged(web: Web, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client, token = web.user("ada")
    session_id = session_cookie(client)
    client.get("/api/me")
    client.put("/api/following/nobody", headers={"X-CSRF-Token": token})
    client.put("/api/following/nobody")
    client.delete("/api/session", headers={"X-CSRF-Token": token})
    assert session_id
    assert session_id not in caplog.text
    assert all(session_id not in repr(record.args) for record in caplog.records)
