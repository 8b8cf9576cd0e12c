"""Copy and compare blobs between two BlobStores, streaming, with their headers.

Both stores are listed in key order and walked side by side. An object missing from the
target, or whose size, SHA-256, content type, Cache-Control or Expires differ, is copied
through the stores' streaming API (never whole in memory: ``open`` on one side feeds
``put`` on the other, chunk by chunk), hashed on the way (SHA-256 and MD5), and then
checked against what the target holds: the copy counts only once that check passes.

- Into an S3 bucket: the bucket is listed over the keys just copied, a page of 1,000
  objects per LIST request, and each object's size and ETag (the MD5 S3 computed from
  the bytes it stored) must equal the size and MD5 of the bytes read from the source.
  An object whose ETag is not a plain MD5 (SSE-KMS or SSE-C buckets, objects S3 stored
  in parts) or does not match is read back in full instead, as below. The headers
  (content type, Cache-Control, Expires) are those the accepted PUT carried; this pass
  does not read them back.
- Into any other store: the object is read back in full (one ``open``) and hashed; its
  size and SHA-256 must be the source's, and its headers equal.

``scalecore migrate --verify`` (``read_back_all``) always reads every object back in
full: size, SHA-256 and headers. An object only in the target (deleted in the source
since an earlier pass) is deleted.

Copies run on a few threads at once (object stores answer slowly but in parallel); at
most :data:`IN_FLIGHT` objects are open at a time, so memory stays bounded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, runtime_checkable

import attrs

from adapters.blob import key_order
from entrypoints.migrate.journal import BlobJournal
from scalecore.errors import NotFound
from scalecore.ports.blobstore import BlobInfo, BlobStore, BlobStream

__all__ = ["BlobResult", "sync_blobs"]

#: What the journal keeps of an object: key, size, SHA-256, content type, Cache-Control,
#: Expires (Unix seconds).
Entry = tuple[str, int, str, str, str | None, int | None]

#: Objects copied at once.
WORKERS = 8
IN_FLIGHT = 2 * WORKERS
#: Objects copied into S3 whose check waits for one listing of their key range.
LIST_BATCH = 500


@runtime_checkable
class ListsDigests(Protocol):
    """A BlobStore that lists sizes and ETags over a key range (the S3 adapter's
    ``stored_digests``); imported by shape so that migrate needs boto3 only for S3."""

    def stored_digests(self, first: str, last: str) -> dict[str, tuple[int, str]]: ...


@attrs.define
class BlobResult:
    read: int = 0
    written: int = 0
    deleted: int = 0
    verified: int = 0
    bytes: int = 0
    differences: list[str] = attrs.Factory(list)
    seconds: float = 0.0


class _HashingReader:
    """A binary file over a BlobStream that hashes what passes through."""

    def __init__(self, stream: BlobStream) -> None:
        self._stream = stream
        self.digest = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.digest.update(data)
        self.md5.update(data)
        self.size += len(data)
        return data


def _seconds(moment: dt.datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def same_object(a: BlobInfo, b: BlobInfo) -> bool:
    """Same bytes (size and SHA-256) and the same headers."""
    return (
        a.size == b.size
        and a.etag == b.etag
        and a.content_type == b.content_type
        and a.cache_control == b.cache_control
        and _seconds(a.expires) == _seconds(b.expires)
    )


def read_back(store: BlobStore, info: BlobInfo) -> str | None:
    """Read the object back from ``store`` and return what is wrong with it, or None.

    One GET: the stream's info carries the stored headers, the bytes are hashed here."""
    digest = hashlib.sha256()
    size = 0
    try:
        with store.open(info.key) as stream:
            stored = stream.info
            for chunk in stream:
                digest.update(chunk)
                size += len(chunk)
    except NotFound:
        return "missing in the target"
    if size != info.size or digest.hexdigest() != info.etag:
        return f"bytes differ (target {size} bytes, sha256 {digest.hexdigest()[:12]})"
    if not same_object(info, stored):
        return "headers differ (content type, Cache-Control or Expires)"
    return None


@attrs.frozen
class _Copied:
    """What one copy did: bytes sent, a problem found, and, when the check is left to a
    listing of the target, the MD5 of the bytes sent (else None)."""

    size: int
    problem: str | None
    md5: str | None = None


def _copy(source: BlobStore, target: BlobStore, info: BlobInfo, *, listed: bool) -> _Copied:
    """Copy one object. With ``listed`` the check against the target is left to the
    caller (a listing of S3 ETags), else the object is read back here."""
    try:
        stream = source.open(info.key)
    except NotFound:
        return _Copied(0, None)  # deleted in the source meanwhile: nothing to copy
    with stream:
        current = stream.info
        reader = _HashingReader(stream)
        target.put(
            info.key,
            reader,  # type: ignore[arg-type]
            content_type=current.content_type,
            cache_control=current.cache_control,
            expires=current.expires,
        )
    if reader.digest.hexdigest() != current.etag or reader.size != current.size:
        return _Copied(reader.size, "the source changed while it was copied")
    if listed:
        return _Copied(reader.size, None, reader.md5.hexdigest())
    return _Copied(reader.size, read_back(target, current))


def _check_listed(
    target: BlobStore, copied: list[tuple[BlobInfo, _Copied]]
) -> list[tuple[BlobInfo, _Copied]]:
    """Check objects just copied into S3 (in key order) against one listing of their key
    range: size and ETag equal to the size and MD5 sent, else a full read-back."""
    assert isinstance(target, ListsDigests)
    stored = target.stored_digests(copied[0][0].key, copied[-1][0].key)
    checked = []
    for info, outcome in copied:
        if stored.get(info.key) == (outcome.size, outcome.md5):
            checked.append((info, outcome))
        else:
            checked.append((info, _Copied(outcome.size, read_back(target, info))))
    return checked


def _entry(info: BlobInfo) -> Entry:
    return (
        info.key,
        info.size,
        info.etag,
        info.content_type,
        info.cache_control,
        _seconds(info.expires),
    )


def sync_blobs(
    source: BlobStore,
    target: BlobStore,
    *,
    write: bool,
    read_back_all: bool = False,
    progress: Callable[[int], None] | None = None,
    journal: BlobJournal | None = None,
) -> BlobResult:
    """Make ``target`` hold exactly ``source``'s objects (``write``), or only compare.

    Objects already equal by listing (size, SHA-256, headers) count as verified; with
    ``read_back_all`` they are also read back and hashed (``scalecore migrate --verify``).
    With a ``journal`` of what an earlier run copied and verified, the source's listing is
    compared with the journal instead of the target's listing (which costs a HEAD per
    object on S3); every object copied and verified is recorded in it.
    """
    began = time.monotonic()
    result = BlobResult()
    source_items: Iterator[BlobInfo] = source.iter_all()
    known: Iterator[Entry] | None = None
    if journal is not None and write:
        known = journal.entries()
        first = next(known, None)
        known = None if first is None else itertools.chain([first], known)
    target_items: Iterator[Entry] = (
        known if known is not None else (_entry(info) for info in target.iter_all())
    )
    src = next(source_items, None)
    tgt = next(target_items, None)
    futures: list[tuple[BlobInfo, Future[_Copied]]] = []
    to_record: list[Entry] = []
    listed = isinstance(target, ListsDigests)
    unchecked: list[tuple[BlobInfo, _Copied]] = []

    def record(entry: Entry | None) -> None:
        if entry is not None:
            to_record.append(entry)
        if journal is not None and (entry is None or len(to_record) >= 500):
            journal.record(to_record)
            to_record.clear()

    def count(info: BlobInfo, outcome: _Copied) -> None:
        result.bytes += outcome.size
        if outcome.problem is None:
            result.verified += 1
            record(_entry(info))
        else:
            result.differences.append(f"blob {info.key}: {outcome.problem}")
        if progress is not None:
            progress(outcome.size)

    def check(limit: int) -> None:
        if len(unchecked) > limit:
            for info, outcome in _check_listed(target, unchecked):
                count(info, outcome)
            unchecked.clear()

    def settle(limit: int) -> None:
        while len(futures) > limit:
            info, future = futures.pop(0)
            outcome = future.result()
            if outcome.md5 is None:
                count(info, outcome)
            else:
                unchecked.append((info, outcome))
        check(LIST_BATCH - 1 if limit else 0)

    def copy(info: BlobInfo) -> None:
        result.written += 1
        futures.append((info, pool.submit(_copy, source, target, info, listed=listed)))
        settle(IN_FLIGHT)

    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="migrate-blob") as pool:
        while src is not None or tgt is not None:
            if tgt is None or (src is not None and key_order(src.key) < key_order(tgt[0])):
                assert src is not None
                result.read += 1
                if write:
                    copy(src)
                else:
                    result.differences.append(f"blob {src.key}: missing in the target")
                src = next(source_items, None)
            elif src is None or key_order(tgt[0]) < key_order(src.key):
                if write:
                    target.delete(tgt[0])
                    if journal is not None:
                        journal.forget([tgt[0]])
                    result.deleted += 1
                else:
                    result.differences.append(f"blob {tgt[0]}: only in the target")
                tgt = next(target_items, None)
            else:
                result.read += 1
                if _entry(src) == tgt:
                    if read_back_all:
                        problem = read_back(target, src)
                        if problem is None:
                            result.verified += 1
                        else:
                            result.differences.append(f"blob {src.key}: {problem}")
                    else:
                        result.verified += 1
                        if known is None:
                            record(tgt)
                    result.bytes += src.size
                    if progress is not None:
                        progress(src.size)
                elif write:
                    copy(src)
                else:
                    result.differences.append(f"blob {src.key}: differs (size, sha256 or headers)")
                src = next(source_items, None)
                tgt = next(target_items, None)
        settle(0)
    record(None)
    result.seconds = time.monotonic() - began
    return result
