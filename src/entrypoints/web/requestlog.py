"""Every request gets an id and one access log line.

The id is the client's ``X-Request-ID`` when it is well formed (8 to 128 letters, digits
and ``._:-``: a proxy in front may set it), else a new random one. It is current
(:mod:`scalecore.requestid`) while the request is handled, so every log line of the
request, and every bus message it publishes, carries it; the response returns it in
``X-Request-ID``.

The access line (logger ``scalecore.access``) holds method, path (never the query string:
signed URLs carry their signature there), status and duration, at INFO; probes of
``/healthz``, ``/readyz`` and ``/metrics`` are logged at DEBUG so they do not drown the rest.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from scalecore import requestid

__all__ = ["REQUEST_ID_HEADER", "install_request_log"]

REQUEST_ID_HEADER: Final = "X-Request-ID"
_PROBES: Final = frozenset({"/healthz", "/readyz", "/metrics"})

access_log = logging.getLogger("scalecore.access")


def install_request_log(app: Any) -> None:
    """Give every request of ``app`` an id and an access log line."""
    from flask import g, request

    def begin() -> None:
        chosen = requestid.parse(request.headers.get(REQUEST_ID_HEADER)) or requestid.new()
        g.sc_request_id = chosen
        g.sc_request_token = requestid.set_current(chosen)
        g.sc_request_started = time.perf_counter()

    def finish(response: Any) -> Any:
        chosen = g.get("sc_request_id")
        if chosen is not None:
            response.headers[REQUEST_ID_HEADER] = chosen
        started = g.get("sc_request_started")
        elapsed_ms = (time.perf_counter() - started) * 1000 if started is not None else 0.0
        level = logging.DEBUG if request.path in _PROBES else logging.INFO
        access_log.log(
            level,
            "%s %s %s %.1fms",
            request.method,
            request.path,
            response.status_code,
            elapsed_ms,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(elapsed_ms, 1),
            },
        )
        return response

    def end(_exc: BaseException | None) -> None:
        token = g.pop("sc_request_token", None)
        if token is not None:
            requestid.reset(token)

    # First of all: every line logged while the request is handled carries the id.
    app.before_request_funcs.setdefault(None, []).insert(0, begin)
    app.after_request(finish)
    app.teardown_request(end)
