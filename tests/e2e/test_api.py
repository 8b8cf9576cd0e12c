"""Every endpoint of the HTTP API, over real HTTP, against a running deployment."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import MAX_UPLOAD_BYTES, Client, Deployment, multipart

pytestmark = pytest.mark.e2e

DOCS = Path(__file__).resolve().parents[2] / "docs"
PHOTO_KEYS = {"id", "owner", "caption", "created_at", "url", "thumbnail_url"}


def test_health_readiness_metrics_and_openapi(
    client: Callable[[], Client], eventually: Callable[..., Any]
) -> None:
    http = client()
    health = http.get("/healthz")
    assert health.status == 200
    assert health.json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status == 200, ready
    assert ready.json()["status"] == "ok"
    assert {"blobs", "sessions", "bus", "cache", "ledger", "photofeed.users"} <= set(
        ready.json()["checks"]
    )
    metrics = http.get("/metrics")
    assert metrics.status == 200
    assert metrics.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = metrics.body.decode()
    for name in (
        "scalecore_http_requests_total",
        "scalecore_http_request_duration_seconds",
        "scalecore_cache_requests_total",
        "scalecore_cache_loads_total",
        "scalecore_bus_published_total",
        "scalecore_bus_handled_total",
    ):
        assert f"# TYPE {name} " in text
    # Labels in any order (the exposition format does not fix one).
    sample = re.compile(
        r'^scalecore_http_requests_total\{(?=[^}]*method="GET")(?=[^}]*endpoint="/healthz")'
        r'(?=[^}]*status="200")[^}]*\} \S+$',
        re.MULTILINE,
    )

    def counted() -> bool:
        # Several web processes (gunicorn workers) share one scrape: every /healthz
        # counts, whichever worker answers.
        http.get("/healthz")
        return sample.search(http.get("/metrics").body.decode()) is not None

    eventually(counted, timeout=10)
    document = http.get("/api/openapi.json")
    assert document.status == 200
    assert document.json() == json.loads((DOCS / "openapi.json").read_text())


def test_errors_are_json_and_never_500(client: Callable[[], Client]) -> None:
    http = client()
    assert http.get("/api/nope").error_code == "not_found"
    method = http.request("PATCH", "/api/me")
    assert method.status == 405
    assert method.error_code == "method_not_allowed"
    for body, ctype in ((b"{bad", "application/json"), (b"[]", "application/json")):
        reply = http.request("POST", "/api/users", body=body, headers={"Content-Type": ctype})
        assert reply.status == 400
        assert reply.error_code == "invalid_json"
    wrong_type = http.request(
        "POST", "/api/session", body=b"a=b", headers={"Content-Type": "text/plain"}
    )
    assert wrong_type.status == 415
    assert http.get("/api/me").status == 401
    assert http.get("/api/feed").status == 401
    assert http.get("/api/users/nobody_at_all").status == 404
    assert http.get("/api/photos/nothing").status == 404
    assert http.get("/media/photos/none/original.png").status == 404
    assert http.get("/media/a/../../etc/passwd").status in (400, 404)
    assert http.get("/media/x?expires=1&signature=abc").status == 403
    forged = client()
    forged.cookies["sc_session"] = "forged-" + uuid.uuid4().hex
    assert forged.get("/api/me").status == 401
    assert "sc_session" not in forged.cookies  # cleared by the server


def test_the_whole_api_journey(
    client: Callable[[], Client],
    username: Callable[[str], str],
    png: Callable[..., bytes],
    eventually: Callable[..., Any],
) -> None:
    ada_name, bob_name = username("ada"), username("bob")
    ada, bob = client(), client()

    # Sign up and log in.
    created = ada.sign_up(ada_name)
    assert created.status == 201
    assert set(created.json()) == {"id", "username"}
    assert bob.sign_up(bob_name).status == 201
    assert ada.sign_up(ada_name).status == 409
    assert ada.sign_up("x").status == 400
    assert ada.sign_up(username("c"), "short").status == 400
    assert ada.log_in(ada_name, "wrong password").status == 401
    login = ada.log_in(ada_name)
    assert login.status == 200
    assert set(login.json()) == {"user", "csrf_token"}
    cookie = next(h for h in login.headers.get_all("Set-Cookie") if h.startswith("sc_session="))
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    first_session = ada.cookies["sc_session"]
    assert ada.log_in(ada_name).status == 200
    assert ada.cookies["sc_session"] != first_session  # rotated at login
    assert bob.log_in(bob_name).status == 200
    me = ada.get("/api/me")
    assert me.status == 200
    assert me.json() == {
        "id": created.json()["id"],
        "username": ada_name,
        "followers": 0,
        "following": 0,
    }

    # Follow: CSRF enforced, unknown users 404.
    assert ada.request("PUT", f"/api/following/{bob_name}", csrf=False).status == 403
    assert ada.request("PUT", f"/api/following/{bob_name}").status == 204
    assert ada.request("PUT", "/api/following/nobody_here").status == 404
    assert ada.request("PUT", f"/api/following/{ada_name}").status == 400
    assert ada.get("/api/me").json()["following"] == 1

    # Upload: an image, then refusals.
    image = png(320, 240)
    uploaded = bob.upload(image, caption="hello from bob")
    assert uploaded.status == 201, uploaded
    photo = uploaded.json()
    assert set(photo) == PHOTO_KEYS
    assert photo["owner"] == bob_name
    assert photo["caption"] == "hello from bob"
    assert bob.upload(b"this is not an image").status == 415
    assert bob.upload(png(4, 4) + b"\0" * MAX_UPLOAD_BYTES).status == 413
    assert bob.upload(image, field="picture").status == 400
    assert bob.upload(image, caption="x" * 501).status == 400
    assert client().upload(image).status == 401
    second = bob.upload(image)
    assert second.status == 201, second  # the same image again is another photo

    # Both photos reach Ada's feed (fan-out is asynchronous).
    def in_feed() -> list[dict[str, Any]]:
        items = ada.get("/api/feed?limit=50").json()["items"]
        return [p for p in items if p["id"] == photo["id"]]

    def both_in_feed() -> bool:
        ids = {p["id"] for p in ada.get("/api/feed?limit=50").json()["items"]}
        return {photo["id"], second.json()["id"]} <= ids

    eventually(both_in_feed)
    assert in_feed() == [photo]
    page = ada.get("/api/feed?limit=1").json()
    assert len(page["items"]) == 1
    assert page["next"]
    older = ada.get(f"/api/feed?limit=1&before={page['next']}").json()
    assert older["items"][0]["id"] != page["items"][0]["id"]
    assert ada.get("/api/feed?limit=0").status == 400
    assert ada.get("/api/feed?before=garbage").status == 400

    # Photo, profile and media.
    assert client().get(f"/api/photos/{photo['id']}").json() == photo
    profile = client().get(f"/api/users/{bob_name}").json()
    assert profile["followers"] == 1
    assert photo in profile["photos"]
    media = client().get(photo["url"])
    assert media.status == 200
    assert media.body == image
    etag = media.headers["ETag"]
    assert etag == f'"{hashlib.sha256(image).hexdigest()}"'
    assert media.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert media.headers["Last-Modified"]
    assert client().get(photo["url"], headers={"If-None-Match": etag}).status == 304
    assert client().get(photo["thumbnail_url"]).headers["Content-Type"].startswith("image/")

    # Delete: only the owner; then it is gone everywhere.
    assert ada.request("DELETE", f"/api/photos/{photo['id']}").status == 403
    assert bob.request("DELETE", f"/api/photos/{photo['id']}", csrf=False).status == 403
    assert bob.request("DELETE", f"/api/photos/{photo['id']}").status == 204
    assert bob.request("DELETE", f"/api/photos/{photo['id']}").status == 404
    assert client().get(f"/api/photos/{photo['id']}").status == 404
    assert client().get(photo["url"]).status == 404
    eventually(lambda: not in_feed())

    # Unfollow, log out.
    assert ada.request("DELETE", f"/api/following/{bob_name}").status == 204
    assert ada.get("/api/me").json()["following"] == 0
    assert ada.request("DELETE", "/api/following/nobody_here").status == 404
    assert ada.request("DELETE", "/api/session").status == 204
    assert "sc_session" not in ada.cookies
    assert ada.get("/api/me").status == 401


def test_a_far_oversized_upload_gets_its_413_in_urllib(
    deployment: Deployment, client: Callable[[], Client], username: Callable[[str], str]
) -> None:
    """A client that sends the whole body before it reads the answer (Python's urllib)
    still gets the 413 and its JSON: the server reads the rest before answering."""
    user = client()
    name = username("huge")
    user.sign_up(name)
    user.log_in(name)
    body, ctype = multipart(
        {"caption": "far too big"},
        {"photo": ("big.png", "image/png", b"\x89PNG" + b"\0" * (20 * MAX_UPLOAD_BYTES))},
    )
    request = urllib.request.Request(
        f"{deployment.base_url}/api/photos",
        data=body,
        method="POST",
        headers={
            "Content-Type": ctype,
            "Cookie": "; ".join(f"{k}={v}" for k, v in user.cookies.items()),
            "X-CSRF-Token": user.csrf or "",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=60)
    assert info.value.code == 413
    error = json.loads(info.value.read())["error"]
    assert error["code"] == "too_large"
    assert "at most 293 KiB" in error["message"]


def test_an_upload_past_the_drain_limit_is_answered_from_its_headers(
    deployment: Deployment, client: Callable[[], Client], username: Callable[[str], str]
) -> None:
    """A body larger than the server would read (the drain limit, 64 MiB here) is refused
    from its Content-Length: a client that sends only the headers gets the 413 at once.
    (Below that limit the server reads the body first; a client gone silent there is
    answered after DRAIN_IDLE_SECONDS under gunicorn, see tests/unit/test_web_drain.py.)"""
    user = client()
    name = username("big")
    user.sign_up(name)
    user.log_in(name)
    _, ctype = multipart({}, {"photo": ("big.png", "image/png", b"")})
    host, port = user.host, user.port
    cookies = "; ".join(f"{k}={v}" for k, v in user.cookies.items())
    head = (
        f"POST /api/photos HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {100 * 1024 * 1024}\r\nCookie: {cookies}\r\n"
        f"X-CSRF-Token: {user.csrf}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(head)  # and not one byte of the body
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line.split()[1] == b"413", reply
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "too_large"
