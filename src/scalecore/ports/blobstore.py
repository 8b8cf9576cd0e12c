"""BlobStore: named byte objects with metadata, written atomically and read as streams."""

from __future__ import annotations

import abc
import datetime as dt
import functools
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, BinaryIO, ClassVar

import attrs

from scalecore.capabilities import Capability

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "BlobInfo",
    "BlobPage",
    "BlobStats",
    "BlobStore",
    "BlobStream",
]

DEFAULT_CONTENT_TYPE = "application/octet-stream"


@attrs.frozen
class BlobInfo:
    """What a store knows about one object, without its bytes.

    ``etag`` is the lowercase hex SHA-256 of the content, identical for identical bytes on
    every adapter (so it can be an HTTP ETag and a deduplication key).
    """

    key: str
    size: int
    etag: str
    content_type: str = DEFAULT_CONTENT_TYPE
    cache_control: str | None = None
    expires: dt.datetime | None = None
    last_modified: dt.datetime = attrs.field(factory=lambda: dt.datetime.now(dt.UTC))


@attrs.frozen
class BlobPage:
    """One page of a listing: ``items`` in ascending key order, and the cursor for the next.

    ``next_after`` is ``None`` on the last page; otherwise pass it as ``after`` to continue.
    """

    items: tuple[BlobInfo, ...]
    next_after: str | None


class BlobStream:
    """An object's bytes as a stream, with its :class:`BlobInfo`.

    Read it with :meth:`read` or iterate over chunks; always close it (it is a context
    manager). The stream never holds the whole object in memory unless the adapter does.
    """

    def __init__(
        self,
        info: BlobInfo,
        chunks: Iterable[bytes],
        close: Callable[[], None] | None = None,
    ) -> None:
        self.info = info
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buffer = b""
        self._close = close
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        if self._buffer:
            buffered, self._buffer = self._buffer, b""
            yield buffered
        for chunk in self._chunks:
            if chunk:
                yield chunk

    def read(self, size: int = -1) -> bytes:
        """Return up to ``size`` bytes (all remaining bytes if ``size`` < 0); ``b""`` at the end."""
        if size < 0:
            return b"".join(self)
        while len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def close(self) -> None:
        """Release the underlying file or connection. Idempotent."""
        if not self._closed:
            self._closed = True
            if self._close is not None:
                self._close()

    def __enter__(self) -> BlobStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class BlobStats:
    """Counters of one blob store in this process: operations by name (``put``, ``open``,
    ``head``, ``delete``, ``list``) and outcome (``ok``; ``error`` for anything raised,
    a refused key included, but ``NotFound``, which is ``ok``: the store answered), and
    the bytes of the objects put and opened (their sizes,
    whether or not a reader read a stream to its end). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._operations: Counter[tuple[str, str]] = Counter()
        self._bytes: Counter[str] = Counter()

    def record(self, operation: str, outcome: str, size: int = 0) -> None:
        with self._lock:
            self._operations[(operation, outcome)] += 1
            if size:
                self._bytes[operation] += size

    def operations(self) -> dict[tuple[str, str], int]:
        """(operation, outcome) -> count, a copy."""
        with self._lock:
            return dict(self._operations)

    def bytes(self) -> dict[str, int]:
        """operation (``put`` or ``open``) -> bytes, a copy."""
        with self._lock:
            return dict(self._bytes)


_COUNTED_OPERATIONS = ("put", "open", "head", "delete", "list")
_STATS_LOCK = threading.Lock()
_counting = threading.local()


def _counted(operation: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` of an adapter, counted in the store's :class:`BlobStats` (once, even
    when a subclass's override calls the adapter's own through ``super()``)."""
    from scalecore.errors import NotFound

    @functools.wraps(method)
    def counted(self: BlobStore, *args: Any, **kwargs: Any) -> Any:
        if getattr(_counting, "active", False):
            return method(self, *args, **kwargs)
        _counting.active = True
        try:
            result = method(self, *args, **kwargs)
        except NotFound:
            self.stats.record(operation, "ok")
            raise
        except Exception:
            self.stats.record(operation, "error")
            raise
        finally:
            _counting.active = False
        size = 0
        if operation == "put":
            size = int(getattr(result, "size", 0) or 0)
        elif operation == "open":
            size = int(getattr(getattr(result, "info", None), "size", 0) or 0)
        self.stats.record(operation, "ok", size)
        return result

    counted.__scalecore_counted__ = True  # type: ignore[attr-defined]
    return counted


class BlobStore(abc.ABC):
    """Named byte objects with content type, Cache-Control and a content hash.

    Keys follow :func:`scalecore.keys.validate_blob_key` on every adapter; a bad key raises
    :class:`~scalecore.errors.InvalidKey` before anything is touched. Writes are atomic: a
    reader sees the old object or the new one, never a part. Backend failures raise
    :class:`~scalecore.errors.BackendUnavailable`.

    Capabilities: ``SHARED`` (every process sees the same objects), ``DIRECT_URL``
    (:meth:`url_for`), ``DURABLE`` (objects survive a restart).

    Every adapter's ``put``, ``open``, ``head``, ``delete`` and ``list`` are counted in
    :attr:`stats` (a :class:`BlobStats`) by this class, so adapters do nothing for it.
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every adapter is counted the same way without doing anything for it: its own
        # put, open, head, delete and list are wrapped to feed ``stats``.
        super().__init_subclass__(**kwargs)
        for operation in _COUNTED_OPERATIONS:
            method = cls.__dict__.get(operation)
            if callable(method) and not getattr(method, "__scalecore_counted__", False):
                setattr(cls, operation, _counted(operation, method))

    @property
    def stats(self) -> BlobStats:
        """Operations and bytes of this store in this process, for metrics."""
        stats = self.__dict__.get("_blob_stats")
        if stats is None:
            with _STATS_LOCK:
                stats = self.__dict__.setdefault("_blob_stats", BlobStats())
        assert isinstance(stats, BlobStats)
        return stats

    @abc.abstractmethod
    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        cache_control: str | None = None,
        expires: dt.datetime | None = None,
    ) -> BlobInfo:
        """Store ``data`` under ``key``, replacing any object there, and return its info.

        ``data`` may be bytes or a binary file object, which is read in chunks and never
        loaded whole into memory. The object becomes visible only once complete; if the
        write fails, the previous object (or no object) remains.
        """

    @abc.abstractmethod
    def open(self, key: str) -> BlobStream:
        """Return a stream of the object's bytes; raise ``NotFound`` if there is none."""

    @abc.abstractmethod
    def head(self, key: str) -> BlobInfo:
        """Return the object's info without its bytes; raise ``NotFound`` if there is none."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object. Deleting a missing object is not an error (idempotent)."""

    @abc.abstractmethod
    def list(self, prefix: str = "", *, after: str | None = None, limit: int = 1000) -> BlobPage:
        """Return up to ``limit`` objects whose keys start with ``prefix``, ascending by key.

        Only keys strictly greater than ``after`` are returned, so ``page.next_after`` fed
        back as ``after`` walks the whole listing without gaps or repeats.
        """

    def url_for(self, key: str, *, expires_in: int = 3600) -> str:
        """Return a signed URL that downloads the object for ``expires_in`` seconds.

        Needs the ``DIRECT_URL`` capability; otherwise raises ``UnsupportedOperation``.
        The URL does not prove the object exists.
        """
        from scalecore.capabilities import require

        require(self, Capability.DIRECT_URL, "url_for")
        raise AssertionError("an adapter declaring DIRECT_URL must override url_for")

    def verify_url(self, key: object, expires: object, signature: object) -> bool:
        """Whether ``expires`` and ``signature`` (from a request's query string) are a live
        signature made by :meth:`url_for` for ``key``. Only a store whose URLs point back at
        the application (an HMAC-signed app URL) can verify one; the others, whose URLs go
        to the storage service itself, answer ``False``. Never raises for malformed input.
        """
        return False

    def get(self, key: str) -> bytes:
        """Return the whole object; for small objects only (prefer :meth:`open`)."""
        with self.open(key) as stream:
            return stream.read()

    def exists(self, key: str) -> bool:
        """Return whether an object is stored under ``key``."""
        from scalecore.errors import NotFound

        try:
            self.head(key)
        except NotFound:
            return False
        return True

    def iter_all(self, prefix: str = "", *, page_size: int = 1000) -> Iterator[BlobInfo]:
        """Yield every object under ``prefix`` in key order, one page at a time."""
        after: str | None = None
        while True:
            page = self.list(prefix, after=after, limit=page_size)
            yield from page.items
            if page.next_after is None:
                return
            after = page.next_after

    def create_schema(self) -> bool:
        """Create what the backend must hold before first use (tables), where missing, and
        return ``True``; a backend with nothing to create returns ``False``. Idempotent,
        safe from several processes at once. Called by ``scalecore db init``, ``scalecore
        run`` and the library entry on a fresh deployment."""
        return False

    def ping(self) -> None:
        """Raise ``BackendUnavailable`` unless the backend answers. Used by readiness checks."""

    def close(self) -> None:
        """Release connections and threads. Idempotent."""
