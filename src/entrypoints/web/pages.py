"""HTML pages for a person: plain forms and links, no JavaScript needed.

Every form posts back with the CSRF token in a hidden field; a failed action re-renders
its form with the error and the status the API would give, a successful one redirects
(post/redirect/get) with a flash message.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

from flask import Blueprint, Response, g, redirect, render_template, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response as BaseResponse

from entrypoints.web.api import read_upload
from entrypoints.web.drain import drain_limit
from entrypoints.web.errors import status_for
from entrypoints.web.sessions import current_user_id, flash, log_in, log_out, pop_flashes
from entrypoints.web.state import state
from scalecore.errors import NotFound, ScalecoreError
from scalecore.photofeed.service import size_text, too_large_message

__all__ = ["allow_large_upload_pages", "pages"]

pages = Blueprint("pages", __name__)


def _me() -> Any:
    """The logged-in user (for the navigation bar), once per request; ``None`` if none."""
    if "sc_me" not in g:
        user_id = current_user_id()
        me = None
        if user_id is not None:
            try:
                me = state().service.get_user(user_id)
            except ScalecoreError:  # unknown, or its store is down: render as logged out
                me = None
        g.sc_me = me
    return g.sc_me


@pages.app_context_processor
def _navigation() -> dict[str, Any]:
    # Every HTML page, error pages included, shows the navigation of the user logged in.
    return {"me": _me(), "size_text": size_text}


def allow_large_upload_pages() -> None:
    """Let the upload page read a body over the upload limit (up to the drain limit) so it
    can answer with the form and the caption typed. Runs before the CSRF check, which
    parses the form; the service still refuses the photo by its size."""
    if request.method == "POST" and request.path == "/upload":
        request.max_content_length = drain_limit(state().max_upload_bytes)


def _page(template: str, status: int = 200, **context: Any) -> BaseResponse:
    errors = context.pop("errors", [])
    response = Response(
        render_template(
            template,
            flashes=pop_flashes() + [{"category": "error", "message": e} for e in errors],
            **context,
        ),
        status=status,
        mimetype="text/html",
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _login_redirect() -> BaseResponse:
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


def _sentence(message: str) -> str:
    """``message`` as a sentence for a page: capitalised, with a full stop."""
    text = message[:1].upper() + message[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


@pages.get("/")
def home() -> BaseResponse:
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
def signup() -> BaseResponse:
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
def login() -> BaseResponse:
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        notice = "You are logged out." if request.args.get("logged_out") == "1" else None
        return _page("login.html", next=target, notice=notice)
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
def logout() -> BaseResponse:
    log_out()
    # The session is gone, so no flash can carry the notice: the URL does.
    return redirect("/login?logged_out=1", code=303)


@pages.route("/upload", methods=["GET", "POST"])
def upload() -> BaseResponse:
    user_id = current_user_id()
    if user_id is None:
        return _login_redirect()
    limit = state().max_upload_bytes
    if request.method == "GET":
        return _page("upload.html", limit=limit)
    try:
        photo_file, caption, size = read_upload()
    except RequestEntityTooLarge:
        return _page("upload.html", 413, limit=limit, errors=[_sentence(too_large_message(limit))])
    except ScalecoreError as exc:
        status, _ = status_for(exc)
        if status >= 500:
            raise
        caption = request.form.get("caption", "")
        return _page("upload.html", status, limit=limit, caption=caption, errors=[_message(exc)])
    try:
        photo = state().service.upload_photo(
            user_id, photo_file.stream, caption=caption, content_length=size
        )
    except ScalecoreError as exc:
        status, _ = status_for(exc)
        if status >= 500:
            raise
        message = _message(exc)
        return _page(
            "upload.html", status, limit=limit, caption=caption, errors=[_sentence(message)]
        )
    flash("Photo uploaded: your followers will see it in their feeds shortly.")
    return redirect(f"/photos/{quote(photo.id)}", code=303)


@pages.get("/users/<username>")
def profile(username: str) -> BaseResponse:
    service = state().service
    profile = service.profile(username)
    user_id = current_user_id()
    following = False
    if user_id is not None and user_id != profile.user.id:
        following = service.is_following(user_id, profile.user.username)
    return _page("profile.html", profile=profile, following=following)


@pages.post("/users/<username>/follow")
def follow(username: str) -> BaseResponse:
    return _follow_action(username, follow=True)


@pages.post("/users/<username>/unfollow")
def unfollow(username: str) -> BaseResponse:
    return _follow_action(username, follow=False)


def _follow_action(username: str, *, follow: bool) -> BaseResponse:
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
def photo(photo_id: str) -> BaseResponse:
    return _page("photo.html", photo=state().service.get_photo(photo_id))


@pages.route("/photos/<photo_id>/delete", methods=["GET", "POST"])
def delete_photo(photo_id: str) -> BaseResponse:
    user_id = current_user_id()
    if user_id is None:
        return _login_redirect()
    service = state().service
    if request.method == "GET":  # ask first: deleting is for good
        photo = service.get_photo(photo_id)
        if photo.owner_id != user_id:
            return _page(
                "photo.html", 403, photo=photo, errors=["Only its owner may delete a photo."]
            )
        return _page("delete.html", photo=photo)
    service.delete_photo(user_id, photo_id)
    flash("Photo deleted.")
    return redirect(f"/users/{quote(service.get_user(user_id).username)}", code=303)


@pages.get("/people")
def people() -> BaseResponse:
    query = request.args.get("q", "")
    after = request.args.get("after")
    try:
        page = state().service.find_people(query, after=after)
    except ScalecoreError as exc:
        status, _ = status_for(exc)
        if status >= 500:
            raise
        return _page(
            "people.html", status, q=query, users=(), next_cursor=None, errors=[_message(exc)]
        )
    return _page(
        "people.html", q=query.strip().lower(), users=page.items, next_cursor=page.next_cursor
    )
