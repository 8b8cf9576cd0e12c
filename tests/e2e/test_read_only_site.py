"""The read-only switch over real HTTP: a site restarted with
``SCALECORE_DEPLOYMENT__READ_ONLY=true`` serves every read of the data it had and answers
every write, on the API and on the HTML forms, with 503 and Retry-After.

Runs on the embedded deployment only (``scalecore run``, with SQL sessions so a login
survives the restart), whatever ``SCALECORE_E2E_TARGETS`` says: the switch is one config key,
read the same way by every process.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from e2e_harness import (
    Client,
    Deployment,
    Reply,
    multipart,
    png_bytes,
    poll,
    start_embedded,
)

pytestmark = pytest.mark.e2e

READ_ONLY = {"SCALECORE_DEPLOYMENT__READ_ONLY": "true"}
SQL_SESSIONS = '\n[sessions]\nbackend = "sql"\n'
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def hidden_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


def form(fields: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    body, ctype = multipart(fields, {})
    return body, {**BROWSER, "Content-Type": ctype}


def assert_refused_json(reply: Reply) -> None:
    assert reply.status == 503, reply
    assert reply.headers["Retry-After"] == "60", reply
    assert reply.error_code == "read_only", reply


def assert_notice_page(reply: Reply) -> None:
    assert reply.status == 503, reply
    assert reply.headers["Retry-After"] == "60"
    assert reply.headers["Content-Type"].startswith("text/html")
    assert b"Nothing was changed: the site is read-only" in reply.body


def stop_cleanly(deployment: Deployment) -> None:
    codes = deployment.stop()
    assert codes == [0], deployment.output()


def test_read_only_serves_reads_and_refuses_writes(tmp_path: Path) -> None:
    # A writable site with users, a photo fanned out to a follower, and live sessions.
    site = start_embedded(tmp_path, extra_config=SQL_SESSIONS)
    try:
        ada, bob = Client(site.base_url), Client(site.base_url)
        for who, name in ((ada, "ada_ro"), (bob, "bob_ro")):
            assert who.sign_up(name).status == 201
            assert who.log_in(name).status == 200
        uploaded = bob.upload(png_bytes(120, 90), caption="before the switch")
        assert uploaded.status == 201, uploaded
        photo = uploaded.json()
        assert ada.request("PUT", "/api/following/bob_ro").status == 204
        poll(lambda: ada.get("/api/feed").json()["items"], timeout=10)
    finally:
        stop_cleanly(site)

    # The same data, restarted read-only by the environment override.
    site = start_embedded(tmp_path, extra_config=SQL_SESSIONS, env=READ_ONLY)
    try:
        ada.port = bob.port = int(site.base_url.rsplit(":", 1)[1])
        anonymous = Client(site.base_url)

        # Reads: API, pages (with the banner), media, readiness.
        assert ada.get("/api/me").json()["following"] == 1
        assert [item["id"] for item in ada.get("/api/feed").json()["items"]] == [photo["id"]]
        assert anonymous.get("/api/users/bob_ro").json()["followers"] == 1
        media = anonymous.get(photo["url"])
        assert media.status == 200
        assert media.headers["Content-Type"].startswith("image/")
        assert anonymous.get("/readyz").status == 200
        feed_page = ada.get("/", headers=BROWSER)
        assert feed_page.status == 200
        assert b"Read-only for maintenance." in feed_page.body
        assert photo["thumbnail_url"].encode() in feed_page.body

        # API writes: 503, Retry-After, the JSON error shape.
        body, ctype = multipart({"caption": "x"}, {"photo": ("p.png", "image/png", png_bytes())})
        for reply in (
            anonymous.sign_up("carol_ro"),
            anonymous.log_in("ada_ro"),
            ada.request("PUT", "/api/following/bob_ro"),
            ada.request("DELETE", "/api/following/bob_ro"),
            ada.request("POST", "/api/photos", body=body, headers={"Content-Type": ctype}),
            bob.request("DELETE", f"/api/photos/{photo['id']}"),
        ):
            assert_refused_json(reply)

        # Form posts: the notice page, with Retry-After.
        signup_token = hidden_token(anonymous.get("/signup", headers=BROWSER).body.decode())
        signup_body, signup_headers = form(
            {"csrf_token": signup_token, "username": "carol_ro", "password": "correct horse"}
        )
        assert_notice_page(
            anonymous.request("POST", "/signup", body=signup_body, headers=signup_headers)
        )
        profile = ada.get("/users/bob_ro", headers=BROWSER).body.decode()
        assert "Read-only for maintenance." in profile
        unfollow_body, unfollow_headers = form({"csrf_token": hidden_token(profile)})
        assert_notice_page(
            ada.request(
                "POST", "/users/bob_ro/unfollow", body=unfollow_body, headers=unfollow_headers
            )
        )

        # Nothing changed.
        assert anonymous.get("/api/users/carol_ro").status == 404
        assert anonymous.get("/api/users/bob_ro").json()["followers"] == 1
        assert ada.get(f"/api/photos/{photo['id']}").status == 200
        assert "read-only deployment ([deployment] read_only = true)" in site.output()
    finally:
        stop_cleanly(site)
