"""/media/<key>: ETag, Last-Modified, Cache-Control, 304s, and signed redirects."""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from test_web_support import Web, png_bytes

from scalecore.clock import ManualClock


def uploaded(web: Web) -> tuple[dict[str, str], bytes]:
    client, token = web.user("ada")
    image = png_bytes(80, 60)
    response = Web.upload(client, token, data=image)
    assert response.status_code == 201
    return response.json, image


@pytest.mark.parametrize("blobs", ["memory", "localfs"])
def test_media_has_etag_last_modified_cache_control_and_304(tmp_path: Path, blobs: str) -> None:
    web = Web(tmp_path, blobs=blobs)
    photo, image = uploaded(web)
    client = web.client()
    response = client.get(photo["url"])
    assert response.status_code == 200
    assert response.data == image
    assert response.content_type == "image/png"
    assert response.headers["Content-Length"] == str(len(image))
    etag = response.headers["ETag"]
    assert etag == f'"{hashlib.sha256(image).hexdigest()}"'
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    last_modified = response.headers["Last-Modified"]
    assert last_modified.endswith("GMT")
    assert "Set-Cookie" not in response.headers
    assert "Vary" not in response.headers  # cacheable by a CDN whatever the cookies

    not_modified = client.get(photo["url"], headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.data == b""
    assert not_modified.headers["ETag"] == etag
    assert not_modified.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert client.get(photo["url"], headers={"If-None-Match": f"W/{etag}"}).status_code == 304
    assert (
        client.get(photo["url"], headers={"If-None-Match": '"other", ' + etag}).status_code == 304
    )
    assert client.get(photo["url"], headers={"If-None-Match": "*"}).status_code == 304
    assert client.get(photo["url"], headers={"If-None-Match": '"other"'}).status_code == 200
    since = client.get(photo["url"], headers={"If-Modified-Since": last_modified})
    assert since.status_code == 304
    older = client.get(photo["url"], headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert older.status_code == 200

    thumbnail = client.get(photo["thumbnail_url"])
    assert thumbnail.status_code == 200
    assert thumbnail.content_type == "image/jpeg"
    head = client.head(photo["url"])
    assert head.status_code == 200
    assert head.data == b""
    assert head.headers["ETag"] == etag


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/media/photos/nothing/here.png", 404, "not_found"),
        ("/media/a//b", 400, "invalid_key"),
        ("/media/a/../b", 400, "invalid_key"),
        ("/media/%00", 400, "invalid_key"),
        ("/media/a\\b", 400, "invalid_key"),
    ],
)
def test_bad_and_missing_media_keys(tmp_path: Path, path: str, status: int, code: str) -> None:
    web = Web(tmp_path, blobs="localfs")
    response = web.client().get(path)
    assert response.status_code == status
    assert response.json["error"]["code"] == code


def test_redirects_to_a_signed_url_that_verifies(tmp_path: Path) -> None:
    clock = ManualClock()
    web = Web(
        tmp_path,
        "[web]\nmedia_redirect = true\nmedia_url_expires = 600\n",
        blobs="localfs",
        clock=clock,
    )
    photo, image = uploaded(web)
    client = web.client()
    response = client.get(photo["url"])
    assert response.status_code == 302
    assert response.headers["Cache-Control"] == "private, max-age=300"
    location = response.headers["Location"]
    split = urlsplit(location)
    assert split.path == photo["url"]
    query = parse_qs(split.query)
    assert set(query) == {"expires", "signature"}

    followed = client.get(location)
    assert followed.status_code == 200
    assert followed.data == image
    assert followed.headers["ETag"] == f'"{hashlib.sha256(image).hexdigest()}"'

    tampered = client.get(location.replace(query["signature"][0], "0" * 64))
    assert tampered.status_code == 403
    assert tampered.json["error"]["code"] == "invalid_signature"
    other_key = client.get(photo["thumbnail_url"] + "?" + split.query)
    assert other_key.status_code == 403
    for bad in ("expires=abc&signature=zz", "expires=1", "signature=" + "0" * 64):
        assert client.get(f"{photo['url']}?{bad}").status_code == 403

    clock.advance(601)
    expired = client.get(location)
    assert expired.status_code == 403
    assert expired.json["error"]["code"] == "invalid_signature"


def test_a_redirect_needs_a_store_with_direct_urls(tmp_path: Path) -> None:
    from entrypoints.container import create_container
    from entrypoints.photofeed.config import load_settings
    from scalecore.errors import ConfigError

    config = tmp_path / "c.toml"
    config.write_text('[blobs]\nbackend = "memory"\n[web]\nmedia_redirect = true\n')
    with pytest.raises(
        ConfigError, match=r"blobs\.backend: backend 'memory' lacks the 'direct_url'"
    ):
        create_container(load_settings(config, environ={}))


def test_signed_links_are_refused_by_a_store_that_cannot_verify(tmp_path: Path) -> None:
    web = Web(tmp_path, blobs="memory")
    photo, _ = uploaded(web)
    response = web.client().get(photo["url"] + "?expires=99999999999&signature=" + "0" * 64)
    assert response.status_code == 403
