"""Faults of the S3 blob store against real S3 endpoints (moto servers), and what only S3 has.

An upload cut off half-way, by the caller's stream or by the endpoint, must leave no
visible object; where the endpoint still runs it must leave no pending multipart upload
either. A 64 MiB stream goes up with memory bounded by a few parts. The shared endpoint
comes from ``scripts/services up``; tests that kill or cut an endpoint use their own: a
private moto server, or a TCP relay in front of the shared one, on a free loopback port.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from tcp_relay import Relay

from adapters.blob import s3 as s3_module
from adapters.blob.s3 import S3BlobStore
from scalecore.clock import ManualClock
from scalecore.errors import BackendUnavailable, InvalidInput, InvalidKey, NotFound

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
PART = 5 * MiB  # S3's smallest part: many parts from a small upload
CREDENTIALS = {"access_key_id": "scalecore-test", "secret_access_key": "scalecore-test-secret"}


# -- helpers -------------------------------------------------------------------------------


class Interrupted(Exception):
    """The caller's own error, raised by its stream half-way through an upload."""


class Source:
    """A binary file object producing ``size`` bytes on demand, never holding more than a
    1 MiB pattern and the chunk asked for. Once ``trigger_at`` bytes have been delivered,
    the next read first calls ``trigger`` (which may raise, or cut the endpoint)."""

    BLOCK = MiB

    def __init__(
        self,
        size: int,
        *,
        trigger_at: int | None = None,
        trigger: Callable[[], None] | None = None,
    ) -> None:
        self.size = size
        self.delivered = 0
        self.reads_after_trigger = 0
        self.digest = hashlib.sha256()
        self._block = os.urandom(self.BLOCK)
        self._trigger_at = trigger_at
        self._trigger = trigger
        self._fired = False

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            raise AssertionError("the store asked for the whole stream at once")
        if self._fired:
            self.reads_after_trigger += 1
        elif self._trigger_at is not None and self.delivered >= self._trigger_at:
            self._fired = True
            assert self._trigger is not None
            self._trigger()
        size = min(size, self.size - self.delivered)
        offset = self.delivered % self.BLOCK
        if offset + size <= self.BLOCK:
            data = self._block[offset : offset + size]
        else:
            data = self._block[offset:] + self._block[: size - (self.BLOCK - offset)]
        self.delivered += len(data)
        self.digest.update(data)
        return data


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


def host_port(url: str) -> tuple[str, int]:
    host, _, port = url.split("://", 1)[1].rpartition(":")
    return host, int(port)


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def s3(s3_endpoint: str) -> Iterator[Any]:
    """A plain boto3 client on the shared endpoint, to look behind the store's back."""
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=CREDENTIALS["access_key_id"],
        aws_secret_access_key=CREDENTIALS["secret_access_key"],
    )
    yield client
    client.close()


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    """A fresh bucket on the shared endpoint, emptied and removed afterwards."""
    name = f"sc-fault-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    yield name
    for upload in s3.list_multipart_uploads(Bucket=name).get("Uploads", ()):
        s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", ()):
            s3.delete_object(Bucket=name, Key=item["Key"])
    s3.delete_bucket(Bucket=name)


@pytest.fixture
def make_store(s3_endpoint: str, bucket: str) -> Iterator[Callable[..., S3BlobStore]]:
    """Build stores on ``bucket`` of the shared endpoint (options override the defaults:
    5 MiB parts above a 5 MiB threshold, fast failure); all are closed afterwards."""
    stores: list[S3BlobStore] = []

    def make(**options: Any) -> S3BlobStore:
        settings: dict[str, Any] = {
            "bucket": bucket,
            "endpoint_url": s3_endpoint,
            "multipart_threshold": PART,
            "part_size": PART,
            "connect_timeout": 2,
            "read_timeout": 10,
            "max_attempts": 2,
            **CREDENTIALS,
            **options,
        }
        store = S3BlobStore(**settings)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def bucket_contents(s3: Any, bucket: str) -> tuple[list[tuple[str, int]], list[str]]:
    """(key, size) of every object, and the key of every pending multipart upload."""
    objects = [
        (item["Key"], item["Size"])
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for item in page.get("Contents", ())
    ]
    uploads = [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", ())]
    return objects, uploads


def pending_parts(s3: Any, bucket: str) -> int:
    """How many parts the pending multipart uploads of ``bucket`` hold right now."""
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", ())
    return sum(
        len(s3.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]).get("Parts", ()))
        for u in uploads
    )


# -- uploads cut off half-way --------------------------------------------------------------


def test_a_stream_that_fails_after_several_parts_leaves_nothing_behind(
    s3: Any, bucket: str, make_store: Callable[..., S3BlobStore]
) -> None:
    store = make_store()
    old = store.put("photos/big.bin", b"the old version", content_type="text/plain")
    before = bucket_contents(s3, bucket)
    error = Interrupted("the client went away")
    parts_when_cut: list[int] = []

    def fail() -> None:
        parts_when_cut.append(pending_parts(s3, bucket))
        raise error

    source = Source(40 * MiB, trigger_at=17 * MiB, trigger=fail)
    with pytest.raises(Interrupted) as caught:
        store.put("photos/big.bin", source)  # type: ignore[arg-type]
    assert caught.value is error  # the caller's own exception, unchanged
    assert parts_when_cut == [3]  # the upload really was under way: 3 parts were stored
    assert source.reads_after_trigger == 0
    # No object, temporary or not, and no pending upload: the bucket is as it was.
    assert bucket_contents(s3, bucket) == before
    assert store.get("photos/big.bin") == b"the old version"
    assert store.head("photos/big.bin") == old


def test_a_new_key_whose_stream_fails_mid_upload_never_appears(
    s3: Any, bucket: str, make_store: Callable[..., S3BlobStore]
) -> None:
    store = make_store()

    def fail() -> None:
        raise Interrupted("cut")

    with pytest.raises(Interrupted):
        store.put("new.bin", Source(12 * MiB, trigger_at=11 * MiB, trigger=fail))  # type: ignore[arg-type]
    assert bucket_contents(s3, bucket) == ([], [])
    with pytest.raises(NotFound):
        store.head("new.bin")
    assert store.list().items == ()


def test_an_endpoint_cut_off_mid_upload_leaves_no_visible_object(
    s3: Any,
    s3_endpoint: str,
    bucket: str,
    make_store: Callable[..., S3BlobStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    relay = Relay(host_port(s3_endpoint))
    try:
        store = make_store(endpoint_url=relay.url)
        store.put("kept", b"written before the cut")
        source = Source(30 * MiB, trigger_at=12 * MiB, trigger=relay.cut)
        with caplog.at_level(logging.WARNING, logger="adapters.blob.s3"):
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                store.put("photos/cut.bin", source)  # type: ignore[arg-type]
            assert time.monotonic() - started < 20  # bounded by timeouts and max_attempts
        assert source.reads_after_trigger <= 20  # it stopped reading the caller's stream
        objects, uploads = bucket_contents(s3, bucket)
        assert [key for key, _ in objects] == ["kept"]  # nothing at the key, nothing temporary
        # The abort could not reach the endpoint: the incomplete upload stays, invisible
        # through the store, for the bucket's lifecycle rule; the store says so in its log.
        assert len(uploads) == 1
        assert uploads[0].startswith(".scalecore-tmp/")
        assert "could not abort" in caplog.text
        with pytest.raises(BackendUnavailable):
            store.head("kept")
        relay.restore()  # the endpoint comes back: the same store carries on
        assert store.get("kept") == b"written before the cut"
        assert [info.key for info in store.list().items] == ["kept"]
        store.put("photos/cut.bin", Source(7 * MiB))  # type: ignore[arg-type]
        assert store.head("photos/cut.bin").size == 7 * MiB
    finally:
        relay.cut()


def test_an_endpoint_killed_mid_upload_raises_backend_unavailable_promptly(
    tmp_path: Path,
) -> None:
    moto_server = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    assert moto_server, "moto[server] is a dev dependency"
    port = free_port()
    with (tmp_path / "moto.log").open("wb") as log:
        server = subprocess.Popen(
            [moto_server, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
        )
    store = S3BlobStore(
        bucket="private",
        endpoint_url=f"http://127.0.0.1:{port}",
        create_bucket=True,
        multipart_threshold=PART,
        part_size=PART,
        connect_timeout=1,
        read_timeout=5,
        max_attempts=2,
        **CREDENTIALS,
    )
    try:
        wait_for_port(port)
        store.put("before", b"x")  # creates the bucket on first use

        def kill() -> None:
            server.kill()
            server.wait(timeout=10)

        source = Source(30 * MiB, trigger_at=11 * MiB, trigger=kill)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            store.put("photos/killed.bin", source)  # type: ignore[arg-type]
        assert time.monotonic() - started < 20
        assert source.reads_after_trigger <= 20
        with pytest.raises(BackendUnavailable):
            store.ping()
    finally:
        store.close()
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)


def test_every_operation_on_an_unreachable_endpoint_raises_backend_unavailable(
    s3_endpoint: str, make_store: Callable[..., S3BlobStore]
) -> None:
    relay = Relay(host_port(s3_endpoint))
    try:
        store = make_store(endpoint_url=relay.url, max_attempts=1)
        store.put("k", b"x")
        big = store.put("big", Source(24 * MiB))  # type: ignore[arg-type]
        stream = store.open("big")
        first = stream.read(256 * 1024)
        assert len(first) == 256 * 1024
        relay.cut()
        with pytest.raises(BackendUnavailable):
            stream.read()  # cut off while the body streams in
        stream.close()
        operations: list[Callable[[], object]] = [
            store.ping,
            lambda: store.put("k", b"y"),
            lambda: store.put("new", Source(3 * MiB)),  # type: ignore[arg-type]
            lambda: store.put("new", Source(8 * MiB)),  # type: ignore[arg-type]
            lambda: store.head("k"),
            lambda: store.open("k"),
            lambda: store.list(),
            lambda: store.delete("k"),
        ]
        for operation in operations:
            with pytest.raises(BackendUnavailable):
                operation()
        assert isinstance(store.url_for("k"), str)  # signing needs no endpoint
        assert big.size == 24 * MiB
    finally:
        relay.cut()


# -- memory --------------------------------------------------------------------------------


def test_a_64_mib_stream_goes_up_with_memory_bounded_by_a_few_parts(
    s3: Any, bucket: str, make_store: Callable[..., S3BlobStore]
) -> None:
    store = make_store()
    source = Source(64 * MiB)
    store.ping()  # build the client before measuring
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        info = store.put("big/stream.bin", source)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * PART, f"peak traced memory {peak / MiB:.1f} MiB"
    assert (info.size, info.etag) == (64 * MiB, source.digest.hexdigest())
    assert store.head("big/stream.bin") == info
    digest = hashlib.sha256()
    with store.open("big/stream.bin") as stream:
        for chunk in stream:
            digest.update(chunk)
    assert digest.hexdigest() == info.etag
    assert bucket_contents(s3, bucket) == ([("big/stream.bin", 64 * MiB)], [])


# -- what only S3 has ----------------------------------------------------------------------


def test_large_bytes_go_up_in_parts_with_their_metadata(
    s3: Any, bucket: str, make_store: Callable[..., S3BlobStore]
) -> None:
    store = make_store()
    data = os.urandom(12 * MiB + 7)
    info = store.put("bytes.bin", data, content_type="video/mp4", cache_control="max-age=60")
    assert info.etag == hashlib.sha256(data).hexdigest()
    assert store.get("bytes.bin") == data
    assert store.head("bytes.bin") == info
    raw = s3.head_object(Bucket=bucket, Key="bytes.bin", PartNumber=1)
    assert raw.get("PartsCount") == 3  # sent as a multipart upload, straight to its key
    assert bucket_contents(s3, bucket) == ([("bytes.bin", len(data))], [])


def test_streams_too_large_for_one_copy_are_copied_in_parts(
    s3: Any, bucket: str, make_store: Callable[..., S3BlobStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store()
    # Stand-ins for S3's 5 GiB CopyObject limit and 1 GiB copy parts.
    monkeypatch.setattr(s3_module, "_MAX_SINGLE", 6 * MiB)
    monkeypatch.setattr(s3_module, "_COPY_PART", PART)
    source = Source(12 * MiB + 3)
    info = store.put("copied.bin", source, content_type="image/png")  # type: ignore[arg-type]
    assert (info.size, info.etag) == (12 * MiB + 3, source.digest.hexdigest())
    assert store.head("copied.bin") == info
    assert hashlib.sha256(store.get("copied.bin")).hexdigest() == info.etag
    assert bucket_contents(s3, bucket) == ([("copied.bin", 12 * MiB + 3)], [])


def test_headers_and_metadata_are_real_s3_headers(
    s3: Any, bucket: str, make_store: Callable[..., S3BlobStore]
) -> None:
    store = make_store()
    info = store.put(
        "p.jpg",
        b"jpeg",
        content_type="image/jpeg",
        cache_control="public, max-age=31536000",
        expires=dt.datetime(2030, 1, 2, 10, 30, 15, tzinfo=dt.UTC),
    )
    raw = s3.head_object(Bucket=bucket, Key="p.jpg")
    assert raw["ContentType"] == "image/jpeg"
    assert raw["CacheControl"] == "public, max-age=31536000"
    assert raw["ExpiresString"] == "Wed, 02 Jan 2030 10:30:15 GMT"
    assert raw["Metadata"]["scalecore-sha256"] == info.etag


def test_objects_not_written_by_the_store_are_reported_not_guessed(
    s3: Any, bucket: str, make_store: Callable[..., S3BlobStore]
) -> None:
    store = make_store()
    s3.put_object(Bucket=bucket, Key="foreign.txt", Body=b"from another tool")
    for operation in (
        lambda: store.head("foreign.txt"),
        lambda: store.open("foreign.txt"),
        lambda: store.list(),
    ):
        with pytest.raises(BackendUnavailable, match="scalecore-sha256"):
            operation()
    store.delete("foreign.txt")
    assert store.list().items == ()


def test_a_prefix_keeps_a_store_to_its_part_of_the_bucket(
    s3: Any, bucket: str, make_store: Callable[..., S3BlobStore]
) -> None:
    tenant = make_store(prefix="tenants/a")
    other = make_store(prefix="tenants/b/")
    whole = make_store()
    tenant.put("photo", b"a's")
    other.put("photo", b"b's")
    assert [key for key, _ in bucket_contents(s3, bucket)[0]] == [
        "tenants/a/photo",
        "tenants/b/photo",
    ]
    assert tenant.get("photo") == b"a's"
    assert [info.key for info in tenant.list().items] == ["photo"]
    assert [info.key for info in whole.list("tenants/").items] == [
        "tenants/a/photo",
        "tenants/b/photo",
    ]
    # S3's 1024-byte key limit covers the prefix too.
    with pytest.raises(InvalidKey, match="prefix"):
        tenant.put("x" * 1020, b"")
    tenant.put("x" * (1024 - len("tenants/a/")), b"fits")


def test_nothing_connects_until_used_and_a_missing_bucket_is_unavailable(
    s3_endpoint: str,
) -> None:
    closed = S3BlobStore(bucket="anything", endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(BackendUnavailable):
        closed.ping()
    closed.close()
    missing = S3BlobStore(
        bucket=f"sc-missing-{uuid.uuid4().hex[:12]}", endpoint_url=s3_endpoint, **CREDENTIALS
    )
    with pytest.raises(BackendUnavailable, match="does not exist"):
        missing.ping()
    with pytest.raises(BackendUnavailable, match="does not exist"):
        missing.put("k", b"x")
    missing.close()
    missing.close()  # idempotent


def test_create_bucket_makes_the_bucket_on_first_use(s3: Any, s3_endpoint: str) -> None:
    name = f"sc-created-{uuid.uuid4().hex[:12]}"
    store = S3BlobStore(bucket=name, endpoint_url=s3_endpoint, create_bucket=True, **CREDENTIALS)
    assert name not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    try:
        store.put("k", b"x")
        assert store.get("k") == b"x"
        again = S3BlobStore(
            bucket=name, endpoint_url=s3_endpoint, create_bucket=True, **CREDENTIALS
        )
        again.ping()  # the bucket exists already: fine
        again.close()
    finally:
        store.close()
        s3.delete_object(Bucket=name, Key="k")
        s3.delete_bucket(Bucket=name)


def test_url_lifetime_is_capped_by_presign_expires_max(
    make_store: Callable[..., S3BlobStore],
) -> None:
    store = make_store(presign_expires_max=600, clock=ManualClock())
    assert "X-Amz-Expires=600" in store.url_for("k", expires_in=600)
    with pytest.raises(InvalidInput, match="presign_expires_max"):
        store.url_for("k", expires_in=601)
