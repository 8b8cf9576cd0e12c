"""The HTML pages: a person signs up, logs in, uploads, follows and reads a feed, no JS."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from test_web_support import Web, png_bytes
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart


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


def Forms_of(html: str) -> Forms:
    page = Forms()
    page.feed(html)
    return page


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
    # Encoded here, in memory: the test client spools a large body to a file it never closes.
    values = {
        name: FileStorage(value[0], filename=value[1]) if isinstance(value, tuple) else value
        for name, value in {**form, **fields}.items()
    }
    boundary, body = encode_multipart(values)
    return client.post(action, data=body, content_type=f"multipart/form-data; boundary={boundary}")


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
    # The thumbnail opens the photo's page, which shows the original.
    assert photo_page in feed.links
    assert not any(link.startswith("/media/") for link in feed.links)
    original = next(src for src in parse(ada, photo_page).images if "original" in src)
    assert ada.get(thumbnail).status_code == 200
    assert ada.get(original).status_code == 200
    assert "Delete this photo" not in ada.get(photo_page).get_data(as_text=True)

    # Unfollow empties the feed; Bob deletes; Ada logs out.
    submit(ada, "/users/bob", "/users/bob/unfollow")
    assert parse(ada, "/").images == []
    # Deleting asks first: the photo page links to a confirmation page with the form.
    assert f"{photo_page}/delete" not in parse(bob, photo_page).forms
    assert f"{photo_page}/delete" in parse(bob, photo_page).links
    assert "for good" in bob.get(f"{photo_page}/delete").get_data(as_text=True)
    assert ada.get(f"{photo_page}/delete").status_code == 403
    deleted = submit(bob, f"{photo_page}/delete", f"{photo_page}/delete")
    assert deleted.status_code == 303
    assert deleted.headers["Location"] == "/users/bob"
    assert "Photo deleted." in bob.get("/users/bob").get_data(as_text=True)
    assert bob.get(photo_page).status_code == 404
    logged_out = submit(ada, "/", "/logout")
    assert logged_out.status_code == 303
    assert logged_out.headers["Location"] == "/login?logged_out=1"
    assert "You are logged out." in ada.get("/login?logged_out=1").get_data(as_text=True)
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
    too_large = submit(client, "/upload", "/upload", photo=(noisy, "big.png"), caption="mine")
    assert too_large.status_code == 413
    assert "too large: at most 195.3 KiB" in too_large.get_data(as_text=True)
    # Far over the limit (past the multipart allowance): still the form, with the caption.
    big = io.BytesIO(b"\0" * 2_000_000)
    huge = submit(client, "/upload", "/upload", photo=(big, "x.png"), caption="sunset")
    assert huge.status_code == 413
    assert huge.content_type.startswith("text/html")
    text = huge.get_data(as_text=True)
    assert "The photo is too large: at most 195.3 KiB" in text
    assert Forms_of(text).forms["/upload"]["caption"] == "sunset"
    # Any failed upload keeps the caption.
    for failed in (not_image, missing):
        assert failed.status_code in (400, 415)
    again = submit(client, "/upload", "/upload", photo=(io.BytesIO(b"x"), "a.png"), caption="kept")
    assert again.status_code == 415
    assert Forms_of(again.get_data(as_text=True)).forms["/upload"]["caption"] == "kept"
    assert "at most 195.3 KiB" in client.get("/upload").get_data(as_text=True)


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


def test_own_photos_show_in_ones_own_feed(web: Web) -> None:
    ada = sign_up(web, "ada")
    assert "Find people" in ada.get("/").get_data(as_text=True)
    for caption in ("one", "two"):
        form = parse(ada, "/upload").forms["/upload"]
        ada.post(
            "/upload",
            data={**form, "caption": caption, "photo": (io.BytesIO(png_bytes()), "p.png")},
        )
    feed = ada.get("/").get_data(as_text=True)
    assert "Nothing here yet" not in feed
    assert feed.index(">two<") < feed.index(">one<")
    assert " UTC</time>" in feed


def test_follower_counts_are_singular_and_plural(web: Web) -> None:
    ada = sign_up(web, "ada")
    bob = sign_up(web, "bob")
    assert re.search(
        r'id="followers">0</span> followers', ada.get("/users/bob").get_data(as_text=True)
    )
    ada.post("/users/bob/follow", data=parse(ada, "/users/bob").forms["/users/bob/follow"])
    assert re.search(
        r'id="followers">1</span> follower ', bob.get("/users/bob").get_data(as_text=True)
    )


def test_people_page_searches_by_prefix_and_lists_newcomers(web: Web) -> None:
    for name in ("anna", "andy", "bert", "ann_x"):
        sign_up(web, name)
    visitor = web.client()  # anonymous visitors may look too
    newest = parse(visitor, "/people")
    assert [link for link in newest.links if link.startswith("/users/")] == [
        "/users/ann_x", "/users/bert", "/users/andy", "/users/anna",
    ]  # fmt: skip
    found = parse(visitor, "/people?q=AN")
    assert [link for link in found.links if link.startswith("/users/")] == [
        "/users/andy", "/users/ann_x", "/users/anna",
    ]  # fmt: skip
    assert "/people" in parse(sign_up(web, "carl"), "/").links  # in the navigation
    bad = visitor.get("/people?q=no+spaces")
    assert bad.status_code == 400
    assert "start of a username" in bad.get_data(as_text=True)


def test_people_page_pages(web: Web) -> None:
    for i in range(23):
        sign_up(web, f"user{i:02d}")
    visitor = web.client()
    first = parse(visitor, "/people?q=user")
    assert len([link for link in first.links if link.startswith("/users/")]) == 20
    more = next(link for link in first.links if "after=" in link)
    assert more == "/people?q=user&after=user19"
    second = parse(visitor, more)
    assert [link for link in second.links if link.startswith("/users/")] == [
        "/users/user20", "/users/user21", "/users/user22",
    ]  # fmt: skip


def test_error_pages_keep_the_navigation_of_the_user(web: Web) -> None:
    ada = sign_up(web, "ada")
    missing = ada.get("/users/nobody_here", headers={"Accept": "text/html"})
    assert missing.status_code == 404
    page = Forms_of(missing.get_data(as_text=True))
    assert "/users/ada" in page.links
    assert "/logout" in page.forms
    anonymous = web.client().get("/nothing", headers={"Accept": "text/html"})
    assert "/login" in Forms_of(anonymous.get_data(as_text=True)).links
