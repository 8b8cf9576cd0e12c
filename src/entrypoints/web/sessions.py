"""Server-side sessions over the SessionStore port, and CSRF protection.

The browser holds only the session id, in the cookie ``sc_session`` (HttpOnly, SameSite=Lax,
Secure when ``[web] secure_cookies``). Everything else (the user id, the CSRF token, flash
messages) lives in the SessionStore, so any web process of a fleet can serve any request
when the store is SHARED.

Promises:

* A cookie that is malformed, forged, expired or deleted is treated as no session (and
  cleared); it never causes an error.
* Logging in moves the session to a fresh id (``SessionStore.rotate``), so an id planted
  before login is useless afterwards; logging out deletes the session from the store.
* Every state-changing request (not GET, HEAD, OPTIONS) that comes with a live session must
  carry the session's CSRF token in the ``X-CSRF-Token`` header or in the form field
  ``csrf_token``; otherwise it is refused with 403 ``csrf_failed`` before any view runs.
* Forms posted without a session (sign up, log in) must carry the token of a double-submit
  cookie ``sc_csrf`` instead, so another site cannot log a browser into its own account.
  JSON requests without a session need ``Content-Type: application/json``, which a
  cross-site form cannot send.
* Session ids never appear in logs or error messages.
* On a read-only deployment (``[deployment] read_only``) nothing is written to the store:
  sessions are read, never saved or refreshed, and logging out only clears the cookie
  (the record expires on its own), so the store holds still while it is being moved.
"""

from __future__ import annotations

import hmac
import logging
import secrets

from flask import Flask, Response, g, request

from entrypoints.web.errors import ApiError, error_response, status_for
from entrypoints.web.state import state
from scalecore.errors import AuthenticationFailed, NotFound, ScalecoreError
from scalecore.ports.sessions import Session, is_valid_session_id

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "FORM_COOKIE",
    "SESSION_COOKIE",
    "csrf_token",
    "current_user_id",
    "flash",
    "install_sessions",
    "log_in",
    "log_out",
    "pop_flashes",
    "require_user_id",
]

_log = logging.getLogger(__name__)

SESSION_COOKIE = "sc_session"
FORM_COOKIE = "sc_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_USER_KEY = "user_id"
_CSRF_KEY = "csrf"
_FLASH_KEY = "flash"
#: Paths exempt from the anonymous double-submit check: JSON APIs defend by content type.
_API_PREFIX = "/api/"
#: Public, cacheable or operational paths: no session is loaded (no store round trip per
#: image, and no ``Vary: Cookie`` to spoil a CDN's cache). All of them are read-only.
_SESSIONLESS_PREFIXES = ("/media/", "/static/")
_SESSIONLESS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def _current_session() -> Session | None:
    session: Session | None = g.get("sc_session")
    return session


def current_user_id() -> str | None:
    """The logged-in user's id, or ``None``."""
    session = _current_session()
    if session is None:
        return None
    user_id = session.get(_USER_KEY)
    return user_id if isinstance(user_id, str) else None


def require_user_id() -> str:
    """The logged-in user's id; raise ``AuthenticationFailed`` (401) without one."""
    user_id = current_user_id()
    if user_id is None:
        raise AuthenticationFailed("log in first: this needs a session")
    return user_id


def csrf_token() -> str:
    """The token a form or script must send back: the session's, or the form cookie's."""
    session = _current_session()
    if session is not None:
        token = session.get(_CSRF_KEY)
        if isinstance(token, str):
            return token
        token = secrets.token_urlsafe(32)
        session[_CSRF_KEY] = token
        return token
    token = g.get("sc_form_token")
    if token is None:
        existing = request.cookies.get(FORM_COOKIE, "")
        token = existing if _looks_like_token(existing) else secrets.token_urlsafe(32)
        g.sc_form_token = token
        if token != existing:
            g.sc_set_form_cookie = True
    return str(token)


def _looks_like_token(value: str) -> bool:
    return 32 <= len(value) <= 64 and all(c.isalnum() or c in "-_" for c in value)


def log_in(user_id: str) -> str:
    """Start an authenticated session for ``user_id`` on a fresh id; return its CSRF token."""
    store = state().sessions
    old = _current_session()
    session: Session | None = None
    if old is not None:
        try:
            session = store.rotate(old)
        except NotFound:
            session = None
    if session is None:
        session = store.create({})
    token = secrets.token_urlsafe(32)
    session[_USER_KEY] = user_id
    session[_CSRF_KEY] = token
    store.save(session)
    g.sc_session = session
    g.sc_cookie_action = "set"
    return token


def log_out() -> None:
    """Delete the session from the store and clear the cookie. Idempotent."""
    session = _current_session()
    if session is not None and not state().read_only:
        state().sessions.delete(session.id)
    g.sc_session = None
    g.sc_cookie_action = "clear"


def flash(message: str, category: str = "info") -> None:
    """Keep a message for the next page this session renders (no-op without a session)."""
    session = _current_session()
    if session is None:
        return
    pending = session.get(_FLASH_KEY)
    messages = list(pending) if isinstance(pending, list) else []
    messages.append({"category": category, "message": message})
    session[_FLASH_KEY] = messages[-5:]


def pop_flashes() -> list[dict[str, str]]:
    """The session's pending flash messages, removing them."""
    session = _current_session()
    if session is None or _FLASH_KEY not in session:
        return []
    pending = session.pop(_FLASH_KEY)
    if not isinstance(pending, list):
        return []
    return [
        {"category": str(item.get("category", "info")), "message": str(item.get("message", ""))}
        for item in pending
        if isinstance(item, dict)
    ]


def _load_session() -> None:
    g.sc_session = None
    g.sc_cookie_action = None
    if request.path in _SESSIONLESS_PATHS or request.path.startswith(_SESSIONLESS_PREFIXES):
        return
    raw = request.cookies.get(SESSION_COOKIE)
    if raw is None:
        return
    session = state().sessions.load(raw) if is_valid_session_id(raw) else None
    if session is None:
        g.sc_cookie_action = "clear"  # forged, malformed or expired: forget it
        return
    g.sc_session = session


def _check_csrf() -> None:
    if request.method in _SAFE_METHODS or request.routing_exception is not None:
        # An unknown route (404) or method (405) changes nothing: let routing answer it.
        return
    session = _current_session()
    if session is not None:
        expected = session.get(_CSRF_KEY)
        sent = request.headers.get(CSRF_HEADER) or _form_token()
        if not isinstance(expected, str) or not sent or not _same(sent, expected):
            raise ApiError(
                403,
                "csrf_failed",
                f"this request needs the session's CSRF token in the {CSRF_HEADER} header "
                f"or the {CSRF_FIELD} form field",
            )
        return
    if request.path.startswith(_API_PREFIX):
        return  # anonymous JSON calls: the views demand application/json
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        cookie = request.cookies.get(FORM_COOKIE, "")
        sent = _form_token()
        if not cookie or not sent or not _same(sent, cookie):
            raise ApiError(
                403, "csrf_failed", "the form expired or came from another site; reload it"
            )


def _form_token() -> str:
    if request.mimetype not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return ""
    value = request.form.get(CSRF_FIELD, "")
    return value if isinstance(value, str) else ""


def _same(sent: str, expected: str) -> bool:
    return hmac.compare_digest(sent.encode("utf-8", "replace"), expected.encode("utf-8"))


def _one_line(error: ScalecoreError) -> str:
    return " ".join(str(error).split())


def _save_session(response: Response) -> Response:
    web_state = state()
    session = _current_session()
    action = g.get("sc_cookie_action")
    frozen = web_state.read_only  # a store being moved is not written
    if session is not None and not frozen and (session.modified or _needs_touch(session)):
        try:
            web_state.sessions.save(session)
        except NotFound:
            # Deleted meanwhile (logged out in another tab, or purged): forget it.
            action = "clear"
            session = None
        except ScalecoreError as exc:
            # The view's work is done; only the session write failed (store down, or too
            # many concurrent writers). Say so instead of pretending success or a 500.
            _log.warning("could not save a session: %s", type(exc).__name__)
            return error_response(*status_for(exc), _one_line(exc))
    secure = web_state.secure_cookies
    if action == "set" and session is not None:
        response.set_cookie(
            SESSION_COOKIE,
            session.id,
            httponly=True,
            samesite="Lax",
            secure=secure,
            path="/",
        )
    elif action == "clear":
        response.delete_cookie(
            SESSION_COOKIE, httponly=True, samesite="Lax", secure=secure, path="/"
        )
    if g.get("sc_set_form_cookie"):
        response.set_cookie(
            FORM_COOKIE,
            str(g.get("sc_form_token")),
            httponly=True,
            samesite="Lax",
            secure=secure,
            path="/",
        )
    if session is not None or action is not None:
        response.vary.add("Cookie")
    return response


def _needs_touch(session: Session) -> bool:
    """Restart the TTL of a session used after half its lifetime, not on every request."""
    web_state = state()
    return session.expires_at - web_state.clock.now() < web_state.sessions.ttl / 2


def install_sessions(app: Flask) -> None:
    """Load the session before every request, check CSRF, and save it after."""
    app.before_request(_load_session)
    app.before_request(_check_csrf)
    app.after_request(_save_session)
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.globals["csrf_field"] = CSRF_FIELD
