"""The OpenAPI 3.1 description of the HTTP API, served at ``/api/openapi.json``.

``docs/openapi.json`` is this document written out by :func:`render`::

    python -c "from entrypoints.web.openapi import render; print(render(), end='')" \
        > docs/openapi.json

A test keeps the two equal and checks that every route of the app is described and every
described route exists.
"""

from __future__ import annotations

import copy
import json
from typing import Any

__all__ = ["openapi_document"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_E400 = {"400": _error("Invalid input (the message says which)")}
_E401 = {"401": _error("No valid session")}
_E403_CSRF = {"403": _error("Missing or wrong X-CSRF-Token (csrf_failed)")}
_E404 = {"404": _error("Not found")}
_E413_JSON = {"413": _error("A JSON body over 64 KiB (too_large)")}
_E415_JSON = {"415": _error("The body is not application/json")}
_E503 = {"503": _error("A backend is unavailable; retry later")}
#: For the operations that change state: also refused while the deployment is read-only.
_E503_WRITE = {
    "503": {
        **_error(
            "A backend is unavailable, or the deployment is read-only for maintenance "
            "(code read_only, nothing changed); retry after Retry-After seconds"
        ),
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before retrying (sent with read_only)",
                "schema": {"type": "integer", "minimum": 0},
            }
        },
    }
}

_USERNAME = {
    "name": "username",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[a-z0-9_]{3,32}$"},
}
_PHOTO_ID = {"name": "photo_id", "in": "path", "required": True, "schema": {"type": "string"}}
#: An opaque cursor: what a page's ``next`` held (URL-safe base64).
_CURSOR = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9_-]+$"}
#: A blob key as every store accepts it: relative ``/``-separated segments of printable
#: text, none empty, ``.`` or ``..``, no backslash, at most 1024 UTF-8 bytes.
_BLOB_KEY = {
    "type": "string",
    "minLength": 1,
    "maxLength": 1024,
    "pattern": r"^(?!\.\.?(/|$))(?!.*/\.\.?(/|$))[^/\x00-\x1f\x7f\\]+(/[^/\x00-\x1f\x7f\\]+)*$",
}
_CSRF: list[dict[str, list[str]]] = [{"sessionCookie": [], "csrfToken": []}]
_SESSION: list[dict[str, list[str]]] = [{"sessionCookie": []}]

_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "scalecore photo feed",
        "version": "1.0.0",
        "description": (
            "The JSON API of the reference photo-feed service. Errors are "
            '`{"error": {"code": str, "message": str}}` with a 4xx or 5xx status. A '
            "request authenticated by the session cookie that changes state must send the "
            "session's CSRF token (from POST /api/session) in the X-CSRF-Token header."
        ),
    },
    "paths": {
        "/api/users": {
            "get": {
                "operationId": "findPeople",
                "summary": "Find accounts: by username prefix, or the most recently joined",
                "parameters": [
                    {
                        "name": "q",
                        "in": "query",
                        "schema": {"type": "string", "pattern": "^ *[A-Za-z0-9_]{0,32} *$"},
                        "description": (
                            "The start of a username (case and surrounding spaces ignored); "
                            "absent or empty: the newest accounts first"
                        ),
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 50, "default": 20},
                        "description": "Page size, up to `photofeed.people_max_limit` (50)",
                    },
                    {
                        "name": "after",
                        "in": "query",
                        "schema": _CURSOR,
                        "description": "The `next` cursor of the previous page",
                    },
                ],
                "responses": {
                    "200": _json(_ref("UserPage"), "One page"),
                    "400": _error("Bad prefix, limit or cursor"),
                    **_E503,
                },
            },
            "post": {
                "operationId": "signUp",
                "summary": "Create an account",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("Credentials")}},
                },
                "responses": {
                    "201": _json(_ref("User"), "Created"),
                    **_E400,
                    "409": _error("The username is taken"),
                    **_E413_JSON,
                    **_E415_JSON,
                    **_E503_WRITE,
                },
            },
        },
        "/api/session": {
            "post": {
                "operationId": "logIn",
                "summary": "Log in: sets the sc_session cookie on a fresh session id",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("Credentials")}},
                },
                "responses": {
                    "200": _json(_ref("Login"), "Logged in; Set-Cookie: sc_session"),
                    **_E400,
                    "401": _error("Wrong username or password"),
                    "403": _error("Sent with a live session but without its CSRF token"),
                    **_E413_JSON,
                    **_E415_JSON,
                    **_E503_WRITE,
                },
            },
            "delete": {
                "operationId": "logOut",
                "summary": "Log out: the session is deleted from the store",
                "security": [{}, *_CSRF],
                "responses": {"204": {"description": "Logged out"}, **_E403_CSRF, **_E503},
            },
        },
        "/api/me": {
            "get": {
                "operationId": "me",
                "summary": "The logged-in user with follower counts",
                "security": _SESSION,
                "responses": {"200": _json(_ref("Me"), "The user"), **_E401, **_E503},
            }
        },
        "/api/following/{username}": {
            "parameters": [_USERNAME],
            "put": {
                "operationId": "follow",
                "summary": "Follow a user (idempotent); backfills their recent photos",
                "security": _CSRF,
                "responses": {
                    "204": {"description": "Following"},
                    "400": _error("You cannot follow yourself"),
                    **_E401,
                    **_E403_CSRF,
                    **_E404,
                    **_E503_WRITE,
                },
            },
            "delete": {
                "operationId": "unfollow",
                "summary": "Unfollow a user (idempotent); their photos leave your feed",
                "security": _CSRF,
                "responses": {
                    "204": {"description": "Not following"},
                    "400": _error("You cannot unfollow yourself"),
                    **_E401,
                    **_E403_CSRF,
                    **_E404,
                    **_E503_WRITE,
                },
            },
        },
        "/api/photos": {
            "post": {
                "operationId": "uploadPhoto",
                "summary": "Upload a photo; it reaches followers' feeds shortly after",
                "security": _CSRF,
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["photo"],
                                "properties": {
                                    "photo": {"type": "string", "format": "binary"},
                                    "caption": {"type": "string", "maxLength": 500},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": _json(_ref("Photo"), "Stored"),
                    "400": _error("No photo field, or a caption over 500 characters"),
                    **_E401,
                    **_E403_CSRF,
                    "413": _error("Larger than the configured upload limit"),
                    "415": _error("Not an image, or not multipart/form-data"),
                    **_E503_WRITE,
                },
            }
        },
        "/api/photos/{photo_id}": {
            "parameters": [_PHOTO_ID],
            "get": {
                "operationId": "getPhoto",
                "summary": "One photo",
                "responses": {"200": _json(_ref("Photo"), "The photo"), **_E404, **_E503},
            },
            "delete": {
                "operationId": "deletePhoto",
                "summary": "Delete your photo: it leaves feeds and the blob store",
                "security": _CSRF,
                "responses": {
                    "204": {"description": "Deleted"},
                    **_E401,
                    "403": _error("Not your photo (permission_denied), or no CSRF token"),
                    **_E404,
                    **_E503_WRITE,
                },
            },
        },
        "/api/feed": {
            "get": {
                "operationId": "feed",
                "summary": "Your feed, newest first",
                "security": _SESSION,
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5},
                        "description": "Page size, up to `photofeed.feed_max_limit` (50)",
                    },
                    {
                        "name": "before",
                        "in": "query",
                        "schema": _CURSOR,
                        "description": "The `next` cursor of the previous page",
                    },
                ],
                "responses": {
                    "200": _json(_ref("FeedPage"), "One page"),
                    "400": _error("Bad limit or cursor"),
                    **_E401,
                    **_E503,
                },
            }
        },
        "/api/users/{username}": {
            "parameters": [_USERNAME],
            "get": {
                "operationId": "profile",
                "summary": "A user's profile and recent photos",
                "responses": {"200": _json(_ref("Profile"), "The profile"), **_E404, **_E503},
            },
        },
        "/api/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": {"description": "The OpenAPI document"}},
            }
        },
        "/media/{key}": {
            "parameters": [
                {"name": "key", "in": "path", "required": True, "schema": _BLOB_KEY},
                {"name": "expires", "in": "query", "schema": {"type": "integer"}},
                {"name": "signature", "in": "query", "schema": {"type": "string"}},
            ],
            "get": {
                "operationId": "media",
                "summary": "A stored image, with ETag, Last-Modified and Cache-Control",
                "parameters": [
                    {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "The bytes",
                        "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "302": {"description": "Redirect to a signed, expiring URL"},
                    "304": {"description": "Not modified"},
                    "400": _error("Malformed key"),
                    "403": _error("Invalid or expired signature"),
                    **_E404,
                    **_E503,
                },
            },
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness",
                "responses": {"200": _json(_ref("Health"), "Alive")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: every backend answers",
                "responses": {
                    "200": _json(_ref("Health"), "Ready"),
                    "503": _json(_ref("Health"), "A backend does not answer (named)"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (text format 0.0.4)",
                "responses": {
                    "200": {
                        "description": "Metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "sc_session"},
            "csrfToken": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string", "examples": ["not_found"]},
                            "message": {"type": "string"},
                        },
                    }
                },
            },
            "Credentials": {
                "type": "object",
                "required": ["username", "password"],
                "properties": {
                    "username": {"type": "string", "pattern": "^[a-z0-9_]{3,32}$"},
                    "password": {"type": "string", "minLength": 8, "maxLength": 1024},
                },
            },
            "User": {
                "type": "object",
                "required": ["id", "username"],
                "properties": {"id": {"type": "string"}, "username": {"type": "string"}},
            },
            "Login": {
                "type": "object",
                "required": ["user", "csrf_token"],
                "properties": {"user": _ref("User"), "csrf_token": {"type": "string"}},
            },
            "Me": {
                "type": "object",
                "required": ["id", "username", "followers", "following"],
                "properties": {
                    "id": {"type": "string"},
                    "username": {"type": "string"},
                    "followers": {"type": "integer"},
                    "following": {"type": "integer"},
                },
            },
            "Photo": {
                "type": "object",
                "required": ["id", "owner", "caption", "created_at", "url", "thumbnail_url"],
                "properties": {
                    "id": {"type": "string"},
                    "owner": {"type": "string", "description": "The owner's username"},
                    "caption": {"type": "string"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "url": {"type": "string", "examples": ["/media/photos/01H.../original"]},
                    "thumbnail_url": {"type": "string"},
                },
            },
            "UserPage": {
                "type": "object",
                "required": ["items", "next"],
                "properties": {
                    "items": {"type": "array", "items": _ref("User")},
                    "next": {"type": ["string", "null"]},
                },
            },
            "FeedPage": {
                "type": "object",
                "required": ["items", "next"],
                "properties": {
                    "items": {"type": "array", "items": _ref("Photo")},
                    "next": {"type": ["string", "null"]},
                },
            },
            "Profile": {
                "type": "object",
                "required": ["id", "username", "followers", "following", "photos"],
                "properties": {
                    "id": {"type": "string"},
                    "username": {"type": "string"},
                    "followers": {"type": "integer"},
                    "following": {"type": "integer"},
                    "photos": {"type": "array", "items": _ref("Photo")},
                },
            },
            "Health": {
                "type": "object",
                "required": ["status"],
                "properties": {
                    "status": {"type": "string", "enum": ["ok", "unavailable"]},
                    "checks": {"type": "object", "additionalProperties": {"type": "string"}},
                    "error": {"type": "object"},
                },
            },
        },
    },
}


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the OpenAPI document (callers may change it)."""
    return copy.deepcopy(_DOCUMENT)


def render() -> str:
    """The document as ``docs/openapi.json`` holds it: sorted keys, two-space indent."""
    return json.dumps(_DOCUMENT, indent=2, sort_keys=True) + "\n"
