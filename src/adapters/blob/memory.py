"""A BlobStore in a dict: for tests and for trying the service without a disk.

Backend: "memory"
Install extra: none
Options: ``clock`` (a :class:`~scalecore.clock.Clock` for ``last_modified``; the system
    clock when ``None``).
Differs from the port: objects live in this process's memory, whole (a streamed ``put``
    is read in chunks but then kept as one ``bytes``), and vanish with the process; each
    instance is its own store. Declares no capability: not ``SHARED``, not ``DURABLE``, no
    ``DIRECT_URL`` (``url_for`` raises ``UnsupportedOperation``).
"""

from __future__ import annotations

import bisect
import builtins
import datetime as dt
import hashlib
import threading
from collections.abc import Iterator
from typing import BinaryIO, ClassVar

from adapters.blob import (
    CHUNK_SIZE,
    check_list_args,
    check_metadata,
    iter_data,
    key_order,
    utc_from_timestamp,
)
from scalecore.capabilities import Capability
from scalecore.clock import Clock, SystemClock
from scalecore.errors import ConfigError, NotFound
from scalecore.keys import validate_blob_key
from scalecore.ports.blobstore import (
    DEFAULT_CONTENT_TYPE,
    BlobInfo,
    BlobPage,
    BlobStore,
    BlobStream,
)

__all__ = ["MemoryBlobStore"]


class MemoryBlobStore(BlobStore):
    """Objects in a dict guarded by one lock; safe to share between threads.

    A ``put`` reads its whole source before taking the lock, so a reader sees the old object
    or the new one, and a failed read leaves the old one in place.
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def __init__(self, *, clock: Clock | None = None) -> None:
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigError(f"must be a Clock, not {type(clock).__name__}", key="clock")
        self._clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._objects: dict[str, tuple[bytes, BlobInfo]] = {}
        # Keys as UTF-8 bytes, kept sorted, so a page is a bisect and a slice.
        self._order: builtins.list[bytes] = []

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
        content_type, cache_control, expires = check_metadata(content_type, cache_control, expires)
        digest = hashlib.sha256()
        parts: builtins.list[bytes] = []
        for chunk in iter_data(data):
            digest.update(chunk)
            parts.append(bytes(chunk))
        content = b"".join(parts)
        info = BlobInfo(
            key=key,
            size=len(content),
            etag=digest.hexdigest(),
            content_type=content_type,
            cache_control=cache_control,
            expires=expires,
            last_modified=utc_from_timestamp(self._clock.now()),
        )
        with self._lock:
            if key not in self._objects:
                bisect.insort(self._order, key_order(key))
            self._objects[key] = (content, info)
        return info

    def open(self, key: str) -> BlobStream:
        content, info = self._get(key)
        return BlobStream(info, _chunks(content))

    def head(self, key: str) -> BlobInfo:
        return self._get(key)[1]

    def delete(self, key: str) -> None:
        key = validate_blob_key(key)
        with self._lock:
            if self._objects.pop(key, None) is not None:
                order = key_order(key)
                del self._order[bisect.bisect_left(self._order, order)]

    def list(self, prefix: str = "", *, after: str | None = None, limit: int = 1000) -> BlobPage:
        prefix, after_order = check_list_args(prefix, after, limit)
        start_order = key_order(prefix)
        items: builtins.list[BlobInfo] = []
        more = False
        with self._lock:
            start = bisect.bisect_left(self._order, start_order)
            if after_order is not None:
                start = max(start, bisect.bisect_right(self._order, after_order))
            for index in range(start, len(self._order)):
                order = self._order[index]
                if not order.startswith(start_order):
                    break
                if len(items) == limit:
                    more = True
                    break
                items.append(self._objects[order.decode("utf-8")][1])
        return BlobPage(tuple(items), items[-1].key if more else None)

    def _get(self, key: str) -> tuple[bytes, BlobInfo]:
        key = validate_blob_key(key)
        with self._lock:
            found = self._objects.get(key)
        if found is None:
            raise NotFound(f"no blob {key!r}")
        return found


def _chunks(content: bytes) -> Iterator[bytes]:
    for start in range(0, len(content), CHUNK_SIZE):
        yield content[start : start + CHUNK_SIZE]
