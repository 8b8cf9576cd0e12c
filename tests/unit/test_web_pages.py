"""The HTML pages: a person signs up, logs in, uploads, follows and reads a feed, no JS."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from test_web_support import Web, png_bytes


class Forms(HTMLParser):
    """The forms of a page: action -> {field name: value} (hidden and text inputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[str, dict[str, str]] = {}
        self.images: list[str] = []
        self.links: list[str] = []
        self._action: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._action = attributes.get("action", "")
            self.forms[self._action] = {}
        elif tag == "input" and self._action is not None and "name" in attributes:
            self.forms[self._action][attributes["name"]] = attributes.get("value", "")
        elif tag == "img":
            self.images.append(attributes.get("src", ""))
        elif tag == "a":
            self.links.append(attributes.get("href", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._action = None


def parse(client: FlaskClient, path: str) -> Forms:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    assert "<script" not in response.get_data(as_text=True)
    page = Forms()
    page.feed(response.get_data(as_text=True))
    return page


def submit(client: FlaskClient, page_path: str, action: str, **fields: object):  # type: ignore[no-untyped-def]
    """Fill the form ``action`` found on ``page_path`` (keeping its hidden fields), post it."""
    form = parse(client, page_path).forms[action]
    data = {**form, **fields}
    return client.post(action, data=data, content_type="multipart/form-data")


@pytest.fixture
def web(tmp_path: Path) -> Web:
    return Web(tmp_path)


def sign_up(web: Web, username: str) -> FlaskClient:
    client = web.client()
    response = submit(client, "/signup", "/signup", username=username, password="password123")
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    return client


def test_the_whole_journey_in_html(web: Web) -> None:
    ada = sign_up(web, "ada")
    bob = sign_up(web, "bob")

    # Bob uploads through the form.
    response = submit(
        bob, "/upload", "/upload", photo=(io.BytesIO(png_bytes(120, 90)), "p.png"), caption="hi!"
    )
    assert response.status_code == 303
    photo_page = response.headers["Location"]
    assert photo_page.startswith("/photos/")
    page = bob.get(photo_page).get_data(as_text=True)
    assert "Photo uploaded" in page
    assert "hi!" in page
    assert "Delete this photo" in page

    # Ada follows Bob from his profile page, and his photo is in her feed.
    before = parse(ada, "/users/bob").forms
    assert "/users/bob/follow" in before
    assert "/users/bob/unfollow" not in before
    followed = submit(ada, "/users/bob", "/users/bob/follow")
    assert followed.status_code == 303
    assert "You follow bob now." in ada.get("/users/bob").get_data(as_text=True)
    after = parse(ada, "/users/bob").forms
    assert "/users/bob/unfollow" in after
    assert "/users/bob/follow" not in after
    feed = parse(ada, "/")
    assert len(feed.images) == 1
    thumbnail = feed.images[0]
    assert thumbnail.startswith("/media/")
    assert "thumb" in thumbnail
    original = next(link for link in feed.links if link.startswith("/media/"))
    assert ada.get(thumbnail).status_code == 200
    assert ada.get(original).status_code == 200
    assert "Delete this photo" not in ada.get(photo_page).get_data(as_text=True)

    # Unfollow empties the feed; Bob deletes; Ada logs out.
    submit(ada, "/users/bob", "/users/bob/unfollow")
    assert parse(ada, "/").images == []
    deleted = submit(bob, photo_page, f"{photo_page}/delete")
    assert deleted.status_code == 303
    assert bob.get(photo_page).status_code == 404
    logged_out = submit(ada, "/", "/logout")
    assert logged_out.status_code == 303
    assert ada.get("/").headers["Location"].startswith("/login")


def test_login_form_and_its_errors(web: Web) -> None:
    sign_up(web, "ada")
    client = web.client()
    redirected = client.get("/upload")
    assert redirected.status_code == 303
    assert redirected.headers["Location"] == "/login?next=/upload"
    wrong = submit(client, "/login?next=/upload", "/login", username="ada", password="nope-nope")
    assert wrong.status_code == 401
    assert "wrong username or password" in wrong.get_data(as_text=True)
    ok = submit(client, "/login?next=/upload", "/login", username="ada", password="password123")
    assert ok.status_code == 303
    assert ok.headers["Location"] == "/upload"
    # An open redirect is not possible.
    other = web.client()
    response = submit(
        other, "/login?next=//evil.example", "/login", username="ada", password="password123"
    )
    assert response.headers["Location"] == "/"


def test_sign_up_errors_are_shown_on_the_form(web: Web) -> None:
    sign_up(web, "ada")
    client = web.client()
    taken = submit(client, "/signup", "/signup", username="ada", password="password123")
    assert taken.status_code == 409
    assert "taken" in taken.get_data(as_text=True)
    bad = submit(client, "/signup", "/signup", username="A", password="password123")
    assert bad.status_code == 400
    assert "3 to 32 characters" in bad.get_data(as_text=True)


def test_upload_errors_are_shown_on_the_form(web: Web) -> None:
    client = sign_up(web, "ada")
    not_image = submit(client, "/upload", "/upload", photo=(io.BytesIO(b"text"), "a.png"))
    assert not_image.status_code == 415
    assert "not" in not_image.get_data(as_text=True).lower()
    missing = submit(client, "/upload", "/upload")
    assert missing.status_code == 400
    noisy = io.BytesIO(png_bytes(2, 2) + b"\0" * 200_001)  # over max_upload_bytes
    too_large = submit(client, "/upload", "/upload", photo=(noisy, "big.png"))
    assert too_large.status_code == 413
    assert "larger than" in too_large.get_data(as_text=True)
    huge = submit(client, "/upload", "/upload", photo=(io.BytesIO(b"\0" * 400_000), "x.png"))
    assert huge.status_code == 413  # refused from its Content-Length: an error page
    assert huge.content_type.startswith("text/html")


def test_following_yourself_or_nobody(web: Web) -> None:
    client = sign_up(web, "ada")
    page = client.get("/users/ada").get_data(as_text=True)
    assert "/users/ada/follow" not in page  # no button on your own profile
    form = parse(client, "/").forms["/logout"]
    response = client.post("/users/nobody/follow", data={"csrf_token": form["csrf_token"]})
    assert response.status_code == 404
    response = client.post("/users/ada/follow", data={"csrf_token": form["csrf_token"]})
    assert response.status_code == 303
    assert "cannot follow yourself" in client.get("/users/ada").get_data(as_text=True)


def test_pages_have_a_strict_content_security_policy(web: Web) -> None:
    response = web.client().get("/login")
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["X-Frame-Options"] == "DENY"
    assert re.search(r'name="csrf_token" value="[\w-]{43}"', response.get_data(as_text=True))


def test_feed_pages_link_to_older_photos(web: Web) -> None:
    ada = sign_up(web, "ada")
    bob, token = web.user("bob")
    for _ in range(6):
        Web.upload(bob, token)
    form = parse(ada, "/users/bob").forms["/users/bob/follow"]
    ada.post("/users/bob/follow", data=form)
    first = parse(ada, "/")
    assert len(first.images) == 5
    older = next(link for link in first.links if link.startswith("/?before="))
    second = parse(ada, older)
    assert len(second.images) == 1
    assert set(second.images).isdisjoint(first.images)
