"""The JSON API under ``/api``: parse the request, call PhotoFeed, render JSON.

Every error goes through :mod:`entrypoints.web.errors`; the shapes are in
:mod:`entrypoints.web.presenters` and the whole surface in ``docs/api.md`` and
``/api/openapi.json``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import BadRequest

from entrypoints.web.errors import ApiError
from entrypoints.web.openapi import openapi_document
from entrypoints.web.presenters import (
    feed_json,
    me_json,
    people_json,
    photo_json,
    profile_json,
    user_json,
)
from entrypoints.web.sessions import log_in, log_out, require_user_id
from entrypoints.web.state import state
from scalecore.errors import InvalidInput

__all__ = ["api", "read_upload"]

api = Blueprint("api", __name__, url_prefix="/api")

#: JSON bodies here are small (credentials); uploads have their own, larger limit.
MAX_JSON_BYTES = 64 * 1024


def _no_content() -> Response:
    return Response(status=204)


def _json_body(*fields: str) -> dict[str, str]:
    """The request's JSON object with ``fields`` as strings; 415 or 400 otherwise."""
    if not request.is_json:
        raise ApiError(
            415, "unsupported_media_type", "send a JSON body with Content-Type: application/json"
        )
    if (request.content_length or 0) > MAX_JSON_BYTES:
        raise ApiError(413, "too_large", f"a JSON body is at most {MAX_JSON_BYTES} bytes")
    try:
        body = request.get_json()
    except (BadRequest, RecursionError):  # unparsable, not UTF-8, or nested too deep
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    values: dict[str, str] = {}
    for field in fields:
        value = body.get(field)
        if not isinstance(value, str):
            raise InvalidInput(f"{field!r} is required and must be a string")
        values[field] = value
    return values


def read_upload() -> tuple[FileStorage, str, int]:
    """The uploaded file, its caption and its size from a multipart request."""
    if request.mimetype != "multipart/form-data":
        raise ApiError(
            415,
            "unsupported_media_type",
            "send the photo as multipart/form-data with the image in the field 'photo'",
        )
    upload = request.files.get("photo")
    if upload is None:
        raise InvalidInput("the multipart field 'photo' with the image is missing")
    caption = request.form.get("caption", "")
    stream = upload.stream
    # The part is spooled already (memory or a temp file Werkzeug deletes on close), so
    # its size is known; the service refuses an oversized one before decoding it.
    stream.seek(0, 2)
    size = stream.tell()
    stream.seek(0)
    return upload, caption, size


@api.post("/users")
def sign_up() -> tuple[Response, int]:
    body = _json_body("username", "password")
    user = state().service.sign_up(body["username"], body["password"])
    response = jsonify(user_json(user))
    response.headers["Location"] = f"/api/users/{user.username}"
    return response, 201


@api.get("/users")
def people() -> Response:
    page = state().service.find_people(
        request.args.get("q"), limit=_limit(), after=request.args.get("after")
    )
    return jsonify(people_json(page))


@api.post("/session")
def create_session() -> Response:
    body = _json_body("username", "password")
    user = state().service.authenticate(body["username"], body["password"])
    token = log_in(user.id)
    return jsonify({"user": user_json(user), "csrf_token": token})


@api.delete("/session")
def delete_session() -> Response:
    log_out()
    return _no_content()


@api.get("/me")
def me() -> Response:
    return jsonify(me_json(state().service.profile_by_id(require_user_id())))


@api.put("/following/<username>")
def follow(username: str) -> Response:
    state().service.follow(require_user_id(), username)
    return _no_content()


@api.delete("/following/<username>")
def unfollow(username: str) -> Response:
    state().service.unfollow(require_user_id(), username)
    return _no_content()


@api.post("/photos")
def upload_photo() -> tuple[Response, int]:
    user_id = require_user_id()
    upload, caption, size = read_upload()
    photo = state().service.upload_photo(
        user_id, upload.stream, caption=caption, content_length=size
    )
    response = jsonify(photo_json(photo))
    response.headers["Location"] = f"/api/photos/{photo.id}"
    return response, 201


@api.get("/photos/<photo_id>")
def get_photo(photo_id: str) -> Response:
    return jsonify(photo_json(state().service.get_photo(photo_id)))


@api.delete("/photos/<photo_id>")
def delete_photo(photo_id: str) -> Response:
    state().service.delete_photo(require_user_id(), photo_id)
    return _no_content()


def _limit() -> int | None:
    raw = request.args.get("limit")
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 6:
        raise InvalidInput(f"limit must be a positive integer, got {raw!r}")
    return int(raw)


@api.get("/feed")
def feed() -> Response:
    user_id = require_user_id()
    page = state().service.feed(user_id, limit=_limit(), before=request.args.get("before"))
    return jsonify(feed_json(page))


@api.get("/users/<username>")
def profile(username: str) -> Response:
    return jsonify(profile_json(state().service.profile(username)))


@api.get("/openapi.json")
def openapi() -> Response:
    document: dict[str, Any] = openapi_document()
    response = jsonify(document)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
