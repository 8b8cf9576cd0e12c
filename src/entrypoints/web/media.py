"""``GET /media/<key>``: blobs for browsers, CDNs and caching proxies.

Served bytes carry the blob's ETag (its SHA-256, quoted), Last-Modified and the
Cache-Control it was stored with, and a matching ``If-None-Match`` (or, without one, a
not-older ``If-Modified-Since``) gets ``304 Not Modified`` without reading the blob.

With ``[web] media_redirect = true`` and a blob store declaring ``DIRECT_URL``, the answer is
a ``302`` to a signed, expiring URL from ``BlobStore.url_for`` instead (S3 presigned; for the
local store a link back to this route with ``expires`` and ``signature``, checked with the
store's ``verify_url``). A request with ``expires``/``signature`` that does not verify
(tampered, expired, or a store that cannot verify links) is refused with 403.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, redirect, request
from werkzeug.wrappers import Response as BaseResponse

from entrypoints.web.errors import ApiError
from entrypoints.web.state import state
from scalecore.capabilities import Capability
from scalecore.ports.blobstore import BlobInfo, BlobStore, BlobStream

__all__ = ["media"]

media = Blueprint("media", __name__)

#: For blobs stored without a Cache-Control: cacheable, but revalidated after an hour.
_DEFAULT_CACHE_CONTROL = "public, max-age=3600"


@media.get("/media/<path:key>")
def serve(key: str) -> BaseResponse:
    web_state = state()
    store = web_state.blobs
    if "signature" in request.args or "expires" in request.args:
        if not store.verify_url(key, request.args.get("expires"), request.args.get("signature")):
            raise ApiError(403, "invalid_signature", "this media link is invalid or has expired")
        return _send(store, key)
    if web_state.web["media_redirect"] and Capability.DIRECT_URL in store.capabilities:
        lifetime = int(web_state.web["media_url_expires"])
        response = redirect(store.url_for(key, expires_in=lifetime), code=302)
        # A cached redirect must not outlive the link it points to.
        response.headers["Cache-Control"] = f"private, max-age={max(lifetime // 2, 1)}"
        return response
    return _send(store, key)


def _headers(response: Response, info: BlobInfo) -> None:
    response.set_etag(info.etag)
    response.last_modified = info.last_modified
    response.headers["Cache-Control"] = info.cache_control or _DEFAULT_CACHE_CONTROL
    response.headers["X-Content-Type-Options"] = "nosniff"


def _not_modified(info: BlobInfo) -> bool:
    if request.if_none_match:
        return request.if_none_match.contains_weak(info.etag)
    since = request.if_modified_since
    return since is not None and info.last_modified.replace(microsecond=0) <= since


def _send(store: BlobStore, key: str) -> Response:
    info = store.head(key)
    if _not_modified(info):
        response = Response(status=304)
        _headers(response, info)
        return response
    if request.method == "HEAD":  # the headers only: no need to open the object
        response = Response(status=200, content_type=info.content_type)
        response.content_length = info.size
        _headers(response, info)
        return response
    stream = store.open(key)
    info = stream.info  # the version actually streamed, should it have changed since head
    response = Response(
        _chunks(stream), status=200, content_type=info.content_type, direct_passthrough=True
    )
    response.content_length = info.size
    response.call_on_close(stream.close)
    _headers(response, info)
    return response


def _chunks(stream: BlobStream) -> Iterator[bytes]:
    with stream:
        yield from stream
