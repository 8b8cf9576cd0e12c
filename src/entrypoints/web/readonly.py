"""The read-only switch of the web app: ``[deployment] read_only = true``.

While a deployment's data is being moved (``scalecore migrate``), the site keeps serving
every read and refuses every write, so nothing changes behind the copy's back:

* Every request with a method that changes state (POST, PUT, PATCH, DELETE) to a route of
  the site is refused before any view runs, with ``ReadOnly``: ``503`` code ``read_only``
  and a ``Retry-After`` header, as JSON for programs and as a notice page for browsers
  (the one error handler in :mod:`entrypoints.web.errors` renders both). That covers sign
  up, log in, upload, follow, unfollow and delete, on the API and on the HTML forms, and
  any route added later. An unknown route or a wrong method still gets its 404 or 405.
* Log in is refused too: it writes a new session, which a move of the session store could
  miss (the user would be logged out again at the switch) and which ``migrate --verify``
  would report as a difference.
* Log out is allowed (``POST /logout``, ``DELETE /api/session``): it clears the browser's
  cookie, so nobody is left logged in on a shared computer. The session record itself
  stays in the frozen store until it expires (see :mod:`entrypoints.web.sessions`).
* Sessions are not written at all: no TTL refresh, no flash messages saved.
* Every page shows a banner saying the site is read-only (the template global
  ``read_only``).
"""

from __future__ import annotations

import logging

from flask import Flask, request

from scalecore.errors import ReadOnly

__all__ = ["ALLOWED_WRITES", "RETRY_AFTER", "install_read_only"]

_log = logging.getLogger(__name__)

#: Seconds a refused client is told to wait (``Retry-After``): a final migration pass and
#: the switch to the new deployment take minutes, so a minute is a polite poll.
RETRY_AFTER = 60
#: Endpoints that answer a write method even on a read-only site: log out (cookie only).
ALLOWED_WRITES = frozenset({"pages.logout", "api.delete_session"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_MESSAGE = (
    "the site is read-only for maintenance (its data is being moved): reading works, "
    f"nothing was changed; try again in {RETRY_AFTER} seconds or a few minutes"
)


def _refuse_writes() -> None:
    if request.method in _SAFE_METHODS or request.routing_exception is not None:
        return
    if request.endpoint in ALLOWED_WRITES:
        return
    raise ReadOnly(_MESSAGE, retry_after=RETRY_AFTER)


def install_read_only(app: Flask, read_only: bool) -> None:
    """Make ``app`` refuse writes when ``read_only`` (install before the session hooks, so
    a refused request touches no session); set the ``read_only`` template global."""
    app.jinja_env.globals["read_only"] = read_only
    if read_only:
        _log.warning(
            "read-only deployment ([deployment] read_only = true): serving reads, "
            "answering writes with 503 and Retry-After: %d",
            RETRY_AFTER,
        )
        app.before_request(_refuse_writes)
