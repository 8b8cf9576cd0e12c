"""HTML pages for a person: plain forms and links, no JavaScript needed.

Every form posts back with the CSRF token in a hidden field; a failed action re-renders
its form with the error and the status the API would give, a successful one redirects
(post/redirect/get) with a flash message.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

from flask import Blueprint, Response, redirect, render_template, request

from entrypoints.web.api import read_upload
from entrypoints.web.errors import status_for
from entrypoints.web.sessions import current_user_id, flash, log_in, log_out, pop_flashes
from entrypoints.web.state import state
from scalecore.errors import NotFound, ScalecoreError

__all__ = ["pages"]

pages = Blueprint("pages", __name__)


def _page(template: str, status: int = 200, **context: Any) -> Response:
    user_id = current_user_id()
    me = None
    if user_id is not None:
        try:
            me = state().service.get_user(user_id)
        except NotFound:
            me = None
    errors = context.pop("errors", [])
    response = Response(
        render_template(
            template,
            me=me,
            flashes=pop_flashes() + [{"category": "error", "message": e} for e in errors],
            **context,
        ),
        status=status,
        mimetype="text/html",
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _login_redirect() -> Response:
    return redirect("/login?next=" + quote(request.full_path.rstrip("?"), safe="/"), code=303)


def _safe_next(target: str | None) -> str:
    """``target`` if it is a path on this site, else ``/``.

    An open redirect after login would be a phishing tool. Browsers drop tabs and newlines
    from URLs and read ``\\`` as ``/``, so any whitespace, control character or backslash
    disqualifies a target, as does anything with a scheme or a host.
    """
    if not target or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in target):
        return "/"
    split = urlsplit(target)
    if split.scheme or split.netloc or "\\" in target or not target.startswith("/"):
        return "/"
    if target.startswith("//"):
        return "/"
    return target


def _message(error: ScalecoreError) -> str:
    return " ".join(str(error).split())


@pages.get("/")
def home() -> Response:
    user_id = current_user_id()
    if user_id is None:
        return _login_redirect()
    before = request.args.get("before")
    try:
        page = state().service.feed(user_id, before=before)
    except ScalecoreError as exc:
        status, _ = status_for(exc)
        if status >= 500:
            raise
        return _page("feed.html", status, photos=[], next_cursor=None, errors=[_message(exc)])
    return _page("feed.html", photos=page.items, next_cursor=page.next_cursor)


@pages.route("/signup", methods=["GET", "POST"])
def signup() -> Response:
    if request.method == "GET":
        return _page("signup.html")
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    service = state().service
    try:
        user = service.sign_up(username, password)
    except ScalecoreError as exc:
        status, _ = status_for(exc)
        if status >= 500:
            raise
        return _page("signup.html", status, username=username, errors=[_message(exc)])
    log_in(user.id)
    flash(f"Welcome, {user.username}! Follow someone to fill your feed.")
    return redirect("/", code=303)


@pages.route("/login", methods=["GET", "POST"])
def login() -> Response:
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        return _page("login.html", next=target)
    username = request.form.get("username", "")
    try:
        user = state().service.authenticate(username, request.form.get("password", ""))
    except ScalecoreError as exc:
        status, _ = status_for(exc)
        if status >= 500:
            raise
        return _page("login.html", status, username=username, next=target, errors=[_message(exc)])
    log_in(user.id)
    return redirect(target, code=303)


@pages.post("/logout")
def logout() -> Response:
    log_out()
    return redirect("/login", code=303)


@pages.route("/upload", methods=["GET", "POST"])
def upload() -> Response:
    user_id = current_user_id()
    if user_id is None:
        return _login_redirect()
    if request.method == "GET":
        return _page("upload.html")
    try:
        photo_file, caption, size = read_upload()
        photo = state().service.upload_photo(
            user_id, photo_file.stream, caption=caption, content_length=size
        )
    except ScalecoreError as exc:
        status, _ = status_for(exc)
        if status >= 500:
            raise
        return _page("upload.html", status, errors=[_message(exc)])
    flash("Photo uploaded: your followers will see it in their feeds shortly.")
    return redirect(f"/photos/{quote(photo.id)}", code=303)


@pages.get("/users/<username>")
def profile(username: str) -> Response:
    service = state().service
    profile = service.profile(username)
    user_id = current_user_id()
    following = False
    if user_id is not None and user_id != profile.user.id:
        following = service.is_following(user_id, profile.user.username)
    return _page("profile.html", profile=profile, following=following)


@pages.post("/users/<username>/follow")
def follow(username: str) -> Response:
    return _follow_action(username, follow=True)


@pages.post("/users/<username>/unfollow")
def unfollow(username: str) -> Response:
    return _follow_action(username, follow=False)


def _follow_action(username: str, *, follow: bool) -> Response:
    user_id = current_user_id()
    if user_id is None:
        return _login_redirect()
    service = state().service
    try:
        if follow:
            service.follow(user_id, username)
            flash(f"You follow {username} now.")
        else:
            service.unfollow(user_id, username)
            flash(f"You no longer follow {username}.")
    except NotFound:
        raise
    except ScalecoreError as exc:
        status, _ = status_for(exc)
        if status >= 500:
            raise
        flash(_message(exc), "error")
    return redirect(f"/users/{quote(username)}", code=303)


@pages.get("/photos/<photo_id>")
def photo(photo_id: str) -> Response:
    return _page("photo.html", photo=state().service.get_photo(photo_id))


@pages.post("/photos/<photo_id>/delete")
def delete_photo(photo_id: str) -> Response:
    user_id = current_user_id()
    if user_id is None:
        return _login_redirect()
    state().service.delete_photo(user_id, photo_id)
    flash("Photo deleted.")
    return redirect("/", code=303)
