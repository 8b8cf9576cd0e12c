"""BlobStore adapters, and the argument checks every one of them shares.

One adapter per module: ``memory`` (:class:`~adapters.blob.memory.MemoryBlobStore`) and
``localfs`` (:class:`~adapters.blob.localfs.LocalFsBlobStore`). The helpers below give every
adapter the same answer to the same bad argument, so a caller moving from one backend to
another meets no new errors: metadata checks, the page-size bound, the URL lifetime bound,
the UTF-8 byte order of keys, and reading ``put`` data in bounded chunks.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Iterator
from typing import BinaryIO

from scalecore.errors import InvalidInput
from scalecore.keys import validate_blob_prefix
from scalecore.validate import check_int

__all__ = [
    "CHUNK_SIZE",
    "MAX_LIST_LIMIT",
    "MAX_URL_SECONDS",
    "check_expires_in",
    "check_list_args",
    "check_metadata",
    "iter_data",
    "key_order",
    "utc_from_timestamp",
]

#: Bytes read from a ``put`` source or a stored file at a time.
CHUNK_SIZE = 256 * 1024
#: S3's page bound; ``list(limit=...)`` must lie in 1..MAX_LIST_LIMIT on every adapter.
MAX_LIST_LIMIT = 1000
#: S3's bound on a presigned URL's lifetime (7 days); kept on every adapter.
MAX_URL_SECONDS = 7 * 24 * 3600

_MAX_CONTENT_TYPE = 255
_MAX_CACHE_CONTROL = 1024
# Header values travel as HTTP headers (and S3 metadata): printable ASCII only, so no
# header injection and the same value round-trips on every backend.
_HEADER_VALUE = re.compile(r"[\x20-\x7e]+")


def check_metadata(
    content_type: object, cache_control: object, expires: object
) -> tuple[str, str | None, dt.datetime | None]:
    """Return ``put``'s metadata normalised, or raise ``InvalidInput`` naming the bad one.

    ``content_type`` is non-empty printable ASCII; ``cache_control`` is ``None`` or non-empty
    printable ASCII; ``expires`` is ``None`` or a timezone-aware datetime, returned in UTC
    truncated to the second (HTTP dates carry no more).
    """
    if not isinstance(content_type, str) or not _HEADER_VALUE.fullmatch(content_type):
        raise InvalidInput(f"content_type must be non-empty printable ASCII: {content_type!r}")
    if len(content_type) > _MAX_CONTENT_TYPE:
        raise InvalidInput(f"content_type is longer than {_MAX_CONTENT_TYPE} characters")
    if cache_control is not None:
        if not isinstance(cache_control, str) or not _HEADER_VALUE.fullmatch(cache_control):
            raise InvalidInput(
                f"cache_control must be None or non-empty printable ASCII: {cache_control!r}"
            )
        if len(cache_control) > _MAX_CACHE_CONTROL:
            raise InvalidInput(f"cache_control is longer than {_MAX_CACHE_CONTROL} characters")
    if expires is not None:
        if not isinstance(expires, dt.datetime):
            raise InvalidInput(f"expires must be a datetime or None, not {type(expires).__name__}")
        if expires.tzinfo is None or expires.utcoffset() is None:
            raise InvalidInput(f"expires must be timezone-aware: {expires!r}")
        expires = expires.astimezone(dt.UTC).replace(microsecond=0)
    return content_type, cache_control, expires


def check_list_args(prefix: object, after: object, limit: object) -> tuple[str, bytes | None]:
    """Validate ``list``'s arguments; return the prefix and ``after`` as UTF-8 bytes.

    Raises ``InvalidKey`` for a bad prefix, ``InvalidInput`` for a non-text ``after`` or a
    ``limit`` outside 1..:data:`MAX_LIST_LIMIT`.
    """
    valid_prefix = validate_blob_prefix(prefix)
    check_int(limit, "limit", minimum=1, maximum=MAX_LIST_LIMIT)
    if after is None:
        return valid_prefix, None
    if not isinstance(after, str):
        raise InvalidInput(f"after must be a string or None, not {type(after).__name__}")
    return valid_prefix, key_order(after)


def check_expires_in(expires_in: object) -> int:
    """Return ``url_for``'s lifetime if it is an int in 1..:data:`MAX_URL_SECONDS`."""
    return check_int(expires_in, "expires_in", minimum=1, maximum=MAX_URL_SECONDS)


def key_order(key: str) -> bytes:
    """The sort key of a blob key: its UTF-8 bytes, the order S3 lists in."""
    return key.encode("utf-8", "surrogatepass")


def utc_from_timestamp(seconds: float) -> dt.datetime:
    """An aware UTC datetime for Unix ``seconds`` (from a :class:`~scalecore.clock.Clock`)."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def iter_data(data: object) -> Iterator[bytes | memoryview]:
    """Return an iterator over ``put``'s data in chunks of about :data:`CHUNK_SIZE` bytes.

    ``data`` is bytes-like or a binary file object read with ``read(CHUNK_SIZE)`` until it
    returns ``b""``; it is never asked for everything at once. Anything else raises
    ``InvalidInput`` here, before a byte is read; a file object whose ``read`` returns text
    raises it on the first chunk. An exception raised by the file object propagates unchanged.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            view = memoryview(data).cast("B")
        except TypeError as exc:
            raise InvalidInput(f"data must be a contiguous bytes-like object: {exc}") from None
        return _slices(view)
    if isinstance(data, str | io.TextIOBase) or not callable(getattr(data, "read", None)):
        raise InvalidInput(f"data must be bytes or a binary file object, not {type(data).__name__}")
    return _reads(data)  # type: ignore[arg-type]


def _slices(view: memoryview) -> Iterator[memoryview]:
    for start in range(0, len(view), CHUNK_SIZE):
        yield view[start : start + CHUNK_SIZE]


def _reads(source: BinaryIO) -> Iterator[bytes | memoryview]:
    while True:
        chunk: object = source.read(CHUNK_SIZE)
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise InvalidInput(
                f"data.read() returned {type(chunk).__name__}; open the file in binary mode"
            )
        if not chunk:
            return
        yield chunk if isinstance(chunk, bytes) else memoryview(chunk).cast("B")
