"""The one place errors become HTTP responses.

The scalecore error tree maps to statuses here and nowhere else::

    InvalidInput            400 invalid_input   (InvalidKey 400 invalid_key)
      TooLarge              413 too_large
      UnsupportedMediaType  415 unsupported_media_type
    AuthenticationFailed    401 authentication_failed
    PermissionDenied        403 permission_denied
    NotFound                404 not_found
    Conflict                409 conflict
    UnsupportedOperation    501 unsupported_operation
    BackendUnavailable      503 backend_unavailable
      ReadOnly              503 read_only       (the deployment is read-only for now)
      ShardMoved            503 backend_unavailable (a logical shard is moving)

Every 503 carries ``Retry-After``: the error's ``retry_after`` in whole seconds (rounded
up), else 1.
    anything else           500 internal_error (logged; the message says nothing more)

Flask's and Werkzeug's own HTTP errors (unknown route 404, wrong method 405, body over
``MAX_CONTENT_LENGTH`` 413, unparsable request 400) take the same shape. JSON clients (every
path under ``/api``, ``/media``, the health and metrics endpoints, and any client that
prefers JSON) get ``{"error": {"code": str, "message": str}}``; browsers get an HTML page.
An error that carries ``retry_after`` seconds (``ReadOnly``) adds a ``Retry-After`` header.
"""

from __future__ import annotations

import logging
import math
import re

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from scalecore.errors import (
    AuthenticationFailed,
    BackendUnavailable,
    Conflict,
    InvalidInput,
    InvalidKey,
    NotFound,
    PermissionDenied,
    ReadOnly,
    ScalecoreError,
    TooLarge,
    UnsupportedMediaType,
    UnsupportedOperation,
)
from scalecore.validate import is_number

__all__ = ["ApiError", "error_response", "install_error_handlers", "status_for", "wants_json"]

_log = logging.getLogger(__name__)

#: Most specific first: the first class an error is an instance of decides.
_STATUSES: tuple[tuple[type[ScalecoreError], int, str], ...] = (
    (TooLarge, 413, "too_large"),
    (UnsupportedMediaType, 415, "unsupported_media_type"),
    (InvalidKey, 400, "invalid_key"),
    (InvalidInput, 400, "invalid_input"),
    (AuthenticationFailed, 401, "authentication_failed"),
    (PermissionDenied, 403, "permission_denied"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (UnsupportedOperation, 501, "unsupported_operation"),
    (ReadOnly, 503, "read_only"),
    (BackendUnavailable, 503, "backend_unavailable"),
)

_JSON_PREFIXES = ("/api/", "/media/")
_JSON_PATHS = frozenset({"/api", "/healthz", "/readyz", "/metrics"})


class ApiError(Exception):
    """An HTTP error the web layer raises itself, with its own status and code (e.g. CSRF)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def status_for(error: ScalecoreError) -> tuple[int, str]:
    """The HTTP status and error code for a scalecore error (500 for unmapped ones)."""
    for kind, status, code in _STATUSES:
        if isinstance(error, kind):
            return status, code
    return 500, "internal_error"


def wants_json() -> bool:
    """Whether this request's error should be JSON rather than an HTML page."""
    path = request.path
    if path in _JSON_PATHS or path.startswith(_JSON_PREFIXES):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def _code_for_http(error: HTTPException) -> str:
    name = error.name or "error"
    code = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return {"request_entity_too_large": "too_large", "content_too_large": "too_large"}.get(
        code, code
    )


def error_response(status: int, code: str, message: str) -> Response:
    """A JSON or HTML error response, whichever the client should get (see ``wants_json``)."""
    if wants_json():
        response = jsonify({"error": {"code": code, "message": message}})
    else:
        response = Response(
            render_template("error.html", status=status, code=code, message=message),
            mimetype="text/html",
        )
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _scalecore_error(error: ScalecoreError) -> Response:
    status, code = status_for(error)
    if status >= 500 and status != 503:
        _log.error("unexpected %s on %s %s", type(error).__name__, request.method, request.path)
        return error_response(status, code, "internal error")
    if status == 503 and not isinstance(error, ReadOnly):  # a refusal by design is no outage
        _log.warning("backend unavailable on %s %s: %s", request.method, request.path, error)
    message = " ".join(str(error).split()) or code.replace("_", " ")
    response = error_response(status, code, message)
    if status == 503:
        # A retry will likely succeed (read-only for now, a backend restarting, a logical
        # shard moving).
        retry_after = getattr(error, "retry_after", None)
        if not is_number(retry_after):
            retry_after = 1
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if status == 401 and request.path.startswith("/api/"):
        response.headers["WWW-Authenticate"] = 'Cookie realm="scalecore", cookie="sc_session"'
    return response


def _api_error(error: ApiError) -> Response:
    return error_response(error.status, error.code, error.message)


def _http_error(error: HTTPException) -> Response | HTTPException:
    if error.code is None or error.code < 400:
        return error  # redirects and the like are not errors
    message = error.description or ""
    if error.code == 413:
        from entrypoints.web.state import state
        from scalecore.photofeed.service import too_large_message

        message = too_large_message(state().max_upload_bytes)
    response = error_response(error.code, _code_for_http(error), message)
    allowed = getattr(error, "valid_methods", None)  # only MethodNotAllowed has it
    if error.code == 405 and allowed:
        response.headers["Allow"] = ", ".join(sorted(allowed))
    return response


def _unexpected(error: Exception) -> Response:
    # Logged with its traceback for the operator; the client learns nothing about it.
    _log.exception("unhandled error on %s %s", request.method, request.path, exc_info=error)
    return error_response(500, "internal_error", "internal error")


def install_error_handlers(app: Flask) -> None:
    """Register the handlers on ``app``; every error response then has the shapes above."""
    app.register_error_handler(ScalecoreError, _scalecore_error)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
