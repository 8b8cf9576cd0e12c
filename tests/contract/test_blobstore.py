"""The BlobStore contract: the promises of ``scalecore.ports.blobstore``, run on every adapter.

To add an adapter, write a :class:`Backend` subclass (how to build a store, how to follow
its direct URLs, what it holds on disk or on the server) and add it to :data:`BACKENDS`.
The tests use the port only, and branch on declared capabilities, never on names.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import itertools
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from adapters.blob.localfs import LocalFsBlobStore
from adapters.blob.memory import MemoryBlobStore
from scalecore.capabilities import Capability
from scalecore.clock import ManualClock
from scalecore.errors import (
    BackendUnavailable,
    ConfigError,
    InvalidInput,
    InvalidKey,
    NotFound,
    UnsupportedOperation,
)
from scalecore.ports.blobstore import DEFAULT_CONTENT_TYPE, BlobInfo, BlobStore

# -- the adapters under test ---------------------------------------------------------------


class Backend:
    """How the suite builds one adapter's stores and looks around them.

    ``make(node)`` returns a new store with the same configuration, as a process on
    ``node`` would build it: the same node means the same machine (a restart or a second
    worker), another node means another server of the fleet.
    """

    #: Whether :meth:`break_backend` can make the backend unreachable.
    breakable: ClassVar[bool] = False

    def __init__(self, request: pytest.FixtureRequest, workdir: Path) -> None:
        self.request = request
        self.workdir = workdir
        self.clock = ManualClock()
        self.stores: list[BlobStore] = []

    def make(self, node: str = "a") -> BlobStore:
        store = self.build(node)
        self.stores.append(store)
        return store

    def build(self, node: str) -> BlobStore:
        raise NotImplementedError

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for every store this backend made."""
        self.clock.advance(seconds)

    def follow_url(self, store: BlobStore, url: str) -> bytes | None:
        """Download ``url`` as a client would: the bytes, or ``None`` if it is refused."""
        raise AssertionError(f"{type(store).__name__} declares no DIRECT_URL")

    def snapshot(self) -> frozenset[tuple[str, int]]:
        """Everything the backend holds, in the store and beside it (files, temp files)."""
        return frozenset()

    def break_backend(self, store: BlobStore) -> None:
        """Make ``store``'s backend unreachable (only when ``breakable``)."""
        raise NotImplementedError

    def bad_options(self) -> list[tuple[str, Callable[[], object]]]:
        """(option name, a constructor call with a bad value for that option) pairs."""
        return []

    def close(self) -> None:
        for store in self.stores:
            store.close()


class MemoryBackend(Backend):
    def build(self, node: str) -> BlobStore:
        return MemoryBlobStore(clock=self.clock)

    def bad_options(self) -> list[tuple[str, Callable[[], object]]]:
        return [("clock", lambda: MemoryBlobStore(clock="yesterday"))]  # type: ignore[arg-type]


class LocalFsBackend(Backend):
    """Each node is a directory of ``workdir`` standing for that machine's disk; the root
    sits two levels inside it, so anything written beside the root shows in a snapshot."""

    breakable = True
    secret = "correct horse battery staple"

    def root(self, node: str) -> Path:
        return self.workdir / f"node-{node}" / "srv" / "blobs"

    def build(self, node: str) -> BlobStore:
        return LocalFsBlobStore(root=self.root(node), url_secret=self.secret, clock=self.clock)

    def follow_url(self, store: BlobStore, url: str) -> bytes | None:
        # What the web layer does for a GET of the link.
        assert isinstance(store, LocalFsBlobStore)
        parts = urlsplit(url)
        assert parts.path.startswith("/media/"), url
        key = unquote(parts.path.removeprefix("/media/"))
        query = parse_qs(parts.query)
        expires = query.get("expires", [""])[0]
        signature = query.get("signature", [""])[0]
        if not store.verify_url(key, expires, signature):
            return None
        return store.get(key)

    def snapshot(self) -> frozenset[tuple[str, int]]:
        # Lock stripes and the data/ fan-out directories are kept by design; everything
        # else (objects, metadata, directories, temp files) must come and go with objects.
        found = set()
        for path in self.workdir.rglob("*"):
            relative = path.relative_to(self.workdir).as_posix()
            parts = relative.split("/")
            if len(parts) >= 4 and parts[3] == "locks":
                continue
            if len(parts) == 5 and parts[3] == "data" and path.is_dir():
                continue
            found.add((relative, path.stat().st_size if path.is_file() else -1))
        return frozenset(found)

    def break_backend(self, store: BlobStore) -> None:
        root = self.root("a")
        shutil.rmtree(root)
        root.write_text("the disk went away")

    def bad_options(self) -> list[tuple[str, Callable[[], object]]]:
        a_file = self.workdir / "a-file"
        a_file.write_text("not a directory")
        good: dict[str, Any] = {"root": self.workdir / "r", "url_secret": self.secret}
        bad: list[tuple[str, object]] = [
            ("root", a_file),
            ("root", ""),
            ("root", None),
            ("url_secret", "x" * 15),
            ("url_secret", b"x" * 15),
            ("url_secret", ""),
            ("url_secret", None),
            ("url_secret", 1234567890123456789),
            ("url_base", "/media?x=1"),
            ("url_base", "/me dia"),
            ("url_base", "/media#top"),
            ("url_base", 5),
            ("clock", object()),
        ]

        def build(option: str, value: object) -> Callable[[], object]:
            return lambda: LocalFsBlobStore(**{**good, option: value})

        return [(option, build(option, value)) for option, value in bad]


class S3Backend(Backend):
    """A fresh bucket on the moto S3 endpoint per test, emptied and removed afterwards.
    Every node talks to the same bucket, as every server of a fleet would.

    moto serves presigned URLs without checking their signature or expiry, so
    :meth:`follow_url` plays S3's part first: it verifies the SigV4 query signature with
    the known secret and the expiry against real time plus what :meth:`advance` let pass,
    then downloads the URL with urllib from the endpoint.
    """

    marks = (pytest.mark.integration,)
    access_key, secret_key, region = "scalecore-test", "scalecore-test-secret", "us-east-1"

    def __init__(self, request: pytest.FixtureRequest, workdir: Path) -> None:
        super().__init__(request, workdir)
        import boto3

        self.endpoint: str = request.getfixturevalue("s3_endpoint")
        self.bucket = f"sc-blob-{uuid.uuid4().hex[:16]}"
        self.elapsed = 0.0
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )
        self.client.create_bucket(Bucket=self.bucket)

    def build(self, node: str) -> BlobStore:
        from adapters.blob.s3 import S3BlobStore

        # A low threshold sends every stream over 1 MiB through a multipart upload.
        return S3BlobStore(**self.options(), multipart_threshold=1024 * 1024, clock=self.clock)

    def options(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "endpoint_url": self.endpoint,
            "region": self.region,
            "access_key_id": self.access_key,
            "secret_access_key": self.secret_key,
            "part_size": 5 * 1024 * 1024,
        }

    def advance(self, seconds: float) -> None:
        super().advance(seconds)
        self.elapsed += seconds

    def follow_url(self, store: BlobStore, url: str) -> bytes | None:
        if not self.signature_valid(url):
            return None
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body: bytes = response.read()
        except urllib.error.HTTPError:
            return None
        return body

    def signature_valid(self, url: str) -> bool:
        """Check a presigned URL as S3 does (AWS Signature Version 4, query parameters)."""
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != self.endpoint:
            return False
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        signature = params.pop("X-Amz-Signature", "")
        try:
            access_key, day, region, service, terminal = params["X-Amz-Credential"].split("/")
            stamp = params["X-Amz-Date"]
            signed_at = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
            lifetime = int(params["X-Amz-Expires"])
        except (KeyError, ValueError):
            return False
        if (
            params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256"
            or (access_key, region, service, terminal)
            != (self.access_key, self.region, "s3", "aws4_request")
            or params.get("X-Amz-SignedHeaders") != "host"
            or day != stamp[:8]
            or time.time() + self.elapsed > signed_at.timestamp() + lifetime
        ):
            return False
        query = "&".join(
            f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}"
            for name, value in sorted(params.items())
        )
        canonical = f"GET\n{parts.path}\n{query}\nhost:{parts.netloc}\n\nhost\nUNSIGNED-PAYLOAD"
        scope = f"{day}/{region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{sha(canonical.encode())}"
        key = f"AWS4{self.secret_key}".encode()
        for part in (day, region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature)

    def snapshot(self) -> frozenset[tuple[str, int]]:
        # Every object in the bucket (temporary ones included) and every multipart upload
        # still pending: both must come and go with the store's objects.
        found: set[tuple[str, int]] = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            found.update((item["Key"], item["Size"]) for item in page.get("Contents", ()))
        uploads = self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", ())
        found.update((f"upload:{upload['Key']}", -1) for upload in uploads)
        return frozenset(found)

    def bad_options(self) -> list[tuple[str, Callable[[], object]]]:
        from adapters.blob.s3 import S3BlobStore

        good = self.options()
        bad: list[tuple[str, object]] = [
            ("bucket", ""),
            ("bucket", "a/b"),
            ("bucket", None),
            ("prefix", "/abs"),
            ("prefix", "a/../b"),
            ("prefix", "a//b"),
            ("prefix", 5),
            ("prefix", "p" * 600),
            ("endpoint_url", "127.0.0.1:25000"),
            ("endpoint_url", "ftp://host"),
            ("endpoint_url", "http://"),
            ("endpoint_url", "http://host:99999"),
            ("endpoint_url", 25000),
            ("region", ""),
            ("region", "eu west"),
            ("access_key_id", ""),
            ("secret_access_key", None),
            ("session_token", ""),
            ("create_bucket", "yes"),
            ("multipart_threshold", -1),
            ("multipart_threshold", 1.5),
            ("part_size", 5 * 1024 * 1024 - 1),
            ("part_size", True),
            ("connect_timeout", 0),
            ("connect_timeout", float("nan")),
            ("read_timeout", -1),
            ("read_timeout", "60"),
            ("max_attempts", 0),
            ("presign_expires_max", 0),
            ("presign_expires_max", 7 * 24 * 3600 + 1),
            ("addressing_style", "dns"),
            ("clock", object()),
        ]

        def build(option: str, value: object) -> Callable[[], object]:
            return lambda: S3BlobStore(**{**good, option: value})

        return [
            *((option, build(option, value)) for option, value in bad),
            ("session_token", lambda: S3BlobStore(bucket=self.bucket, session_token="token")),
        ]

    def close(self) -> None:
        super().close()
        for upload in self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", ()):
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            objects = [{"Key": item["Key"]} for item in page.get("Contents", ())]
            if objects:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects})
        self.client.delete_bucket(Bucket=self.bucket)
        self.client.close()


#: Backend name -> how to build it. An adapter against a real server (S3) is one more entry.
BACKENDS: dict[str, type[Backend]] = {
    "memory": MemoryBackend,
    "localfs": LocalFsBackend,
    "s3": S3Backend,
}


@pytest.fixture(
    params=[pytest.param(name, marks=getattr(cls, "marks", ())) for name, cls in BACKENDS.items()]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """One adapter's backend, with its own clock and a scratch directory."""
    built = BACKENDS[request.param](request, tmp_path)
    yield built
    built.close()


@pytest.fixture
def blob_store(backend: Backend) -> BlobStore:
    """An empty store of the adapter under test, on node "a"."""
    return backend.make("a")


@pytest.fixture
def make_store(backend: Backend) -> Callable[[str], BlobStore]:
    """Build another store with the same configuration, as a process on the given node."""
    return backend.make


@pytest.fixture
def advance(backend: Backend) -> Callable[[float], None]:
    """Let time pass for the stores under test."""
    return backend.advance


_unique = itertools.count()


def fresh_prefix() -> str:
    """A prefix no other example uses, so hypothesis examples share one store safely."""
    return f"x{next(_unique)}/"


def same_info(first: BlobInfo, second: BlobInfo) -> None:
    """Assert two infos describe the same object (timestamps to the second)."""
    assert (first.key, first.size, first.etag) == (second.key, second.size, second.etag)
    assert (first.content_type, first.cache_control, first.expires) == (
        second.content_type,
        second.cache_control,
        second.expires,
    )
    assert abs(first.last_modified - second.last_modified) <= dt.timedelta(seconds=1)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def utf8_sorted(keys: Any) -> list[str]:
    return sorted(keys, key=lambda key: key.encode("utf-8"))


def walk(store: BlobStore, prefix: str = "", page_size: int = 1000) -> list[BlobInfo]:
    """Every object under ``prefix``, page by page; fails (rather than loops) on a cursor
    that does not move forward."""
    infos: list[BlobInfo] = []
    after: str | None = None
    for _ in range(10_000):
        page = store.list(prefix, after=after, limit=page_size)
        assert len(page.items) <= page_size
        infos.extend(page.items)
        if page.next_after is None:
            return infos
        assert page.items
        assert page.next_after == page.items[-1].key
        assert after is None or page.next_after.encode() > after.encode()
        after = page.next_after
    raise AssertionError("the listing never ended")


def all_keys(store: BlobStore, prefix: str = "") -> list[str]:
    return [info.key for info in walk(store, prefix)]


class GeneratedFile:
    """A binary file object whose bytes come from a generator; records each read's size."""

    def __init__(self, size: int, *, fail_after: int | None = None) -> None:
        self.size = size
        self.requests: list[int | None] = []
        self._pieces = self._generate()
        self._buffer = b""
        self._delivered = 0
        self._fail_after = fail_after

    def _generate(self) -> Iterator[bytes]:
        produced = 0
        for counter in itertools.count():
            if produced >= self.size:
                return
            block = hashlib.sha256(str(counter).encode()).digest() * 2048  # 64 KiB
            block = block[: self.size - produced]
            produced += len(block)
            yield block

    def read(self, size: int | None = -1) -> bytes:
        self.requests.append(size)
        if size is None or size < 0:
            size = self.size  # a caller that asks for everything gets it, and the test sees
        if self._fail_after is not None and self._delivered >= self._fail_after:
            raise Interrupted("the upload was cut off")
        while len(self._buffer) < size:
            piece = next(self._pieces, None)
            if piece is None:
                break
            self._buffer += piece
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        self._delivered += len(data)
        return data

    def expected(self) -> tuple[bytes, str]:
        """The whole content (for small sizes) and its SHA-256, computed independently."""
        content = b"".join(GeneratedFile(self.size)._generate())
        return content, sha(content)


class Interrupted(Exception):
    """Raised by a source stream mid-way; the store must let it through unchanged."""


# -- round trips ---------------------------------------------------------------------------


def test_put_bytes_then_read_them_back_with_their_metadata(blob_store: BlobStore) -> None:
    expires = dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    info = blob_store.put(
        "photos/1.jpg",
        b"\xff\xd8jpeg bytes",
        content_type="image/jpeg",
        cache_control="public, max-age=31536000, immutable",
        expires=expires,
    )
    assert info.key == "photos/1.jpg"
    assert info.size == len(b"\xff\xd8jpeg bytes")
    assert info.etag == sha(b"\xff\xd8jpeg bytes")
    assert info.content_type == "image/jpeg"
    assert info.cache_control == "public, max-age=31536000, immutable"
    assert info.expires == expires
    assert info.last_modified.utcoffset() == dt.timedelta(0)
    assert blob_store.get("photos/1.jpg") == b"\xff\xd8jpeg bytes"
    same_info(blob_store.head("photos/1.jpg"), info)
    with blob_store.open("photos/1.jpg") as stream:
        same_info(stream.info, info)
        assert stream.read() == b"\xff\xd8jpeg bytes"
    (listed,) = blob_store.list().items
    same_info(listed, info)


def test_stats_count_operations_and_bytes(blob_store: BlobStore) -> None:
    blob_store.put("stats/a", b"12345")
    blob_store.put("stats/b", io.BytesIO(b"123"))
    assert blob_store.get("stats/a") == b"12345"
    blob_store.head("stats/b")
    with pytest.raises(NotFound):
        blob_store.open("stats/none")
    with pytest.raises(InvalidKey):
        blob_store.head("../escape")
    blob_store.list("stats/")
    blob_store.delete("stats/a")
    assert blob_store.stats.operations() == {
        ("put", "ok"): 2,
        ("open", "ok"): 2,
        ("head", "ok"): 1,
        ("head", "error"): 1,
        ("list", "ok"): 1,
        ("delete", "ok"): 1,
    }
    assert blob_store.stats.bytes() == {"put": 8, "open": 5}


def test_metadata_defaults(blob_store: BlobStore) -> None:
    info = blob_store.put("plain", b"x")
    assert (info.content_type, info.cache_control, info.expires) == (
        DEFAULT_CONTENT_TYPE,
        None,
        None,
    )
    same_info(blob_store.head("plain"), info)


@pytest.mark.parametrize("data", [b"", bytearray(b"bytearray"), memoryview(b"memoryview")])
def test_put_accepts_empty_and_bytes_like_data(blob_store: BlobStore, data: Any) -> None:
    info = blob_store.put("k", data)
    assert blob_store.get("k") == bytes(data)
    assert info.size == len(data)
    assert info.etag == sha(bytes(data))


def test_put_accepts_a_binary_file(blob_store: BlobStore, tmp_path: Path) -> None:
    source = tmp_path / "upload.bin"
    source.write_bytes(os.urandom(300_000))
    with source.open("rb") as handle:
        info = blob_store.put("uploads/u.bin", handle)
    assert blob_store.get("uploads/u.bin") == source.read_bytes()
    assert info.etag == sha(source.read_bytes())


def test_a_large_stream_is_read_in_bounded_chunks_and_read_back_in_chunks(
    blob_store: BlobStore,
) -> None:
    size = 20 * 1024 * 1024 + 12_345
    source = GeneratedFile(size)
    _, expected_etag = source.expected()
    info = blob_store.put("big/stream.bin", source)  # type: ignore[arg-type]
    # The store never asked for the whole stream at once.
    assert source.requests
    assert all(isinstance(n, int) and 0 < n <= 16 * 1024 * 1024 for n in source.requests)
    assert (info.size, info.etag) == (size, expected_etag)
    digest = hashlib.sha256()
    largest = total = 0
    with blob_store.open("big/stream.bin") as stream:
        assert stream.info.size == size
        head = stream.read(1000)
        digest.update(head)
        total += len(head)
        for chunk in stream:
            largest = max(largest, len(chunk))
            digest.update(chunk)
            total += len(chunk)
    assert (total, digest.hexdigest()) == (size, expected_etag)
    assert largest < size  # delivered in pieces, not as one object


def test_partial_reads_return_exactly_what_was_asked(blob_store: BlobStore) -> None:
    content = bytes(range(256)) * 4000
    blob_store.put("r", content)
    with blob_store.open("r") as stream:
        assert stream.read(0) == b""
        assert stream.read(10) == content[:10]
        assert stream.read(300_000) == content[10:300_010]
        assert stream.read() == content[300_010:]
        assert stream.read(5) == b""


def test_closing_streams_releases_them(blob_store: BlobStore) -> None:
    blob_store.put("f", b"y" * 600_000)
    before = sum(1 for _ in Path("/proc/self/fd").iterdir())
    for _ in range(100):
        with blob_store.open("f") as stream:
            stream.read(10)  # left half-read, then closed
        stream.close()  # idempotent
    assert sum(1 for _ in Path("/proc/self/fd").iterdir()) <= before + 10


def test_etag_is_the_sha256_of_the_content_on_every_key(blob_store: BlobStore) -> None:
    one = blob_store.put("a/one", b"same bytes", content_type="text/plain")
    two = blob_store.put("b/two", io.BytesIO(b"same bytes"), content_type="image/png")
    three = blob_store.put("c/three", b"other bytes")
    assert one.etag == two.etag == sha(b"same bytes")
    assert three.etag != one.etag
    assert blob_store.head("b/two").etag == one.etag


def test_expires_is_kept_as_utc_to_the_second(blob_store: BlobStore) -> None:
    paris = dt.timezone(dt.timedelta(hours=2))
    given_time = dt.datetime(2030, 1, 2, 12, 30, 15, 987_654, tzinfo=paris)
    info = blob_store.put("e", b"x", expires=given_time)
    stored = blob_store.head("e").expires
    assert stored == info.expires == dt.datetime(2030, 1, 2, 10, 30, 15, tzinfo=dt.UTC)
    assert stored is not None
    assert stored.utcoffset() == dt.timedelta(0)


def test_last_modified_follows_the_clock(
    blob_store: BlobStore, advance: Callable[[float], None]
) -> None:
    first = blob_store.put("t", b"1").last_modified
    advance(5)
    second = blob_store.put("t", b"2").last_modified
    assert second - first >= dt.timedelta(seconds=4)
    same_info(blob_store.head("t"), blob_store.list().items[0])


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"content_type": ""}, "content_type"),
        ({"content_type": "text/html\r\nSet-Cookie: a=b"}, "content_type"),
        ({"content_type": "image/jpég"}, "content_type"),
        ({"content_type": None}, "content_type"),
        ({"content_type": "x/" + "y" * 300}, "content_type"),
        ({"cache_control": ""}, "cache_control"),
        ({"cache_control": "max-age=1\nX: y"}, "cache_control"),
        ({"cache_control": 3600}, "cache_control"),
        ({"expires": dt.datetime(2030, 1, 1)}, "timezone-aware"),
        ({"expires": dt.date(2030, 1, 1)}, "expires"),
        ({"expires": "2030-01-01"}, "expires"),
    ],
)
def test_bad_metadata_is_refused_and_nothing_is_written(
    backend: Backend, blob_store: BlobStore, metadata: dict[str, Any], message: str
) -> None:
    blob_store.put("m", b"old", content_type="text/plain")
    before = backend.snapshot()
    with pytest.raises(InvalidInput, match=message):
        blob_store.put("m", b"new", **metadata)
    with pytest.raises(InvalidInput, match=message):
        blob_store.put("fresh", b"new", **metadata)
    assert blob_store.get("m") == b"old"
    assert blob_store.head("m").content_type == "text/plain"
    assert not blob_store.exists("fresh")
    assert backend.snapshot() == before


@pytest.mark.parametrize(
    "data", ["text, not bytes", 12, None, io.StringIO("a text file")], ids=type
)
def test_data_that_is_not_bytes_is_refused(
    backend: Backend, blob_store: BlobStore, data: Any
) -> None:
    before = backend.snapshot()
    with pytest.raises(InvalidInput, match=r"bytes|binary"):
        blob_store.put("d", data)
    assert not blob_store.exists("d")
    assert backend.snapshot() == before


def test_missing_objects_are_not_found(blob_store: BlobStore) -> None:
    with pytest.raises(NotFound):
        blob_store.head("nope")
    with pytest.raises(NotFound):
        blob_store.open("nope")
    with pytest.raises(NotFound):
        blob_store.get("a/nope")
    assert not blob_store.exists("nope")
    blob_store.put("a", b"x")
    with pytest.raises(NotFound):  # "a" is an object, not a folder of objects
        blob_store.head("a/nope")
    with pytest.raises(LookupError):  # NotFound is a LookupError too
        blob_store.head("nope")


def test_put_replaces_content_and_all_metadata(blob_store: BlobStore) -> None:
    blob_store.put(
        "o",
        b"first",
        content_type="text/plain",
        cache_control="no-store",
        expires=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
    )
    info = blob_store.put("o", b"second version", content_type="text/html")
    assert blob_store.get("o") == b"second version"
    same_info(blob_store.head("o"), info)
    assert (info.cache_control, info.expires, info.size) == (None, None, 14)
    assert all_keys(blob_store) == ["o"]


def test_delete_removes_and_is_idempotent(backend: Backend, blob_store: BlobStore) -> None:
    empty = backend.snapshot()
    blob_store.delete("never/there")
    blob_store.put("deep/er/key", b"x")
    blob_store.delete("deep/er/key")
    blob_store.delete("deep/er/key")
    assert not blob_store.exists("deep/er/key")
    assert blob_store.list().items == ()
    assert backend.snapshot() == empty


def test_a_key_and_keys_below_it_coexist(blob_store: BlobStore) -> None:
    blob_store.put("a", b"file a", content_type="text/plain")
    blob_store.put("a/b", b"file a/b")
    blob_store.put("a/b/c", b"file a/b/c")
    assert blob_store.get("a") == b"file a"
    assert blob_store.get("a/b") == b"file a/b"
    assert blob_store.get("a/b/c") == b"file a/b/c"
    assert all_keys(blob_store) == ["a", "a/b", "a/b/c"]
    blob_store.delete("a/b")
    assert all_keys(blob_store) == ["a", "a/b/c"]
    blob_store.delete("a")
    assert blob_store.get("a/b/c") == b"file a/b/c"
    assert all_keys(blob_store) == ["a/b/c"]


def test_keys_differing_only_in_case_or_normalisation_are_different_objects(
    blob_store: BlobStore,
) -> None:
    pairs = {
        "Photo.JPG": b"upper",
        "photo.jpg": b"lower",
        "caf\u00e9": b"nfc",
        "cafe\u0301": b"nfd",
    }
    for key, data in pairs.items():
        blob_store.put(key, data)
    for key, data in pairs.items():
        assert blob_store.get(key) == data
    assert all_keys(blob_store) == utf8_sorted(pairs)


LONG_KEYS = [
    "x" * 1024,  # one segment at the key limit, far past any file name limit
    "é" * 512,
    "dir/" + "ü" * 300 + "/leaf",
    "/".join(["s" * 250] * 4) + "/end",
    "a/" * 511 + "z",  # as deep as a key can go
    "Ü" * 200 + "/" + "é" * 200,
]


@pytest.mark.parametrize("key", LONG_KEYS, ids=lambda key: f"{len(key.encode())}B")
def test_long_keys_and_segments_work(blob_store: BlobStore, key: str) -> None:
    sibling = key[:-1] + ("0" if key[-1] != "0" else "1")
    blob_store.put(key, b"long", content_type="text/plain")
    blob_store.put(sibling, b"sibling")
    assert blob_store.get(key) == b"long"
    assert blob_store.head(key).key == key
    assert all_keys(blob_store) == utf8_sorted([key, sibling])
    assert all_keys(blob_store, key[: len(key) // 2]) == utf8_sorted([key, sibling])
    blob_store.delete(key)
    assert all_keys(blob_store) == [sibling]
    blob_store.delete(sibling)
    assert blob_store.list().items == ()


# -- listing -------------------------------------------------------------------------------

ORDER_KEYS = [
    "a",
    "a/b",
    "a-b",
    "a0",
    "a/b/c",
    "a b",
    "b",
    "A",
    "Z",
    "é",
    "e",
    "😀",
    "\uff61",  # 3 bytes in UTF-8 but sorts after U+1F600 in UTF-16: UTF-8 order puts it first
    "~",
    ".hidden",
    "a/.b",
]


def test_list_is_in_utf8_byte_order(blob_store: BlobStore) -> None:
    for key in reversed(ORDER_KEYS):
        blob_store.put(key, key.encode())
    expected = utf8_sorted(ORDER_KEYS)
    assert expected.index("a-b") < expected.index("a/b") < expected.index("a0")
    assert expected.index("\uff61") < expected.index("😀")
    assert [info.key for info in blob_store.list().items] == expected
    for info in blob_store.list().items:
        assert info.etag == sha(info.key.encode())


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("a", ["a", "a b", "a-b", "a/.b", "a/b", "a/b/c", "a0"]),
        ("a/", ["a/.b", "a/b", "a/b/c"]),
        ("a/b", ["a/b", "a/b/c"]),
        ("a/b/", ["a/b/c"]),
        ("a/.", ["a/.b"]),
        (".", [".hidden"]),
        ("é", ["é"]),
        ("q", []),
        ("a/b/c/", []),
        ("nothing/here/", []),
    ],
)
def test_list_by_prefix(blob_store: BlobStore, prefix: str, expected: list[str]) -> None:
    for key in ORDER_KEYS:
        blob_store.put(key, b"")
    page = blob_store.list(prefix)
    assert [info.key for info in page.items] == expected
    assert page.next_after is None


def test_list_after_returns_only_greater_keys(blob_store: BlobStore) -> None:
    for key in ORDER_KEYS:
        blob_store.put(key, b"")
    expected = utf8_sorted(ORDER_KEYS)
    for after in [*ORDER_KEYS, "", "a/", "a/b/", "a/zzz", "zzz", "\U0010ffff", "0"]:
        page = blob_store.list(after=after)
        assert [info.key for info in page.items] == [
            key for key in expected if key.encode() > after.encode()
        ]
    assert [info.key for info in blob_store.list("a", after="a-b").items] == [
        "a/.b",
        "a/b",
        "a/b/c",
        "a0",
    ]


def test_pages_end_with_none_and_resume_without_gaps(blob_store: BlobStore) -> None:
    for key in ["k1", "k2", "k3", "k4", "k5"]:
        blob_store.put(key, b"")
    first = blob_store.list(limit=2)
    assert [i.key for i in first.items] == ["k1", "k2"]
    assert first.next_after == "k2"
    second = blob_store.list(after=first.next_after, limit=3)
    assert [i.key for i in second.items] == ["k3", "k4", "k5"]
    assert second.next_after is None  # exactly full, and nothing follows
    assert blob_store.list(limit=5).next_after is None
    assert blob_store.list(limit=4).next_after == "k4"
    assert blob_store.list(after="k5").items == ()


@pytest.mark.parametrize("limit", [0, -1, 1001, True, 2.5, "10", None])
def test_list_limit_must_be_1_to_1000(blob_store: BlobStore, limit: Any) -> None:
    with pytest.raises(InvalidInput):
        blob_store.list(limit=limit)


def test_list_limit_bounds_are_accepted(blob_store: BlobStore) -> None:
    blob_store.put("one", b"")
    assert len(blob_store.list(limit=1).items) == 1
    assert len(blob_store.list(limit=1000).items) == 1


def test_iter_all_walks_pages(blob_store: BlobStore) -> None:
    keys = [f"p/{n:03d}" for n in range(23)]
    for key in keys:
        blob_store.put(key, b"")
    assert [info.key for info in walk(blob_store, "p/", page_size=5)] == keys
    assert [info.key for info in blob_store.iter_all("p/", page_size=5)] == keys


SEGMENTS = st.sampled_from(["a", "b", "a-b", "a0", "é", "Z", "😀", "~", ".x", "long" * 70])
KEYS = st.lists(SEGMENTS, min_size=1, max_size=3).map("/".join)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(keys=st.sets(KEYS, min_size=0, max_size=20), page_size=st.integers(1, 7), data=st.data())
def test_paging_visits_every_key_exactly_once_in_order(
    blob_store: BlobStore, keys: set[str], page_size: int, data: st.DataObject
) -> None:
    base = fresh_prefix()
    for key in keys:
        blob_store.put(base + key, b"")
    inner = data.draw(st.sampled_from(["", "a", "a/", "é", "a-", "long"]), label="prefix")
    prefix = base + inner
    seen = [info.key for info in walk(blob_store, prefix, page_size=page_size)]
    assert seen == utf8_sorted(base + key for key in keys if key.startswith(inner))
    for key in keys:
        blob_store.delete(base + key)


# -- bad keys ------------------------------------------------------------------------------

BAD_KEYS: list[Any] = [
    "",
    "/etc/passwd",
    "../outside",
    "a/../../outside",
    "a/..",
    "./a",
    ".",
    "..",
    "a//b",
    "a/",
    "..\\..\\outside",
    "a\\b",
    "nul\x00byte",
    "new\nline",
    "del\x7f",
    "lone\ud800",
    "x" * 1025,
    "é" * 513,
    None,
    b"bytes",
    7,
]


@pytest.mark.parametrize("key", BAD_KEYS, ids=lambda key: repr(key)[:20])
def test_bad_keys_are_refused_by_every_operation_and_nothing_is_written(
    backend: Backend, blob_store: BlobStore, key: Any
) -> None:
    blob_store.put("keep/me", b"kept")
    before = backend.snapshot()
    operations: list[Callable[[], object]] = [
        lambda: blob_store.put(key, b"payload"),
        lambda: blob_store.put(key, io.BytesIO(b"payload")),
        lambda: blob_store.open(key),
        lambda: blob_store.head(key),
        lambda: blob_store.get(key),
        lambda: blob_store.exists(key),
        lambda: blob_store.delete(key),
    ]
    if Capability.DIRECT_URL in blob_store.capabilities:
        operations.append(lambda: blob_store.url_for(key))
    for operation in operations:
        with pytest.raises(InvalidKey):
            operation()
    assert backend.snapshot() == before
    assert all_keys(blob_store) == ["keep/me"]


BAD_PREFIXES: list[Any] = ["/", "/a", "../", "a//", "a/./", "..\\", "a\x00", "x" * 1025, 5]


@pytest.mark.parametrize("prefix", BAD_PREFIXES, ids=lambda prefix: repr(prefix)[:20])
def test_bad_prefixes_are_refused_by_list(blob_store: BlobStore, prefix: Any) -> None:
    with pytest.raises(InvalidKey):
        blob_store.list(prefix)


def test_after_must_be_text(blob_store: BlobStore) -> None:
    with pytest.raises(InvalidInput):
        blob_store.list(after=b"a")  # type: ignore[arg-type]


# -- atomicity -----------------------------------------------------------------------------


def test_an_interrupted_put_keeps_the_old_object_and_leaves_nothing_behind(
    backend: Backend, blob_store: BlobStore
) -> None:
    blob_store.put("photo", b"the old photo", content_type="image/png", cache_control="no-cache")
    old = blob_store.head("photo")
    before = backend.snapshot()
    source = GeneratedFile(3 * 1024 * 1024, fail_after=1024 * 1024)
    with pytest.raises(Interrupted):  # the caller's own error, unchanged
        blob_store.put("photo", source, content_type="image/jpeg")  # type: ignore[arg-type]
    assert blob_store.get("photo") == b"the old photo"
    same_info(blob_store.head("photo"), old)
    assert backend.snapshot() == before


def test_an_interrupted_put_of_a_new_key_leaves_no_object(
    backend: Backend, blob_store: BlobStore
) -> None:
    before = backend.snapshot()
    source = GeneratedFile(2 * 1024 * 1024, fail_after=512 * 1024)
    with pytest.raises(Interrupted):
        blob_store.put("new/photo", source)  # type: ignore[arg-type]
    assert not blob_store.exists("new/photo")
    assert blob_store.list().items == ()
    assert backend.snapshot() == before


def _version(writer: int, round_: int) -> tuple[bytes, str, str]:
    """Content and metadata that name each other, so a mismatch is visible."""
    tag = f"w{writer}r{round_}"
    content = tag.encode() * (40_000 + 1_000 * writer)  # several chunks, sizes differ
    return content, f"application/x-{tag}", f"max-age={writer * 100 + round_}"


def _check_whole(content: bytes, info: BlobInfo) -> None:
    """Assert ``content`` and ``info`` belong to the same complete put."""
    tag = info.content_type.removeprefix("application/x-")
    writer, round_ = (int(n) for n in tag[1:].split("r"))
    expected, _, cache_control = _version(writer, round_)
    assert content == expected
    assert (info.size, info.etag, info.cache_control) == (len(content), sha(content), cache_control)


def test_concurrent_writers_of_one_key_leave_one_whole_version(
    backend: Backend, blob_store: BlobStore
) -> None:
    empty = backend.snapshot()
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def write(writer: int) -> None:
        try:
            start.wait()
            for round_ in range(6):
                content, content_type, cache_control = _version(writer, round_)
                source = io.BytesIO(content) if round_ % 2 else content
                blob_store.put(
                    "contended", source, content_type=content_type, cache_control=cache_control
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    with blob_store.open("contended") as stream:
        _check_whole(stream.read(), stream.info)
    _check_whole(blob_store.get("contended"), blob_store.head("contended"))
    assert all_keys(blob_store) == ["contended"]
    blob_store.delete("contended")
    assert backend.snapshot() == empty  # no version was orphaned


def test_readers_and_listers_see_whole_objects_while_writers_replace_them(
    blob_store: BlobStore,
) -> None:
    content, content_type, cache_control = _version(0, 0)
    blob_store.put("hot", content, content_type=content_type, cache_control=cache_control)
    done = threading.Event()
    errors: list[BaseException] = []
    reads = [0]

    def write() -> None:
        try:
            for round_ in range(1, 41):
                content, content_type, cache_control = _version(round_ % 3, round_)
                blob_store.put(
                    "hot", content, content_type=content_type, cache_control=cache_control
                )
                if round_ % 3:
                    blob_store.put("flicker", content, content_type=content_type)
                else:
                    blob_store.delete("flicker")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    def read() -> None:
        try:
            while not done.is_set() or reads[0] < 20:
                # "hot" always exists: a reader never sees it missing, nor half-written.
                with blob_store.open("hot") as stream:
                    _check_whole(stream.read(), stream.info)
                info = blob_store.head("hot")
                _check_whole(_version(*_tag(info))[0], info)
                try:
                    with blob_store.open("flicker") as stream:
                        assert stream.read() == _version(*_tag(stream.info))[0]
                except NotFound:
                    pass  # deleted, and not yet put again
                keys = all_keys(blob_store)
                assert "hot" in keys
                assert keys == utf8_sorted(set(keys))
                reads[0] += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert reads[0] >= 20


def test_puts_and_deletes_of_neighbouring_keys_do_not_disturb_each_other(
    backend: Backend, blob_store: BlobStore
) -> None:
    # Deleting the last object under a prefix may tidy up after it (localfs removes empty
    # directories) while another thread puts a neighbour there: no put may be lost.
    empty = backend.snapshot()
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def churn(worker: int) -> None:
        try:
            start.wait()
            for round_ in range(15):
                key = f"shared/dir/{worker}-{round_}"
                blob_store.put(key, key.encode())
                if round_ < 14:
                    blob_store.delete(key)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    survivors = [f"shared/dir/{worker}-14" for worker in range(4)]
    assert all_keys(blob_store) == survivors
    for key in survivors:
        assert blob_store.get(key) == key.encode()
        blob_store.delete(key)
    assert backend.snapshot() == empty


def _tag(info: BlobInfo) -> tuple[int, int]:
    writer, round_ = info.content_type.removeprefix("application/x-w").split("r")
    return int(writer), int(round_)


# -- capabilities --------------------------------------------------------------------------


def test_capabilities_are_declared_as_blobstore_capabilities(blob_store: BlobStore) -> None:
    assert isinstance(blob_store.capabilities, frozenset)
    assert blob_store.capabilities <= {
        Capability.SHARED,
        Capability.DIRECT_URL,
        Capability.DURABLE,
    }


def test_direct_urls_iff_declared(
    backend: Backend, blob_store: BlobStore, advance: Callable[[float], None]
) -> None:
    blob_store.put("photos/one.jpg", b"one", content_type="image/jpeg")
    blob_store.put("photos/two.jpg", b"two", content_type="image/jpeg")
    if Capability.DIRECT_URL not in blob_store.capabilities:
        with pytest.raises(UnsupportedOperation):
            blob_store.url_for("photos/one.jpg")
        with pytest.raises(UnsupportedOperation):
            blob_store.url_for("not/stored", expires_in=60)
        return
    url = blob_store.url_for("photos/one.jpg", expires_in=60)
    assert backend.follow_url(blob_store, url) == b"one"
    assert backend.follow_url(blob_store, url.replace("one.jpg", "two.jpg")) is None
    last = url[-1]
    assert backend.follow_url(blob_store, url[:-1] + ("0" if last != "0" else "1")) is None
    assert isinstance(blob_store.url_for("not/stored/yet.jpg"), str)  # proves nothing
    advance(58)
    assert backend.follow_url(blob_store, url) == b"one"
    advance(3)
    assert backend.follow_url(blob_store, url) is None


def test_direct_urls_quote_awkward_keys(backend: Backend, blob_store: BlobStore) -> None:
    if Capability.DIRECT_URL not in blob_store.capabilities:
        with pytest.raises(UnsupportedOperation):
            blob_store.url_for("a b/ü?#&.jpg")
        return
    key = "a b/ü?#&%.jpg"
    blob_store.put(key, b"awkward")
    url = blob_store.url_for(key)
    assert quote("ü") in url
    assert " " not in url
    assert backend.follow_url(blob_store, url) == b"awkward"


@pytest.mark.parametrize("expires_in", [0, -5, 7 * 24 * 3600 + 1, True, 1.5, "60"])
def test_url_lifetime_is_bounded(blob_store: BlobStore, expires_in: Any) -> None:
    expected = (
        InvalidInput if Capability.DIRECT_URL in blob_store.capabilities else UnsupportedOperation
    )
    with pytest.raises(expected):
        blob_store.url_for("k", expires_in=expires_in)


def test_other_servers_see_the_objects_iff_shared(
    blob_store: BlobStore, make_store: Callable[[str], BlobStore]
) -> None:
    other = make_store("b")
    blob_store.put("from/a", b"written on a")
    other.put("from/b", b"written on b")
    if Capability.SHARED in blob_store.capabilities:
        assert other.get("from/a") == b"written on a"
        assert blob_store.get("from/b") == b"written on b"
    else:
        with pytest.raises(NotFound):
            other.head("from/a")
        with pytest.raises(NotFound):
            blob_store.head("from/b")


def test_objects_survive_a_restart_iff_durable(
    blob_store: BlobStore, make_store: Callable[[str], BlobStore]
) -> None:
    info = blob_store.put("kept", b"across restarts", content_type="text/plain")
    blob_store.close()
    blob_store.close()  # idempotent
    restarted = make_store("a")
    if Capability.DURABLE in blob_store.capabilities:
        assert restarted.get("kept") == b"across restarts"
        same_info(restarted.head("kept"), info)
    else:
        with pytest.raises(NotFound):
            restarted.head("kept")


def test_verify_url_refuses_forged_and_malformed_links(blob_store: BlobStore) -> None:
    blob_store.put("photos/one.jpg", b"one", content_type="image/jpeg")
    far = str(2**40)
    for expires, signature in [(far, "0" * 64), (None, None), ("soon", "x"), (far, "")]:
        assert blob_store.verify_url("photos/one.jpg", expires, signature) is False


def test_a_healthy_store_answers_ping(blob_store: BlobStore) -> None:
    blob_store.ping()


def test_create_schema_is_idempotent_and_the_store_works_after_it(blob_store: BlobStore) -> None:
    """``create_schema()`` says whether the backend keeps tables, the same each time, and
    leaves a working store (``db init`` and the library entry call it on every start)."""
    store = blob_store
    first = store.create_schema()
    assert isinstance(first, bool)
    assert store.create_schema() is first
    store.ping()


@pytest.mark.parametrize("name", [name for name, cls in BACKENDS.items() if cls.breakable])
def test_an_unreachable_backend_raises_backend_unavailable(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    backend = BACKENDS[name](request, tmp_path)
    store = backend.make("a")
    store.put("k", b"x")
    backend.break_backend(store)
    operations: list[Callable[[], object]] = [
        store.ping,
        lambda: store.put("k", b"y"),
        lambda: store.put("new", io.BytesIO(b"y")),
        lambda: store.head("k"),
        lambda: store.open("k"),
        lambda: store.list(),
        lambda: store.delete("k"),
    ]
    for operation in operations:
        with pytest.raises(BackendUnavailable):
            operation()
    backend.close()


def test_bad_options_raise_config_error_naming_the_option(backend: Backend) -> None:
    for option, build in backend.bad_options():
        with pytest.raises(ConfigError) as caught:
            build()
        assert caught.value.key == option, caught.value


# -- against a model -----------------------------------------------------------------------

MODEL_KEYS = [
    "a",
    "a/b",
    "a-b",
    "a0",
    "a/b/c",
    "é",
    "Z/x",
    "L" * 300,
    "é" * 150 + "/z",
    "a b",
]
MODEL_PREFIXES = ["", "a", "a/", "a/b", "é", "L", "Z/"]


class BlobStoreModel(RuleBasedStateMachine):
    """Puts, deletes, reads and listings agree with a dict of key -> (bytes, content type)."""

    store: ClassVar[BlobStore]

    def __init__(self) -> None:
        super().__init__()
        self.base = fresh_prefix()
        self.model: dict[str, tuple[bytes, str]] = {}

    @rule(
        key=st.sampled_from(MODEL_KEYS),
        data=st.binary(max_size=64),
        content_type=st.sampled_from(["text/plain", "image/png"]),
        as_stream=st.booleans(),
    )
    def put(self, key: str, data: bytes, content_type: str, as_stream: bool) -> None:
        source: Any = io.BytesIO(data) if as_stream else data
        info = self.store.put(self.base + key, source, content_type=content_type)
        assert (info.size, info.etag) == (len(data), sha(data))
        self.model[key] = (data, content_type)

    @rule(key=st.sampled_from(MODEL_KEYS))
    def delete(self, key: str) -> None:
        self.store.delete(self.base + key)
        self.model.pop(key, None)

    @rule(key=st.sampled_from(MODEL_KEYS))
    def head_and_open(self, key: str) -> None:
        if key not in self.model:
            with pytest.raises(NotFound):
                self.store.head(self.base + key)
            with pytest.raises(NotFound):
                self.store.open(self.base + key)
            return
        data, content_type = self.model[key]
        info = self.store.head(self.base + key)
        assert (info.size, info.etag, info.content_type) == (len(data), sha(data), content_type)
        assert self.store.get(self.base + key) == data

    @precondition(lambda self: bool(self.model))
    @rule(prefix=st.sampled_from(MODEL_PREFIXES), page_size=st.integers(1, 4))
    def list_pages(self, prefix: str, page_size: int) -> None:
        listed = [
            info.key.removeprefix(self.base)
            for info in walk(self.store, self.base + prefix, page_size=page_size)
        ]
        assert listed == utf8_sorted(key for key in self.model if key.startswith(prefix))

    @invariant()
    def listing_matches_the_model(self) -> None:
        infos = self.store.list(self.base).items
        assert [info.key.removeprefix(self.base) for info in infos] == utf8_sorted(self.model)
        for info in infos:
            data, content_type = self.model[info.key.removeprefix(self.base)]
            assert (info.etag, info.content_type) == (sha(data), content_type)

    def teardown(self) -> None:
        for key in self.model:
            self.store.delete(self.base + key)


def test_the_store_behaves_like_a_dict(blob_store: BlobStore) -> None:
    machine = type("BoundBlobStoreModel", (BlobStoreModel,), {"store": blob_store})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=20,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        ),
    )
    assert blob_store.list().items == ()
