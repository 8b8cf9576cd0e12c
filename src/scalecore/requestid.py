"""The id of the request a piece of work belongs to, carried across threads and the bus.

A web request takes the id its client sent (``X-Request-ID``) when it is well formed, or
gets a new one; every log line written while it is handled carries it, and every bus
message published meanwhile carries it in the :data:`HEADER` header, so the worker that
handles the message (and logs under the same id) can be traced back to the request.

The current id lives in a :class:`contextvars.ContextVar`: each thread, and each task, sees
its own. Nothing here does I/O.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import uuid
from collections.abc import Iterator
from typing import Final

__all__ = ["HEADER", "bind", "current", "new", "parse", "reset", "set_current"]

#: The bus message header (and, capitalised, the HTTP header) that carries the id.
HEADER: Final = "x-request-id"
#: Ids we accept from a client: 8 to 128 characters of letters, digits and ``._:-``
#: (enough for UUIDs and the ids of common proxies, and safe in any log format).
_WELL_FORMED: Final = re.compile(r"[A-Za-z0-9._:-]{8,128}")

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "scalecore_request_id", default=None
)


def new() -> str:
    """A fresh random id (32 hex digits)."""
    return uuid.uuid4().hex


def parse(value: object) -> str | None:
    """``value`` if it is a well-formed id, else ``None`` (never raises)."""
    if isinstance(value, str) and _WELL_FORMED.fullmatch(value):
        return value
    return None


def current() -> str | None:
    """The id of the work this thread is doing, or ``None`` outside any request."""
    return _current.get()


@contextlib.contextmanager
def bind(request_id: str | None) -> Iterator[str | None]:
    """Make ``request_id`` current inside the block (``None`` clears it), then restore."""
    token = _current.set(request_id)
    try:
        yield request_id
    finally:
        _current.reset(token)


def set_current(request_id: str | None) -> contextvars.Token[str | None]:
    """Make ``request_id`` current until :func:`reset` is called with the returned token
    (for frameworks whose start and end of a request are separate callbacks)."""
    return _current.set(request_id)


def reset(token: contextvars.Token[str | None]) -> None:
    """Undo the :func:`set_current` that returned ``token``."""
    _current.reset(token)
