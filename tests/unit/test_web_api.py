"""The JSON API over the real service and in-memory adapters: every endpoint, every status."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from test_web_support import Web, png_bytes

ERROR_KEYS = {"code", "message"}
PHOTO_KEYS = {"id", "owner", "caption", "created_at", "url", "thumbnail_url"}


@pytest.fixture
def web(tmp_path: Path) -> Web:
    return Web(tmp_path)


def error_of(response) -> str:  # type: ignore[no-untyped-def]
    body = response.get_json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == ERROR_KEYS, body
    assert body["error"]["message"]
    return str(body["error"]["code"])


# --------------------------------------------------------------------------- accounts


def test_sign_up_returns_the_user_and_refuses_bad_or_taken_names(web: Web) -> None:
    client = web.client()
    response = client.post("/api/users", json={"username": "ada", "password": "password123"})
    assert response.status_code == 201
    assert set(response.json) == {"id", "username"}
    assert response.json["username"] == "ada"
    assert response.headers["Location"] == "/api/users/ada"

    taken = client.post("/api/users", json={"username": "ada", "password": "password123"})
    assert taken.status_code == 409
    assert error_of(taken) == "conflict"

    for body in (
        {"username": "ab", "password": "password123"},
        {"username": "Ada!", "password": "password123"},
        {"username": "x" * 33, "password": "password123"},
        {"username": "bob", "password": "short"},
        {"username": "bob", "password": "p" * 1025},
        {"username": "bob"},
        {"username": 3, "password": "password123"},
    ):
        response = client.post("/api/users", json=body)
        assert response.status_code == 400, body
        assert error_of(response) == "invalid_input"


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "invalid_json"),
        (b"[1, 2]", "application/json", 400, "invalid_json"),
        (b'"text"', "application/json", 400, "invalid_json"),
        (b"", "application/json", 400, "invalid_json"),
        (b"\xff\xfe", "application/json", 400, "invalid_json"),
        (
            b"username=ada&password=password123",
            "application/x-www-form-urlencoded",
            415,
            "unsupported_media_type",
        ),
        (b'{"username": "ada"}', "text/plain", 415, "unsupported_media_type"),
    ],
)
def test_bad_json_bodies_are_4xx_json(
    web: Web, data: bytes, content_type: str, status: int, code: str
) -> None:
    for path in ("/api/users", "/api/session"):
        response = web.client().post(path, data=data, content_type=content_type)
        assert response.status_code == status, (path, response.json)
        assert error_of(response) == code


def test_invalid_json_and_a_non_object_get_different_messages(web: Web) -> None:
    client = web.client()
    for data, message in (
        (b'{"username": "ada", "pass', "the body is not valid JSON"),
        (b"", "the body is not valid JSON"),
        (b"[1, 2]", "the body must be a JSON object"),
        (b"null", "the body must be a JSON object"),
    ):
        response = client.post("/api/users", data=data, content_type="application/json")
        assert response.status_code == 400
        assert response.json["error"] == {"code": "invalid_json", "message": message}, data


def test_login_sets_a_session_and_wrong_credentials_are_401(web: Web) -> None:
    client = web.client()
    client.post("/api/users", json={"username": "ada", "password": "password123"})
    wrong = client.post("/api/session", json={"username": "ada", "password": "password124"})
    unknown = client.post("/api/session", json={"username": "nobody", "password": "password123"})
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert error_of(response) == "authentication_failed"
    assert wrong.json == unknown.json  # no hint of which accounts exist
    assert client.get_cookie("sc_session") is None

    ok = client.post("/api/session", json={"username": "ada", "password": "password123"})
    assert ok.status_code == 200
    assert set(ok.json) == {"user", "csrf_token"}
    assert ok.json["user"]["username"] == "ada"
    assert len(ok.json["csrf_token"]) >= 32


def test_me_needs_a_session(web: Web) -> None:
    response = web.client().get("/api/me")
    assert response.status_code == 401
    assert error_of(response) == "authentication_failed"
    client, _ = web.user("ada")
    me = client.get("/api/me")
    assert me.status_code == 200
    assert set(me.json) == {"id", "username", "followers", "following"}
    assert me.json["username"] == "ada"


def test_logout_is_204_and_forgets_the_session(web: Web) -> None:
    client, token = web.user("ada")
    cookie = client.get_cookie("sc_session")
    assert cookie is not None
    response = client.delete("/api/session", headers={"X-CSRF-Token": token})
    assert response.status_code == 204
    assert web.container.sessions().load(cookie.value) is None
    assert client.get("/api/me").status_code == 401
    # Idempotent: logging out without a session is still 204.
    assert web.client().delete("/api/session").status_code == 204


# --------------------------------------------------------------------------- follows


def test_follow_and_unfollow(web: Web) -> None:
    ada, token = web.user("ada")
    web.user("bob")
    assert ada.put("/api/following/bob", headers={"X-CSRF-Token": token}).status_code == 204
    assert ada.put("/api/following/bob", headers={"X-CSRF-Token": token}).status_code == 204
    assert ada.get("/api/me").json["following"] == 1
    assert web.client().get("/api/users/bob").json["followers"] == 1

    missing = ada.put("/api/following/nobody", headers={"X-CSRF-Token": token})
    assert missing.status_code == 404
    assert error_of(missing) == "not_found"
    bad_name = ada.put("/api/following/NO%20SUCH", headers={"X-CSRF-Token": token})
    assert bad_name.status_code == 404
    itself = ada.put("/api/following/ada", headers={"X-CSRF-Token": token})
    assert itself.status_code == 400
    assert error_of(itself) == "invalid_input"

    assert ada.delete("/api/following/bob", headers={"X-CSRF-Token": token}).status_code == 204
    assert ada.delete("/api/following/bob", headers={"X-CSRF-Token": token}).status_code == 204
    assert ada.get("/api/me").json["following"] == 0
    gone = ada.delete("/api/following/nobody", headers={"X-CSRF-Token": token})
    assert gone.status_code == 404

    anonymous = web.client()
    assert anonymous.put("/api/following/bob").status_code == 401
    assert anonymous.delete("/api/following/bob").status_code == 401


# --------------------------------------------------------------------------- photos and feeds


def test_upload_reaches_followers_and_delete_removes_it_everywhere(web: Web) -> None:
    ada, ada_token = web.user("ada")
    bob, bob_token = web.user("bob")
    assert ada.put("/api/following/bob", headers={"X-CSRF-Token": ada_token}).status_code == 204

    response = Web.upload(bob, bob_token, caption="sunset")
    assert response.status_code == 201, response.json
    photo = response.json
    assert set(photo) == PHOTO_KEYS
    assert photo["owner"] == "bob"
    assert photo["caption"] == "sunset"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", photo["created_at"])
    assert photo["url"].startswith("/media/")
    assert photo["thumbnail_url"].startswith("/media/")
    assert response.headers["Location"] == f"/api/photos/{photo['id']}"

    assert ada.get(f"/api/photos/{photo['id']}").json == photo
    assert web.client().get(f"/api/photos/{photo['id']}").json == photo  # public
    feed = ada.get("/api/feed").json
    assert feed == {"items": [photo], "next": None}
    assert web.client().get("/api/users/bob").json["photos"] == [photo]
    assert ada.get(photo["url"]).status_code == 200
    assert ada.get(photo["thumbnail_url"]).status_code == 200

    # Only the owner may delete.
    denied = ada.delete(f"/api/photos/{photo['id']}", headers={"X-CSRF-Token": ada_token})
    assert denied.status_code == 403
    assert error_of(denied) == "permission_denied"
    assert web.client().delete(f"/api/photos/{photo['id']}").status_code == 401

    deleted = bob.delete(f"/api/photos/{photo['id']}", headers={"X-CSRF-Token": bob_token})
    assert deleted.status_code == 204
    assert ada.get(f"/api/photos/{photo['id']}").status_code == 404
    assert ada.get("/api/feed").json == {"items": [], "next": None}
    assert web.client().get("/api/users/bob").json["photos"] == []
    assert ada.get(photo["url"]).status_code == 404
    assert ada.get(photo["thumbnail_url"]).status_code == 404
    again = bob.delete(f"/api/photos/{photo['id']}", headers={"X-CSRF-Token": bob_token})
    assert again.status_code == 404


def test_unknown_and_malformed_photo_ids_are_404(web: Web) -> None:
    client = web.client()
    for photo_id in ("nope", "01M80QZTQK10SJ879SQ1XB5WM3", "%00", "a" * 300):
        response = client.get(f"/api/photos/{photo_id}")
        assert response.status_code == 404, photo_id
        assert error_of(response) == "not_found"


def test_upload_refuses_non_images_oversize_and_bad_requests(web: Web) -> None:
    client, token = web.user("ada")
    headers = {"X-CSRF-Token": token}

    not_image = Web.upload(client, token, data=b"GIF89a but not really")
    assert not_image.status_code == 415
    assert error_of(not_image) == "unsupported_media_type"
    empty = Web.upload(client, token, data=b"")
    assert empty.status_code == 415

    # Over max_upload_bytes (200000) but within the multipart allowance: the service says.
    noisy = png_bytes(2, 2) + b"\0" * 200_001
    too_large = Web.upload(client, token, data=noisy)
    assert too_large.status_code == 413
    assert error_of(too_large) == "too_large"
    # Far over: refused from the Content-Length before the body is read.
    huge = Web.upload(client, token, data=b"\0" * 400_000)
    assert huge.status_code == 413
    assert error_of(huge) == "too_large"

    long_caption = Web.upload(client, token, caption="x" * 501)
    assert long_caption.status_code == 400
    assert error_of(long_caption) == "invalid_input"

    no_field = client.post(
        "/api/photos", data={"caption": "hi"}, content_type="multipart/form-data", headers=headers
    )
    assert no_field.status_code == 400
    as_form = client.post("/api/photos", data={"caption": "hi"}, headers=headers)
    assert as_form.status_code == 415
    wrong_field = client.post(
        "/api/photos", data={"image": (io.BytesIO(png_bytes()), "a.png")}, headers=headers
    )
    assert wrong_field.status_code == 400
    as_json = client.post("/api/photos", json={"photo": "abc"}, headers=headers)
    assert as_json.status_code == 415
    broken = client.post(
        "/api/photos",
        data=b'--xyz\r\nContent-Disposition: form-data; name="photo"\r\n\r\nabc',
        content_type="multipart/form-data; boundary=xyz",
        headers=headers,
    )
    assert broken.status_code == 400
    no_boundary = client.post(
        "/api/photos", data=b"abc", content_type="multipart/form-data", headers=headers
    )
    assert no_boundary.status_code == 400
    assert web.client().get("/api/users/ada").json["photos"] == []  # nothing stored

    anonymous = Web.upload(web.client(), "")
    assert anonymous.status_code == 401


def test_feed_pages_newest_first_with_a_cursor(web: Web) -> None:
    ada, ada_token = web.user("ada")
    bob, bob_token = web.user("bob")
    ada.put("/api/following/bob", headers={"X-CSRF-Token": ada_token})
    ids = [Web.upload(bob, bob_token, caption=str(i)).json["id"] for i in range(7)]

    first = ada.get("/api/feed").json
    assert [p["id"] for p in first["items"]] == ids[::-1][:5]  # default limit 5
    second = ada.get(f"/api/feed?before={first['next']}").json
    assert [p["id"] for p in second["items"]] == ids[::-1][5:]
    assert second["next"] is None

    two = ada.get("/api/feed?limit=2").json
    assert len(two["items"]) == 2
    assert two["next"]
    for query in ("limit=0", "limit=51", "limit=abc", "limit=-1", "limit=1.5", "before=garbage"):
        response = ada.get(f"/api/feed?{query}")
        assert response.status_code == 400, query
        assert error_of(response) == "invalid_input"
    assert web.client().get("/api/feed").status_code == 401


def test_profile(web: Web) -> None:
    web.user("ada")
    response = web.client().get("/api/users/ada")
    assert response.status_code == 200
    assert response.json == {
        "id": response.json["id"],
        "username": "ada",
        "followers": 0,
        "following": 0,
        "photos": [],
    }
    missing = web.client().get("/api/users/nobody")
    assert missing.status_code == 404
    assert error_of(missing) == "not_found"
    assert web.client().get("/api/users/Not%20Valid").status_code == 404


def test_api_responses_are_not_cached_and_not_sniffed(web: Web) -> None:
    client, _ = web.user("ada")
    response = client.get("/api/me")
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_people_are_found_by_prefix_or_newest_first(web: Web) -> None:
    for name in ("anna", "andy", "bert"):
        web.user(name)
    client = web.client()  # no session needed
    found = client.get("/api/users?q=an&limit=1")
    assert found.status_code == 200
    assert found.json["items"] == [{"id": found.json["items"][0]["id"], "username": "andy"}]
    assert found.json["next"] == "andy"
    rest = client.get("/api/users?q=an&after=andy")
    assert [u["username"] for u in rest.json["items"]] == ["anna"]
    assert rest.json["next"] is None
    newest = client.get("/api/users")
    assert [u["username"] for u in newest.json["items"]] == ["bert", "andy", "anna"]
    for query in ("?q=a%20b", "?limit=0", "?limit=51", "?after=nonsense", "?q=a&after=A!"):
        bad = client.get("/api/users" + query)
        assert bad.status_code == 400, query
        assert error_of(bad) == "invalid_input"
