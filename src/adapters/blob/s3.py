"""A BlobStore in an S3 bucket (AWS S3 or any S3-compatible endpoint), through boto3.

Backend: "s3"
Install extra: s3
Options: ``bucket`` (bucket name; required), ``prefix`` (key prefix inside the bucket, a
    valid blob prefix, stored with a trailing ``/``; default ``""``: the whole bucket),
    ``endpoint_url`` (``http(s)://host[:port]`` of an S3-compatible server; default
    ``None``: AWS), ``region`` (default ``"us-east-1"``), ``access_key_id``,
    ``secret_access_key``, ``session_token`` (default ``None``: the usual AWS credential
    chain), ``create_bucket`` (create the bucket on first use if missing, for tests and
    development; default ``False``), ``multipart_threshold`` (bytes; larger objects go up
    in parts; default 8 MiB), ``part_size`` (bytes per part, 5 MiB..5 GiB; default 8 MiB),
    ``connect_timeout`` (seconds; default 5), ``read_timeout`` (seconds; default 60),
    ``max_attempts`` (total tries per request, retries included; default 3),
    ``presign_expires_max`` (longest ``url_for`` lifetime in seconds; default 604800),
    ``addressing_style`` (``"auto"``, ``"path"`` or ``"virtual"``; default ``"auto"``),
    ``clock`` (a :class:`~scalecore.clock.Clock` for ``last_modified``; the system clock
    when ``None``).
Differs from the port: with a ``prefix``, keys are limited to 1024 bytes minus the
    prefix's length (S3's key limit). ``list`` costs one LIST request plus one HEAD per
    object returned (the sha256 etag and the headers are not in S3's listings); the HEADs
    run 16 at a time. A stream larger than ``multipart_threshold`` is uploaded to a
    temporary key and then copied into place by the server (S3 fixes metadata when an
    upload starts, before the sha256 is known). ``url_for`` links are checked by S3 against
    its own clock, not ``clock``. Objects written by other tools (no ``scalecore-sha256``
    metadata) raise ``BackendUnavailable`` when read, headed or listed. S3 answers a HEAD
    in a missing bucket with a bare 404, so ``head``/``exists`` there say ``NotFound``;
    every other operation, and ``ping``, says ``BackendUnavailable``.

How a ``put`` stays atomic. S3 makes an object visible only when its single PUT, its
CopyObject or its CompleteMultipartUpload succeeds, so readers see the old object or the
new one. Bytes (whose sha256 is computed before anything is sent) go up with one PutObject,
or, above ``multipart_threshold``, as a multipart upload straight to the key with their
metadata. A file object is read ``part_size`` bytes at a time while hashing; if it ends
within ``multipart_threshold`` bytes it goes up with one PutObject; otherwise its parts go
to a multipart upload at a temporary key ``{prefix}.scalecore-tmp/{random}/`` (a name no
valid blob key can take: it ends with ``/``), which is completed, copied to the real key
with the final metadata, and deleted. On any failure, the caller's stream raising included,
the multipart upload is aborted and the temporary object deleted before the exception
propagates; the caller's own exception propagates unchanged. Only a crash, or an endpoint
that stops answering, can leave an incomplete upload or a temporary object behind: neither
is visible through the store, and a lifecycle rule on the bucket removes them.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import email.utils
import hashlib
import logging
import math
import re
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, NoReturn
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from urllib3.exceptions import HTTPError as Urllib3Error

from adapters.blob import (
    CHUNK_SIZE,
    MAX_URL_SECONDS,
    check_expires_in,
    check_list_args,
    check_metadata,
    iter_data,
    key_order,
    utc_from_timestamp,
)
from scalecore.capabilities import Capability
from scalecore.clock import Clock, SystemClock
from scalecore.errors import (
    BackendUnavailable,
    ConfigError,
    InvalidInput,
    InvalidKey,
    NotFound,
    ScalecoreError,
    TooLarge,
)
from scalecore.keys import MAX_BLOB_KEY_BYTES, validate_blob_key
from scalecore.ports.blobstore import (
    DEFAULT_CONTENT_TYPE,
    BlobInfo,
    BlobPage,
    BlobStore,
    BlobStream,
)
from scalecore.validate import check_int, check_seconds

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["S3BlobStore"]

_log = logging.getLogger(__name__)

MiB = 1024 * 1024
GiB = 1024 * MiB
#: S3's bounds on a part of a multipart upload (all but the last) and on their number.
_MIN_PART = 5 * MiB
_MAX_PART = 5 * GiB
_MAX_PARTS = 10_000
#: The largest object one PutObject or one CopyObject may write.
_MAX_SINGLE = 5 * GiB
#: Bytes per UploadPartCopy when a temporary object is too large for one CopyObject.
_COPY_PART = 1 * GiB
#: HEAD requests a listing runs at once; the connection pool leaves room for other callers.
_LIST_HEADS = 16
_POOL_CONNECTIONS = 32
_MAX_PREFIX_BYTES = 512
#: User metadata (``x-amz-meta-*``) this store writes on every object.
_META_SHA256 = "scalecore-sha256"
_META_MTIME = "scalecore-mtime"
_TEMP_DIR = ".scalecore-tmp/"

_SHA256 = re.compile(r"[0-9a-f]{64}")
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")
_REGION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_ACCESS_CODES = frozenset(
    {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
)
_BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})
#: Everything the driver raises: botocore's own errors, service errors, and what the HTTP
#: layer may let through while a response body is streamed.
_DRIVER_ERRORS = (BotoCoreError, ClientError, Urllib3Error, OSError)


class S3BlobStore(BlobStore):
    """Objects in one S3 bucket (under an optional prefix); safe to share between threads
    and, like the bucket itself, between processes and servers.

    Nothing connects until the first operation; the boto3 client is then built once and
    shared (boto3 clients are thread-safe, sessions are not). Every error of boto3,
    botocore or the HTTP layer becomes a :mod:`scalecore.errors` error: ``NotFound`` for a
    missing object, ``TooLarge`` for an object S3 refuses as too large, and
    ``BackendUnavailable`` for everything else (unreachable endpoint, missing bucket,
    refused credentials, server errors after ``max_attempts`` tries).
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.SHARED, Capability.DURABLE, Capability.DIRECT_URL}
    )

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        create_bucket: bool = False,
        multipart_threshold: int = 8 * MiB,
        part_size: int = 8 * MiB,
        connect_timeout: float = 5,
        read_timeout: float = 60,
        max_attempts: int = 3,
        presign_expires_max: int = MAX_URL_SECONDS,
        addressing_style: str = "auto",
        clock: Clock | None = None,
    ) -> None:
        self._bucket = _check_bucket(bucket)
        self._prefix = _check_prefix(prefix)
        self._endpoint_url = _check_endpoint(endpoint_url)
        if not isinstance(region, str) or not _REGION.fullmatch(region):
            raise ConfigError(
                f"must be a region name such as 'eu-west-1': {region!r}", key="region"
            )
        self._region = region
        self._credentials = _check_credentials(access_key_id, secret_access_key, session_token)
        if not isinstance(create_bucket, bool):
            raise ConfigError("must be true or false", key="create_bucket")
        self._create_bucket = create_bucket
        self._threshold = check_int(
            multipart_threshold,
            "multipart_threshold",
            minimum=0,
            maximum=_MAX_SINGLE,
            error=ConfigError,
        )
        self._part_size = check_int(
            part_size, "part_size", minimum=_MIN_PART, maximum=_MAX_PART, error=ConfigError
        )
        self._presign_max = check_int(
            presign_expires_max,
            "presign_expires_max",
            minimum=1,
            maximum=MAX_URL_SECONDS,
            error=ConfigError,
        )
        if addressing_style not in ("auto", "path", "virtual"):
            raise ConfigError(
                f"must be 'auto', 'path' or 'virtual': {addressing_style!r}",
                key="addressing_style",
            )
        self._config = Config(
            region_name=region,
            # SigV4 everywhere: presigned SigV2 links are refused by newer regions.
            signature_version="s3v4",
            connect_timeout=check_seconds(
                connect_timeout, "connect_timeout", maximum=3600, error=ConfigError
            ),
            read_timeout=check_seconds(
                read_timeout, "read_timeout", maximum=3600, error=ConfigError
            ),
            retries={
                "total_max_attempts": check_int(
                    max_attempts, "max_attempts", minimum=1, maximum=20, error=ConfigError
                ),
                "mode": "standard",
            },
            max_pool_connections=_POOL_CONNECTIONS,
            s3={"addressing_style": addressing_style},  # type: ignore[arg-type]  # a checked Literal
        )
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigError(f"must be a Clock, not {type(clock).__name__}", key="clock")
        self._clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._client_instance: S3Client | None = None
        self._bucket_ready = not create_bucket
        self._heads: ThreadPoolExecutor | None = None

    # -- the port --------------------------------------------------------------------------

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        cache_control: str | None = None,
        expires: dt.datetime | None = None,
    ) -> BlobInfo:
        key = validate_blob_key(key)
        s3_key = self._s3_key(key)
        content_type, cache_control, expires = check_metadata(content_type, cache_control, expires)
        chunks = iter_data(data)  # refuses anything but bytes or a binary file, reads nothing
        meta = _Meta(key, s3_key, content_type, cache_control, expires)
        if isinstance(data, bytes | bytearray | memoryview):
            return self._put_known(meta, data)
        return self._put_stream(meta, chunks)

    def open(self, key: str) -> BlobStream:
        key = validate_blob_key(key)
        s3_key = self._s3_key(key)
        with self._s3("read", key, not_found=True):
            response = self._client().get_object(Bucket=self._bucket, Key=s3_key)
        body = response["Body"]
        try:
            info = self._info(key, response)
        except BaseException:
            body.close()
            raise
        return BlobStream(info, self._read_body(body, key), body.close)

    def head(self, key: str) -> BlobInfo:
        key = validate_blob_key(key)
        info = self._head(key)
        if info is None:
            raise NotFound(f"no blob {key!r}")
        return info

    def delete(self, key: str) -> None:
        key = validate_blob_key(key)
        s3_key = self._s3_key(key)
        with self._s3("delete", key):
            # S3 answers 204 whether or not the key existed: idempotent by itself.
            self._client().delete_object(Bucket=self._bucket, Key=s3_key)

    def list(self, prefix: str = "", *, after: str | None = None, limit: int = 1000) -> BlobPage:
        """Return a page of objects; see the port. Costs one LIST request (rarely more)
        plus one HEAD per object returned, 16 at a time.

        Objects deleted between the LIST and their HEAD are left out; objects in the bucket
        whose names are not valid blob keys (another tool's, or this store's temporary
        uploads) are skipped.
        """
        prefix, after_order = check_list_args(prefix, after, limit)
        start_after = None if after is None else _utf8_head(after)
        while True:
            keys, more = self._list_keys(prefix, start_after, after_order, limit)
            infos = [info for info in self._head_many(keys) if info is not None]
            if infos or not more:
                return BlobPage(tuple(infos), infos[-1].key if more else None)
            # Every key of this page vanished before its HEAD: carry on after them.
            start_after, after_order = keys[-1], key_order(keys[-1])

    def url_for(self, key: str, *, expires_in: int = 3600) -> str:
        """Return a presigned (SigV4) GET URL for the object, valid ``expires_in`` seconds
        by S3's clock: 1..``presign_expires_max`` seconds, else ``InvalidInput``.

        Signing happens locally (no request). A link signed with temporary credentials
        (``session_token``, an assumed role) stops working when they expire.
        """
        key = validate_blob_key(key)
        s3_key = self._s3_key(key)
        expires_in = check_expires_in(expires_in)
        if expires_in > self._presign_max:
            raise InvalidInput(
                f"expires_in must be at most {self._presign_max} seconds (presign_expires_max)"
            )
        with self._s3("sign a URL for", key):
            url: str = self._client().generate_presigned_url(
                "get_object",
                Params={"Bucket": self._bucket, "Key": s3_key},
                ExpiresIn=expires_in,
            )
        return url

    def ping(self) -> None:
        """Raise ``BackendUnavailable`` unless the endpoint answers and the bucket exists
        and is accessible with these credentials (one HeadBucket request)."""
        with self._s3("reach the bucket"):
            self._client().head_bucket(Bucket=self._bucket)

    def close(self) -> None:
        """Close the client's connections and the listing threads. Idempotent; a later
        call builds a new client."""
        with self._lock:
            client, self._client_instance = self._client_instance, None
            heads, self._heads = self._heads, None
        if heads is not None:
            heads.shutdown(wait=True)
        if client is not None:
            with contextlib.suppress(*_DRIVER_ERRORS):
                client.close()

    def stored_digests(self, first: str, last: str) -> dict[str, tuple[int, str]]:
        """Size and S3 ETag of every object whose key sorts from ``first`` to ``last``
        (both included), as the bucket lists them now: ``{key: (size, etag)}``.

        Costs one LIST request per 1,000 objects in the range and no HEAD. The ETag is
        computed by S3 from the bytes it stored; for an object written by one PutObject
        without SSE-KMS or SSE-C it is the hex MD5 of those bytes, otherwise it is some
        other string (a caller comparing MD5s must then read the object instead). Keys
        that are not valid blob keys are left out.
        """
        first, last = validate_blob_key(first), validate_blob_key(last)
        low, high = key_order(first), key_order(last)
        client = self._client_for("list", first)
        request: dict[str, Any] = {"Bucket": self._bucket, "Prefix": self._prefix}
        start_after = self._prefix + _utf8_head(first)[:-1]
        if start_after:  # a proper start of ``first`` sorts before it; the loop drops the rest
            request["StartAfter"] = start_after
        found: dict[str, tuple[int, str]] = {}
        while True:
            with self._s3("list", first):
                response = client.list_objects_v2(**request)
            for item in response.get("Contents", ()):
                relative = item["Key"][len(self._prefix) :]
                if not _is_blob_key(relative):
                    continue
                order = key_order(relative)
                if order > high:
                    return found
                if order >= low:
                    found[relative] = (int(item["Size"]), str(item.get("ETag", "")).strip('"'))
            if not response.get("IsTruncated"):
                return found
            request.pop("StartAfter", None)
            request["ContinuationToken"] = response["NextContinuationToken"]

    # -- writing ---------------------------------------------------------------------------

    def _put_known(self, meta: _Meta, data: bytes | bytearray | memoryview) -> BlobInfo:
        """Store bytes already in memory: their hash is known before the upload starts."""
        view = memoryview(data).cast("B")  # iter_data has checked that this works
        etag = hashlib.sha256(view).hexdigest()
        size = len(view)
        if size <= self._threshold:
            body = data if isinstance(data, bytes | bytearray) else view.tobytes()
            return self._put_single(meta, body, etag)
        client = self._client_for("store", meta.key)
        info = self._info_for(meta, size, etag)
        upload_id = self._start_upload(client, meta.s3_key, self._object_args(info), meta.key)
        try:
            parts: builtins.list[dict[str, Any]] = []
            for number, start in enumerate(range(0, size, self._part_size), start=1):
                body = view[start : start + self._part_size].tobytes()
                parts.append(self._upload_part(client, meta, meta.s3_key, upload_id, number, body))
                del body
            self._complete(client, meta.s3_key, upload_id, parts, meta.key)
        except BaseException:
            self._abort(client, meta.s3_key, upload_id)
            raise
        return info

    def _put_single(self, meta: _Meta, body: bytes | bytearray, etag: str) -> BlobInfo:
        info = self._info_for(meta, len(body), etag)
        with self._s3("store", meta.key):
            self._client().put_object(
                Bucket=self._bucket,
                Key=meta.s3_key,
                Body=body,  # type: ignore[arg-type]  # botocore takes bytearray; the stubs omit it
                **self._object_args(info),
            )
        return info

    def _put_stream(self, meta: _Meta, chunks: Iterator[bytes | memoryview]) -> BlobInfo:
        """Store a file object read in chunks, holding at most about one part in memory."""
        digest = hashlib.sha256()
        part = bytearray()
        ended = _fill(part, chunks, digest, self._threshold + 1)
        if ended:  # within the threshold: one PutObject
            return self._put_single(meta, part, digest.hexdigest())
        client = self._client_for("store", meta.key)
        temp = f"{self._prefix}{_TEMP_DIR}{uuid.uuid4().hex}/"
        upload_id = self._start_upload(
            client, temp, {"ContentType": DEFAULT_CONTENT_TYPE}, meta.key
        )
        size = 0
        try:
            parts: builtins.list[dict[str, Any]] = []
            ended = _fill(part, chunks, digest, self._part_size)
            while True:
                if len(parts) == _MAX_PARTS:
                    raise TooLarge(
                        f"blob {meta.key!r} is larger than {_MAX_PARTS} parts of "
                        f"{self._part_size} bytes; raise part_size"
                    )
                size += len(part)
                parts.append(self._upload_part(client, meta, temp, upload_id, len(parts) + 1, part))
                if ended:
                    break
                part = bytearray()  # drop the sent part before reading the next one
                ended = _fill(part, chunks, digest, self._part_size)
                if not part:  # the stream ended exactly on a part boundary
                    break
            del part
            self._complete(client, temp, upload_id, parts, meta.key)
        except BaseException:
            self._abort(client, temp, upload_id)
            raise
        try:
            info = self._info_for(meta, size, digest.hexdigest())
            self._copy_into_place(client, temp, meta, info)
        finally:
            self._delete_quietly(client, temp)
        return info

    def _copy_into_place(self, client: S3Client, temp: str, meta: _Meta, info: BlobInfo) -> None:
        """Copy the completed temporary object to its key, replacing its metadata: one
        CopyObject up to 5 GiB, a multipart copy above."""
        source = {"Bucket": self._bucket, "Key": temp}
        args = self._object_args(info)
        if info.size <= _MAX_SINGLE:
            with self._s3("store", meta.key):
                client.copy_object(
                    Bucket=self._bucket,
                    Key=meta.s3_key,
                    CopySource=source,  # type: ignore[arg-type]
                    MetadataDirective="REPLACE",
                    **args,
                )
            return
        upload_id = self._start_upload(client, meta.s3_key, args, meta.key)
        try:
            step = max(_COPY_PART, math.ceil(info.size / _MAX_PARTS))
            parts: builtins.list[dict[str, Any]] = []
            for number, start in enumerate(range(0, info.size, step), start=1):
                end = min(start + step, info.size) - 1
                with self._s3("store", meta.key):
                    response = client.upload_part_copy(
                        Bucket=self._bucket,
                        Key=meta.s3_key,
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource=source,  # type: ignore[arg-type]
                        CopySourceRange=f"bytes={start}-{end}",
                    )
                parts.append({"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]})
            self._complete(client, meta.s3_key, upload_id, parts, meta.key)
        except BaseException:
            self._abort(client, meta.s3_key, upload_id)
            raise

    def _start_upload(self, client: S3Client, s3_key: str, args: dict[str, Any], key: str) -> str:
        with self._s3("store", key):
            response = client.create_multipart_upload(Bucket=self._bucket, Key=s3_key, **args)
        upload_id: str = response["UploadId"]
        return upload_id

    def _upload_part(
        self,
        client: S3Client,
        meta: _Meta,
        s3_key: str,
        upload_id: str,
        number: int,
        body: bytes | bytearray,
    ) -> dict[str, Any]:
        with self._s3("store", meta.key):
            response = client.upload_part(
                Bucket=self._bucket,
                Key=s3_key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,  # type: ignore[arg-type]  # bytearray, as above
            )
        return {"PartNumber": number, "ETag": response["ETag"]}

    def _complete(
        self,
        client: S3Client,
        s3_key: str,
        upload_id: str,
        parts: builtins.list[dict[str, Any]],
        key: str,
    ) -> None:
        with self._s3("store", key):
            client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=s3_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
            )

    def _abort(self, client: S3Client, s3_key: str, upload_id: str) -> None:
        # Clean-up must never hide the error that made it necessary.
        try:
            client.abort_multipart_upload(Bucket=self._bucket, Key=s3_key, UploadId=upload_id)
        except _DRIVER_ERRORS as exc:
            _log.warning(
                "S3 bucket %r: could not abort the multipart upload of %r (%s); "
                "a lifecycle rule must remove it",
                self._bucket,
                s3_key,
                type(exc).__name__,
            )

    def _delete_quietly(self, client: S3Client, s3_key: str) -> None:
        try:
            client.delete_object(Bucket=self._bucket, Key=s3_key)
        except _DRIVER_ERRORS as exc:
            _log.warning(
                "S3 bucket %r: could not delete the temporary object %r (%s); "
                "a lifecycle rule must remove it",
                self._bucket,
                s3_key,
                type(exc).__name__,
            )

    def _info_for(self, meta: _Meta, size: int, etag: str) -> BlobInfo:
        return BlobInfo(
            key=meta.key,
            size=size,
            etag=etag,
            content_type=meta.content_type,
            cache_control=meta.cache_control,
            expires=meta.expires,
            last_modified=utc_from_timestamp(self._clock.now()),
        )

    @staticmethod
    def _object_args(info: BlobInfo) -> dict[str, Any]:
        """The headers and metadata every write of an object carries."""
        args: dict[str, Any] = {
            "ContentType": info.content_type,
            "Metadata": {
                _META_SHA256: info.etag,
                _META_MTIME: info.last_modified.isoformat(),
            },
        }
        if info.cache_control is not None:
            args["CacheControl"] = info.cache_control
        if info.expires is not None:
            args["Expires"] = info.expires
        return args

    # -- reading ---------------------------------------------------------------------------

    def _head(self, key: str) -> BlobInfo | None:
        """The object's info, or ``None`` if there is no object under ``key``."""
        try:
            with self._s3("head", key, not_found=True):
                response = self._client().head_object(Bucket=self._bucket, Key=self._s3_key(key))
        except NotFound:
            return None
        return self._info(key, response)

    def _head_many(self, keys: builtins.list[str]) -> builtins.list[BlobInfo | None]:
        if len(keys) <= 1:
            return [self._head(key) for key in keys]
        with self._lock:
            if self._heads is None:
                self._heads = ThreadPoolExecutor(_LIST_HEADS, thread_name_prefix="s3-blob-head")
            heads = self._heads
        try:
            futures = [heads.submit(self._head, key) for key in keys]
        except RuntimeError:  # close() shut the pool down meanwhile: do the HEADs here
            return [self._head(key) for key in keys]
        return [future.result() for future in futures]

    def _list_keys(
        self, prefix: str, start_after: str | None, after: bytes | None, limit: int
    ) -> tuple[builtins.list[str], bool]:
        """Up to ``limit`` valid blob keys after ``after`` under ``prefix``, and whether
        more follow."""
        client = self._client_for("list", prefix)
        request: dict[str, Any] = {
            "Bucket": self._bucket,
            "Prefix": self._prefix + prefix,
            # One more than asked, so a full page usually shows whether more follow.
            "MaxKeys": min(limit + 1, 1000),
        }
        if start_after is not None:
            request["StartAfter"] = self._prefix + start_after
        keys: builtins.list[str] = []
        while True:
            with self._s3("list", prefix):
                response = client.list_objects_v2(**request)
            for item in response.get("Contents", ()):
                relative = item["Key"][len(self._prefix) :]
                if not _is_blob_key(relative) or (
                    after is not None and key_order(relative) <= after
                ):
                    continue
                if len(keys) == limit:
                    return keys, True
                keys.append(relative)
            if not response.get("IsTruncated"):
                return keys, False
            request.pop("StartAfter", None)
            request["ContinuationToken"] = response["NextContinuationToken"]

    def _info(self, key: str, response: Any) -> BlobInfo:
        """A :class:`BlobInfo` from a HeadObject or GetObject response."""
        metadata = response.get("Metadata") or {}
        etag = metadata.get(_META_SHA256)
        if not isinstance(etag, str) or not _SHA256.fullmatch(etag):
            raise BackendUnavailable(
                f"S3 bucket {self._bucket!r}: object {self._s3_key(key)!r} has no "
                f"x-amz-meta-{_META_SHA256}; it was not written by this store"
            )
        return BlobInfo(
            key=key,
            size=int(response["ContentLength"]),
            etag=etag,
            content_type=response.get("ContentType") or DEFAULT_CONTENT_TYPE,
            cache_control=response.get("CacheControl"),
            expires=_expires(response),
            last_modified=_mtime(metadata.get(_META_MTIME), response.get("LastModified")),
        )

    def _read_body(self, body: Any, key: str) -> Iterator[bytes]:
        with self._s3("read", key):
            yield from body.iter_chunks(CHUNK_SIZE)

    # -- the client and its errors ---------------------------------------------------------

    def _client(self) -> S3Client:
        """The shared client, built on first use; called inside :meth:`_s3`."""
        client = self._client_instance
        if client is not None and self._bucket_ready:
            return client
        with self._lock:
            if self._client_instance is None:
                # A session per store, used only here under the lock: sessions are not
                # thread-safe; the client built from it is.
                session = boto3.session.Session(
                    aws_access_key_id=self._credentials.get("aws_access_key_id"),
                    aws_secret_access_key=self._credentials.get("aws_secret_access_key"),
                    aws_session_token=self._credentials.get("aws_session_token"),
                    region_name=self._region,
                )
                self._client_instance = session.client(
                    "s3", endpoint_url=self._endpoint_url, config=self._config
                )
            if not self._bucket_ready:
                self._make_bucket(self._client_instance)
                self._bucket_ready = True
            return self._client_instance

    def _client_for(self, action: str, subject: str) -> S3Client:
        with self._s3(action, subject):
            return self._client()

    def _make_bucket(self, client: S3Client) -> None:
        request: dict[str, Any] = {"Bucket": self._bucket}
        if self._region != "us-east-1":
            request["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        try:
            client.create_bucket(**request)
        except ClientError as exc:
            if _code(exc) not in _BUCKET_EXISTS_CODES:
                raise

    def _s3_key(self, key: str) -> str:
        s3_key = self._prefix + key
        if len(s3_key.encode("utf-8")) > MAX_BLOB_KEY_BYTES:
            raise InvalidKey(
                f"blob key is longer than {MAX_BLOB_KEY_BYTES - len(self._prefix.encode())} "
                f"bytes, the most this store's prefix {self._prefix!r} leaves"
            )
        return s3_key

    @contextlib.contextmanager
    def _s3(
        self, action: str, subject: str | None = None, *, not_found: bool = False
    ) -> Iterator[None]:
        """Turn every driver error raised inside into a scalecore error (see :meth:`_fail`)."""
        try:
            yield
        except _DRIVER_ERRORS as exc:
            self._fail(exc, action, subject, not_found=not_found)

    def _fail(
        self, exc: BaseException, action: str, subject: str | None, *, not_found: bool
    ) -> NoReturn:
        """Raise the scalecore error for a driver error: the one translation of this module."""
        where = f"S3 bucket {self._bucket!r}" + (
            f" at {self._endpoint_url}" if self._endpoint_url else ""
        )
        what = f"cannot {action}" + ("" if subject is None else f" {subject!r}")
        error: ScalecoreError
        if isinstance(exc, ClientError):
            code = _code(exc)
            message = str(exc.response.get("Error", {}).get("Message") or "")
            if not_found and code in _NOT_FOUND_CODES:
                error = NotFound(f"no blob {subject!r}")
            elif code == "EntityTooLarge":
                error = TooLarge(f"{where}: {what}: the object is too large for S3")
            elif code == "KeyTooLongError":
                error = InvalidKey(f"{where}: {what}: the key is too long for this endpoint")
            elif code == "NoSuchBucket" or (code in _NOT_FOUND_CODES and subject is None):
                error = BackendUnavailable(f"{where}: {what}: the bucket does not exist")
            elif code in _ACCESS_CODES:
                error = BackendUnavailable(
                    f"{where}: {what}: access denied ({code}); check the credentials and "
                    "the bucket policy"
                )
            else:
                error = BackendUnavailable(f"{where}: {what}: {code} {message}".rstrip())
        elif isinstance(exc, NoCredentialsError):
            error = BackendUnavailable(
                f"{where}: {what}: no AWS credentials found; set access_key_id and "
                "secret_access_key, or configure the AWS credential chain"
            )
        else:
            error = BackendUnavailable(f"{where}: {what}: {type(exc).__name__}: {exc}")
        raise error from exc


class _Meta:
    """What one ``put`` writes besides the bytes."""

    __slots__ = ("cache_control", "content_type", "expires", "key", "s3_key")

    def __init__(
        self,
        key: str,
        s3_key: str,
        content_type: str,
        cache_control: str | None,
        expires: dt.datetime | None,
    ) -> None:
        self.key = key
        self.s3_key = s3_key
        self.content_type = content_type
        self.cache_control = cache_control
        self.expires = expires


def _fill(buffer: bytearray, chunks: Iterator[bytes | memoryview], digest: Any, size: int) -> bool:
    """Append chunks (hashing them) until ``buffer`` holds ``size`` bytes or more; return
    whether the source ended. The caller's stream raises through here unchanged."""
    while len(buffer) < size:
        chunk = next(chunks, None)
        if chunk is None:
            return True
        digest.update(chunk)
        buffer += chunk
    return False


def _is_blob_key(name: str) -> bool:
    try:
        validate_blob_key(name)
    except InvalidKey:
        return False
    return True


def _utf8_head(text: str) -> str:
    """The longest start of ``text`` that encodes as UTF-8 (S3 takes nothing else); it
    sorts at or before ``text``, and the listing filters the rest exactly."""
    for index, char in enumerate(text):
        if "\ud800" <= char <= "\udfff":
            return text[:index]
    return text


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "")


def _expires(response: Any) -> dt.datetime | None:
    raw = response.get("ExpiresString")
    if isinstance(raw, str):
        try:
            return email.utils.parsedate_to_datetime(raw).astimezone(dt.UTC)
        except (TypeError, ValueError):
            return None
    value = response.get("Expires")
    return value.astimezone(dt.UTC) if isinstance(value, dt.datetime) else None


def _mtime(stored: object, last_modified: object) -> dt.datetime:
    """The time this store's clock gave the object, or S3's ``LastModified`` if absent."""
    if isinstance(stored, str):
        with contextlib.suppress(ValueError):
            value = dt.datetime.fromisoformat(stored)
            if value.tzinfo is not None:
                return value.astimezone(dt.UTC)
    if isinstance(last_modified, dt.datetime):
        return last_modified.astimezone(dt.UTC)
    return dt.datetime.now(dt.UTC)


# -- options ------------------------------------------------------------------------------


def _check_bucket(bucket: object) -> str:
    if not isinstance(bucket, str) or not _BUCKET.fullmatch(bucket):
        raise ConfigError(
            f"must be an S3 bucket name (3-255 letters, digits, '.', '_' or '-'): {bucket!r}",
            key="bucket",
        )
    return bucket


def _check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str):
        raise ConfigError(f"must be a string, not {type(prefix).__name__}", key="prefix")
    if not prefix:
        return ""
    try:
        validate_blob_key(prefix.removesuffix("/"))
    except InvalidKey as exc:
        raise ConfigError(f"must be a valid blob key prefix: {exc}", key="prefix") from None
    if len(prefix.encode("utf-8")) > _MAX_PREFIX_BYTES:
        raise ConfigError(f"must be at most {_MAX_PREFIX_BYTES} bytes long", key="prefix")
    return prefix.removesuffix("/") + "/"


def _check_endpoint(endpoint_url: object) -> str | None:
    if endpoint_url is None:
        return None
    if not isinstance(endpoint_url, str):
        raise ConfigError(
            f"must be a URL string, not {type(endpoint_url).__name__}", key="endpoint_url"
        )
    try:
        parts = urlsplit(endpoint_url)
        parts.port  # noqa: B018 (raises ValueError for a malformed port)
    except ValueError as exc:
        raise ConfigError(f"is not a valid URL: {exc}", key="endpoint_url") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or re.search(r"[\x00-\x20\x7f]", endpoint_url)
    ):
        raise ConfigError(
            f"must look like http(s)://host[:port]: {endpoint_url!r}", key="endpoint_url"
        )
    return endpoint_url


def _check_credentials(
    access_key_id: object, secret_access_key: object, session_token: object
) -> dict[str, str]:
    # Never put a credential's value in a message.
    for name, value in (
        ("access_key_id", access_key_id),
        ("secret_access_key", secret_access_key),
        ("session_token", session_token),
    ):
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError("must be a non-empty string or unset", key=name)
    if (access_key_id is None) != (secret_access_key is None):
        missing = "secret_access_key" if secret_access_key is None else "access_key_id"
        raise ConfigError(
            "access_key_id and secret_access_key go together; set both or neither", key=missing
        )
    if session_token is not None and access_key_id is None:
        raise ConfigError("needs access_key_id and secret_access_key", key="session_token")
    if access_key_id is None:
        return {}
    credentials = {
        "aws_access_key_id": str(access_key_id),
        "aws_secret_access_key": str(secret_access_key),
    }
    if session_token is not None:
        credentials["aws_session_token"] = str(session_token)
    return credentials
