"""Read what is left of a request body before answering, so every client sees the answer.

A server that answers early (a 413 for a body over the limit, a 403, a 415) and closes the
connection while the client is still sending makes the client's kernel see unread data
and reset the connection: Python's urllib gets a broken pipe, a browser a "connection
reset" page, and neither sees the answer. :class:`DrainRequestBody` wraps the WSGI app
and, when a response is about to start while part of the body is unread, reads and
discards that part first, bounded in bytes and in time. A body whose rest is larger than
the bound, a client that stops sending for ``idle_seconds`` (one that sent the headers and
never the body), or one too slow to finish within ``max_seconds``, gets the answer with
``Connection: close`` instead (it may then still see a reset; nothing better is possible
without reading it).

Under gunicorn the ``Connection: close`` is dropped (it decides itself): it then tries a
small bounded drain of its own and closes the connection.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "DRAIN_IDLE_SECONDS",
    "DRAIN_MIN_BYTES",
    "DRAIN_SECONDS",
    "DrainRequestBody",
    "drain_limit",
]

_CHUNK = 64 * 1024
#: Unread bodies up to this size (or 8 times the upload limit, if larger) are read before
#: an early answer, for up to DRAIN_SECONDS.
DRAIN_MIN_BYTES = 64 * 1024 * 1024
DRAIN_SECONDS = 60.0
#: A client that sends nothing for this long is answered without waiting for the rest.
DRAIN_IDLE_SECONDS = 5.0


def drain_limit(max_upload_bytes: int) -> int:
    """How much unread body is read before answering: enough for an upload several times
    over the limit (a 60 MiB photo against the 10 MiB default) and its form fields."""
    return max(8 * max_upload_bytes, DRAIN_MIN_BYTES) + 64 * 1024


class _CountingInput:
    """``wsgi.input`` that counts the bytes the app read through it."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.consumed = 0
        self.exhausted = False

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._stream.read(size) if size is not None else self._stream.read()
        self.consumed += len(data)
        if not data or size is None or size < 0:
            self.exhausted = True
        return data

    def readline(self, size: int = -1) -> bytes:
        data: bytes = self._stream.readline(size)
        self.consumed += len(data)
        if not data:
            self.exhausted = True
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = self._stream.readlines(hint)
        self.consumed += sum(len(line) for line in lines)
        return lines

    def __iter__(self) -> Any:
        return iter(self.readline, b"")


class DrainRequestBody:
    """WSGI middleware: drain up to ``max_bytes`` of unread request body, for at most
    ``max_seconds`` and while the client keeps sending (``idle_seconds``), before the
    response starts; add ``Connection: close`` when it cannot. Only bodies of known length
    (``Content-Length``) or that the server marks as terminated (``wsgi.input_terminated``,
    for chunked bodies) are drained."""

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        *,
        max_bytes: int,
        max_seconds: float = DRAIN_SECONDS,
        idle_seconds: float = DRAIN_IDLE_SECONDS,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.idle_seconds = idle_seconds

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        stream = environ.get("wsgi.input")
        if stream is None:
            return self.app(environ, start_response)
        counting = _CountingInput(stream)
        environ["wsgi.input"] = counting
        length = _content_length(environ)

        def drain_then_start(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            if not self._drain(counting, length, environ):
                headers = [(k, v) for k, v in headers if k.lower() != "connection"]
                headers.append(("Connection", "close"))
            return start_response(status, headers, *exc_info)

        return self.app(environ, drain_then_start)

    def _drain(self, counting: _CountingInput, length: int | None, environ: dict[str, Any]) -> bool:
        """Read the rest of the body; return whether all of it was read."""
        if counting.exhausted:
            return True
        if length is None:
            if not environ.get("wsgi.input_terminated"):
                return True  # no body we could know the end of (and none was sent)
            remaining = self.max_bytes + 1
        else:
            remaining = length - counting.consumed
            if remaining <= 0:
                return True
            if remaining > self.max_bytes:
                return False
        # The server's socket, when it tells us (gunicorn, werkzeug): a read timeout on it
        # is what notices a client gone silent. Without one, only the total time is bound,
        # checked between reads.
        sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
        prior = _timeout_of(sock)
        deadline = time.monotonic() + self.max_seconds
        try:
            _set_timeout(sock, self.idle_seconds)
            while remaining > 0:
                if time.monotonic() > deadline:
                    return False
                data = counting.read(min(_CHUNK, remaining))
                if not data:
                    return True
                remaining -= len(data)
        except (OSError, ValueError):  # silent past idle_seconds, or gone mid-body
            return False
        finally:
            _set_timeout(sock, prior)
        return length is not None  # a chunked body still going past the bound is not read


def _timeout_of(sock: Any) -> Any:
    try:
        return sock.gettimeout() if sock is not None else None
    except (AttributeError, OSError):
        return None


def _set_timeout(sock: Any, value: Any) -> None:
    if sock is None:
        return
    with contextlib.suppress(AttributeError, OSError):
        sock.settimeout(value)


def _content_length(environ: dict[str, Any]) -> int | None:
    raw = environ.get("CONTENT_LENGTH", "")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        return None
    return value if value >= 0 else None
