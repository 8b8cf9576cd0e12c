"""The blob copy of ``scalecore migrate`` into S3 (moto): each copied object is checked
against a listing of the bucket (size and the ETag MD5 S3 computed from the bytes it
stored), and an object whose listing does not match is read back in full.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import boto3
import pytest

from adapters.blob.localfs import LocalFsBlobStore
from adapters.blob.s3 import S3BlobStore
from entrypoints.migrate import blobs as migrate_blobs
from entrypoints.migrate.blobs import sync_blobs

CACHE = "public, max-age=60"


@pytest.fixture
def bucket(s3_endpoint: str, unique: str) -> Iterator[str]:
    name = f"test-migrate-blobs-{unique}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=name)
    yield name
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)


@pytest.fixture
def target(s3_endpoint: str, bucket: str) -> Iterator[S3BlobStore]:
    store = S3BlobStore(
        bucket=bucket,
        endpoint_url=s3_endpoint,
        access_key_id="testing",
        secret_access_key="testing",
    )
    yield store
    store.close()


@pytest.fixture
def source(tmp_path: Path) -> Iterator[LocalFsBlobStore]:
    store = LocalFsBlobStore(root=tmp_path / "blobs", url_secret="s" * 40)
    for n in range(30):
        store.put(
            f"p/{n:03d}.jpg",
            bytes([n]) * (1000 + n),
            content_type="image/jpeg",
            cache_control=CACHE,
        )
    store.put("p/empty", b"")
    yield store
    store.close()


def test_copied_objects_are_checked_by_listing_without_a_get_each(
    source: LocalFsBlobStore, target: S3BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrate_blobs, "LIST_BATCH", 7)  # several listings
    listings: list[tuple[str, str]] = []
    real_digests = target.stored_digests

    def counted(first: str, last: str) -> dict[str, tuple[int, str]]:
        listings.append((first, last))
        return real_digests(first, last)

    monkeypatch.setattr(target, "stored_digests", counted)
    monkeypatch.setattr(target, "open", _no_get)
    result = sync_blobs(source, target, write=True)
    assert result.differences == []
    assert (result.read, result.written, result.verified) == (31, 31, 31)
    assert 2 <= len(listings) <= 5  # one LIST per batch, no GET per object
    info = target.head("p/007.jpg")
    assert (info.size, info.content_type, info.cache_control) == (1007, "image/jpeg", CACHE)
    assert info.etag == hashlib.sha256(bytes([7]) * 1007).hexdigest()
    monkeypatch.undo()
    again = sync_blobs(source, target, write=True, read_back_all=True)
    assert (again.written, again.verified, again.differences) == (0, 31, [])


def _no_get(key: str) -> Any:
    raise AssertionError(f"read back {key} in full")


def test_stored_digests_is_the_md5_of_the_stored_bytes_over_a_key_range(
    target: S3BlobStore,
) -> None:
    for key in ("a", "b/1", "b/2", "b/3", "c"):
        target.put(key, key.encode() * 3)
    assert target.stored_digests("b/1", "b/3") == {
        key: (9, hashlib.md5(key.encode() * 3).hexdigest()) for key in ("b/1", "b/2", "b/3")
    }
    assert target.stored_digests("a", "a") == {"a": (3, hashlib.md5(b"aaa").hexdigest())}


def test_a_listing_that_does_not_match_falls_back_to_a_full_read_back(
    source: LocalFsBlobStore, target: S3BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def wrong(first: str, last: str) -> dict[str, tuple[int, str]]:
        return {"p/003.jpg": (1003, "0" * 32)}  # every other key missing from the listing

    monkeypatch.setattr(target, "stored_digests", wrong)
    result = sync_blobs(source, target, write=True)
    assert (result.verified, result.differences) == (31, [])


def test_bytes_stored_wrong_are_reported_not_counted(
    source: LocalFsBlobStore, target: S3BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_put = target.put

    def corrupting_put(key: str, data: bytes | BinaryIO, **headers: Any) -> Any:
        assert not isinstance(data, bytes)
        body = b"".join(iter(lambda: data.read(4096), b""))
        if key == "p/005.jpg":
            body = b"X" + body[1:]
        return real_put(key, body, **headers)

    monkeypatch.setattr(target, "put", corrupting_put)
    result = sync_blobs(source, target, write=True)
    assert result.verified == 30
    assert len(result.differences) == 1
    assert result.differences[0].startswith("blob p/005.jpg: bytes differ")
