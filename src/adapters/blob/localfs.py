"""A BlobStore in a local directory: the embedded default, one box's folder of uploads.

Backend: "localfs"
Install extra: none
Options: ``root`` (path of the store's directory, created if missing; required),
    ``url_secret`` (bytes or str of at least 16 bytes that signs ``url_for`` links;
    required, the container generates one under ``deployment.data_dir`` when unset),
    ``url_base`` (path or URL prefix under which the web layer serves signed links;
    default ``"/media"``), ``clock`` (a :class:`~scalecore.clock.Clock` for
    ``last_modified`` and link expiry; the system clock when ``None``).
Differs from the port: declares ``DURABLE`` and ``DIRECT_URL`` but not ``SHARED``: processes
    on one machine share the folder, other servers do not see it. ``url_for`` returns an app
    URL (``{url_base}/{quoted key}?expires=..&signature=..``) that the web layer checks with
    :meth:`LocalFsBlobStore.verify_url` and serves itself. POSIX only (``flock``); keep
    ``root`` short (under ~900 characters) so the longest keys stay within PATH_MAX. A
    crash mid-``put`` can leave a temp file (removed, once a day old, when a store is next
    opened on the root) or a content file no pointer names (never collected).

Layout under ``root``::

    scalecore-blobstore.json   layout marker
    objects/                   one directory per key segment ("d" + name), one pointer
                               file per key ("k" + name): JSON holding the key, its
                               metadata and the version of its content
    data/<2 hex>/<version>     content, immutable, one file per version
    tmp/                       writes in flight (same filesystem, so renames are atomic)
    locks/<2 hex>              flock stripes that order writers of one key

Names escape everything but ``a-z 0-9 . _ -`` as ``%xx`` UTF-8 bytes (so the layout is the
same on case-insensitive disks); a name longer than 240 characters becomes its kind letter,
``~`` and the SHA-256 of the segment. The prefixes keep directory and pointer names apart,
so keys ``a`` and ``a/b`` coexist.

A ``put`` streams to ``tmp/``, hashing as it goes, moves the content to ``data/`` and then
replaces the pointer with ``os.replace``: content and metadata switch together in one
rename, and the previous version's file is removed afterwards. Readers that lose a race
with that removal read the pointer again.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, NoReturn
from urllib.parse import quote

import attrs

from adapters.blob import (
    CHUNK_SIZE,
    check_expires_in,
    check_list_args,
    check_metadata,
    iter_data,
    key_order,
    utc_from_timestamp,
)
from scalecore.capabilities import Capability
from scalecore.clock import Clock, SystemClock
from scalecore.errors import BackendUnavailable, ConfigError, InvalidKey, NotFound
from scalecore.keys import validate_blob_key
from scalecore.ports.blobstore import (
    DEFAULT_CONTENT_TYPE,
    BlobInfo,
    BlobPage,
    BlobStore,
    BlobStream,
)
from scalecore.signing import MIN_SECRET_BYTES, expiry_after, sign, verify
from scalecore.validate import is_int

__all__ = ["LocalFsBlobStore"]

_LAYOUT = 1
_MARKER = "scalecore-blobstore.json"
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")
_NAME_LIMIT = 240
_DIR, _POINTER = "d", "k"
_VERSION = re.compile(r"[0-9a-f]{32}")
_ETAG = re.compile(r"[0-9a-f]{64}")
_ESCAPE = re.compile(r"%([0-9a-f]{2})")
#: How often a reader re-reads a pointer whose content vanished (replaced under it), and
#: how often a writer re-creates directories a concurrent delete pruned.
_RETRIES = 10
#: Temp files untouched this long belong to a crashed writer and are removed on open.
_STALE_TEMP_SECONDS = 24 * 3600


@attrs.frozen
class _Entry:
    """One candidate in a directory during a listing."""

    order: bytes  # the UTF-8 bytes every key below (or at) this entry starts with
    path: Path
    is_dir: bool
    key: str | None  # the pointer's key, when known from its name
    depth: int


class LocalFsBlobStore(BlobStore):
    """Objects as files under one directory, written atomically; safe for threads and
    for processes of one machine that share the directory."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.DURABLE, Capability.DIRECT_URL}
    )

    def __init__(
        self,
        *,
        root: str | os.PathLike[str],
        url_secret: bytes | str,
        url_base: str = "/media",
        clock: Clock | None = None,
    ) -> None:
        self._secret = _check_secret(url_secret)
        self._url_base = _check_url_base(url_base)
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigError(f"must be a Clock, not {type(clock).__name__}", key="clock")
        self._clock: Clock = clock or SystemClock()
        if not isinstance(root, str | os.PathLike) or not os.fspath(root):
            raise ConfigError("must be a non-empty path", key="root")
        self._root = Path(os.path.abspath(os.fspath(root)))  # noqa: PTH100 (keep symlinks)
        self._objects = self._root / "objects"
        self._data = self._root / "data"
        self._tmp = self._root / "tmp"
        self._locks = self._root / "locks"
        self._prepare_root()
        # Resolved once: the containment check compares every key's directory with it.
        self._objects_real = self._objects.resolve()

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
        content_type, cache_control, expires = check_metadata(content_type, cache_control, expires)
        chunks = iter_data(data)
        pointer = self._pointer_path(key)
        version = uuid.uuid4().hex
        temp_data = self._tmp / f"{version}.data"
        temp_meta = self._tmp / f"{version}.meta"
        content = self._content_path(version)
        placed = committed = False
        previous: str | None = None
        try:
            size, etag = self._stream_to(temp_data, chunks)
            with self._translate("store the content of", key):
                content.parent.mkdir(exist_ok=True)
                temp_data.replace(content)
                placed = True
                _fsync_dir(content.parent)
            info = BlobInfo(
                key=key,
                size=size,
                etag=etag,
                content_type=content_type,
                cache_control=cache_control,
                expires=expires,
                last_modified=utc_from_timestamp(self._clock.now()),
            )
            with self._translate("store the metadata of", key):
                _write_synced(temp_meta, json.dumps(_record(info, version)).encode())
                with self._locked(key):
                    previous = self._current_version(pointer)
                    self._replace_pointer(temp_meta, pointer)
                    committed = True
                    _fsync_dir(pointer.parent)
        except BaseException:
            _remove_quietly(temp_data)
            _remove_quietly(temp_meta)
            if placed and not committed:
                _remove_quietly(content)
            raise
        if previous is not None and previous != version:
            _remove_quietly(self._content_path(previous))
        return info

    def open(self, key: str) -> BlobStream:
        key = validate_blob_key(key)
        pointer = self._pointer_path(key)
        for _ in range(_RETRIES):
            version, info = self._read_pointer(pointer, key)
            try:
                # Closed by the stream's close(), so no with-block here.
                handle = self._content_path(version).open("rb")
            except FileNotFoundError:
                continue  # a newer put or a delete removed this version: look again
            except OSError as exc:
                self._unavailable(f"cannot open blob {key!r}", exc)
            try:
                size = os.fstat(handle.fileno()).st_size
            except OSError as exc:
                handle.close()
                self._unavailable(f"cannot open blob {key!r}", exc)
            if size != info.size:
                handle.close()
                raise BackendUnavailable(
                    f"blob {key!r} in {self._root} is corrupt: {size} bytes on disk, "
                    f"{info.size} in its metadata"
                )
            return BlobStream(info, self._read_chunks(handle, key), handle.close)
        raise BackendUnavailable(f"blob {key!r} kept changing while being opened; retry")

    def head(self, key: str) -> BlobInfo:
        key = validate_blob_key(key)
        return self._read_pointer(self._pointer_path(key), key)[1]

    def delete(self, key: str) -> None:
        key = validate_blob_key(key)
        pointer = self._pointer_path(key)
        with self._translate("delete", key), self._locked(key):
            try:
                previous = self._current_version(pointer)
                pointer.unlink()
            except (FileNotFoundError, NotADirectoryError):
                return
            # A concurrent delete of a neighbour may prune the emptied directory first;
            # then the entry is gone with it and there is nothing left to sync.
            with contextlib.suppress(FileNotFoundError):
                _fsync_dir(pointer.parent)
        if previous is not None:
            _remove_quietly(self._content_path(previous))
        self._prune(pointer.parent)

    def list(self, prefix: str = "", *, after: str | None = None, limit: int = 1000) -> BlobPage:
        prefix, after_order = check_list_args(prefix, after, limit)
        if not self._objects.is_dir():
            raise BackendUnavailable(f"local blob store {self._root} has no objects directory")
        items: builtins.list[BlobInfo] = []
        for info in self._walk(prefix, after_order):
            if len(items) == limit:
                return BlobPage(tuple(items), items[-1].key)
            items.append(info)
        return BlobPage(tuple(items), None)

    def url_for(self, key: str, *, expires_in: int = 3600) -> str:
        """Return ``{url_base}/{quoted key}?expires=<unix seconds>&signature=<hex>``.

        ``expires_in`` is 1..604800 seconds. The link does not prove the object exists;
        the web layer serving ``url_base`` checks it with :meth:`verify_url`.
        """
        key = validate_blob_key(key)
        expires_at = expiry_after(self._clock, check_expires_in(expires_in))
        signature = sign(self._secret, key, expires_at)
        return f"{self._url_base}/{quote(key, safe='/')}?expires={expires_at}&signature={signature}"

    def verify_url(self, key: object, expires: object, signature: object) -> bool:
        """Return whether a link's unquoted key, ``expires`` and ``signature`` parameters
        were made by :meth:`url_for` with this store's secret and have not expired.

        Never raises for malformed values (an invalid key, a non-numeric expiry): they are
        simply not valid links.
        """
        try:
            valid_key = validate_blob_key(key)
        except InvalidKey:
            return False
        return verify(self._secret, valid_key, expires, signature, clock=self._clock)

    def ping(self) -> None:
        """Raise ``BackendUnavailable`` unless ``root`` is a directory this process can write."""
        for directory in (self._root, self._objects, self._data, self._tmp, self._locks):
            if not directory.is_dir():
                raise BackendUnavailable(f"local blob store: {directory} is not a directory")
        probe = self._tmp / f"ping-{uuid.uuid4().hex}"
        with self._translate("write a probe file into", str(self._root)):
            probe.touch(mode=0o600, exist_ok=False)
            probe.unlink()

    # -- paths -----------------------------------------------------------------------------

    def _pointer_path(self, key: str) -> Path:
        segments = key.split("/")
        names = [_name(_DIR, segment) for segment in segments[:-1]]
        names.append(_name(_POINTER, segments[-1]))
        path = self._objects.joinpath(*names)
        self._check_inside(path.parent, key)
        return path

    def _check_inside(self, directory: Path, key: str) -> None:
        # Defence in depth: the key rules and the name encoding already keep every path
        # below objects/, but a symlink planted inside the store must not lead out of it.
        if not directory.resolve().is_relative_to(self._objects_real):
            raise InvalidKey(f"blob key {key!r} resolves outside the store root")

    def _content_path(self, version: str) -> Path:
        return self._data / version[:2] / version

    # -- writing ---------------------------------------------------------------------------

    def _stream_to(self, path: Path, chunks: Iterator[bytes | memoryview]) -> tuple[int, str]:
        """Write ``chunks`` to a new file at ``path``, synced; return its size and SHA-256.

        Errors from ``chunks`` (the caller's stream) propagate unchanged; the filesystem's
        become ``BackendUnavailable``. The caller removes ``path`` on failure.
        """
        digest = hashlib.sha256()
        size = 0
        where = str(self._root)
        with self._translate("create a temporary file in", where):
            handle = path.open("xb")
        with handle:
            for chunk in chunks:  # the caller's stream: its errors are its own
                digest.update(chunk)
                size += len(chunk)
                with self._translate("write a temporary file in", where):
                    handle.write(chunk)
            with self._translate("sync a temporary file in", where):
                handle.flush()
                os.fsync(handle.fileno())
        return size, digest.hexdigest()

    def _replace_pointer(self, source: Path, pointer: Path) -> None:
        for attempt in range(_RETRIES):
            try:
                pointer.parent.mkdir(parents=True, exist_ok=True)
                source.replace(pointer)
            except (FileNotFoundError, FileExistsError):
                # A concurrent delete pruned a directory we had just created (mkdir reports
                # FileExistsError when it vanishes between its attempt and its check).
                if attempt == _RETRIES - 1:
                    raise
            else:
                return

    def _current_version(self, pointer: Path) -> str | None:
        """The version a pointer names, or ``None`` if it is missing or unreadable."""
        try:
            document = json.loads(pointer.read_bytes())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None
        version = document.get("version") if isinstance(document, dict) else None
        return version if isinstance(version, str) and _VERSION.fullmatch(version) else None

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """Hold the key's stripe lock, excluding other threads and processes alike (each
        acquisition opens its own descriptor, and flock locks belong to descriptors)."""
        stripe = hashlib.sha256(key.encode("utf-8")).hexdigest()[:2]
        fd = os.open(self._locks / stripe, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _prune(self, directory: Path) -> None:
        """Remove ``directory`` and its ancestors below ``objects/`` while they are empty."""
        while directory != self._objects and directory.is_relative_to(self._objects):
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass  # someone else pruned it; its parent may be empty now
            except OSError:
                return  # not empty (or not ours to remove): stop here
            directory = directory.parent

    # -- reading ---------------------------------------------------------------------------

    def _read_pointer(self, pointer: Path, key: str | None) -> tuple[str, BlobInfo]:
        """Return the version and info a pointer holds; ``NotFound`` if it is missing.

        ``key`` is the key the pointer must hold (``None`` when listing a hashed name).
        """
        try:
            raw = pointer.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            if not self._objects.is_dir():
                raise BackendUnavailable(
                    f"local blob store {self._root} has no objects directory"
                ) from None
            raise NotFound(f"no blob {key!r}") from None
        except OSError as exc:
            self._unavailable(f"cannot read the metadata of blob {key!r}", exc)
        try:
            version, info = _parse_record(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendUnavailable(
                f"corrupt metadata for blob {key!r} in {self._root}: {exc}"
            ) from exc
        if key is not None and info.key != key:
            raise BackendUnavailable(f"metadata at {pointer} belongs to {info.key!r}, not {key!r}")
        return version, info

    def _read_chunks(self, handle: BinaryIO, key: str) -> Iterator[bytes]:
        try:
            while True:
                try:
                    chunk = handle.read(CHUNK_SIZE)
                except OSError as exc:
                    self._unavailable(f"cannot read blob {key!r}", exc)
                if not chunk:
                    return
                yield chunk
        finally:
            handle.close()

    def _walk(self, prefix: str, after: bytes | None) -> Iterator[BlobInfo]:
        """Yield every object whose key starts with ``prefix`` and is above ``after``, in
        UTF-8 byte order, reading directories lazily (depth first, explicit stack)."""
        whole = prefix.split("/")[:-1]  # segments the prefix names completely
        start = self._objects.joinpath(*(_name(_DIR, s) for s in whole))
        self._check_inside(start, prefix)
        parent = "".join(f"{s}/" for s in whole).encode("utf-8")
        stack = [iter(self._entries(start, parent, len(whole), key_order(prefix), after))]
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
            elif entry.is_dir:
                stack.append(
                    iter(
                        self._entries(
                            entry.path, entry.order, entry.depth, key_order(prefix), after
                        )
                    )
                )
            else:
                try:
                    _, info = self._read_pointer(entry.path, entry.key)
                except NotFound:
                    continue  # deleted since the directory was read
                yield info

    def _entries(
        self, directory: Path, parent: bytes, depth: int, prefix: bytes, after: bytes | None
    ) -> builtins.list[_Entry]:
        """The entries of one directory that can hold matching keys, in key order."""
        try:
            with os.scandir(directory) as scan:
                found = builtins.list(scan)
        except (FileNotFoundError, NotADirectoryError):
            return []  # pruned by a concurrent delete, or never created
        except OSError as exc:
            self._unavailable(f"cannot list {directory}", exc)
        entries: builtins.list[_Entry] = []
        for item in found:
            kind, body = item.name[:1], item.name[1:]
            try:
                if kind == _DIR and item.is_dir(follow_symlinks=False):
                    segment = _decode(body) if not body.startswith("~") else None
                    if segment is None:
                        segment = self._hashed_segment(Path(item.path), item.name, depth)
                    if segment is None:
                        continue  # holds no object right now
                    order = parent + segment.encode("utf-8") + b"/"
                    if not (order.startswith(prefix) or prefix.startswith(order)):
                        continue
                    if after is not None and order < after and not after.startswith(order):
                        continue
                    entries.append(_Entry(order, Path(item.path), True, None, depth + 1))
                elif kind == _POINTER and item.is_file(follow_symlinks=False):
                    if body.startswith("~"):
                        key = self._hashed_key(Path(item.path), item.name, parent)
                        if key is None:
                            continue
                    else:
                        key = parent.decode("utf-8") + _decode(body)
                    order = key.encode("utf-8")
                    if not order.startswith(prefix) or (after is not None and order <= after):
                        continue
                    entries.append(_Entry(order, Path(item.path), False, key, depth))
            except ValueError:
                continue  # not a name this store writes: ignore foreign files
        entries.sort(key=lambda entry: entry.order)
        return entries

    def _hashed_key(self, path: Path, name: str, parent: bytes) -> str | None:
        """The key held by a pointer whose name is a hash, if it belongs at ``path``."""
        try:
            _, info = self._read_pointer(path, None)
        except NotFound:
            return None
        head, _, last = info.key.rpartition("/")
        if (head + "/" if head else "").encode("utf-8") != parent or _name(_POINTER, last) != name:
            raise BackendUnavailable(f"metadata at {path} belongs to {info.key!r}")
        return info.key

    def _hashed_segment(self, path: Path, name: str, depth: int) -> str | None:
        """The key segment a directory with a hashed name stands for, read from the first
        pointer below it; ``None`` if it holds no pointer (so no object) right now."""
        pending = [path]
        while pending:
            try:
                with os.scandir(pending.pop()) as scan:
                    found = sorted(scan, key=lambda item: item.name)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                self._unavailable(f"cannot list {path}", exc)
            for item in found:
                if item.name.startswith(_POINTER) and item.is_file(follow_symlinks=False):
                    try:
                        _, info = self._read_pointer(Path(item.path), None)
                    except NotFound:
                        continue
                    segments = info.key.split("/")
                    if len(segments) > depth + 1 and _name(_DIR, segments[depth]) == name:
                        return segments[depth]
                    raise BackendUnavailable(f"metadata at {item.path} belongs to {info.key!r}")
                if item.name.startswith(_DIR) and item.is_dir(follow_symlinks=False):
                    pending.append(Path(item.path))
        return None

    # -- set-up and errors -----------------------------------------------------------------

    def _prepare_root(self) -> None:
        if self._root.exists() and not self._root.is_dir():
            raise ConfigError(f"{self._root} exists and is not a directory", key="root")
        try:
            for directory in (self._objects, self._data, self._tmp, self._locks):
                directory.mkdir(parents=True, exist_ok=True)
            self._write_marker()
        except OSError as exc:
            raise ConfigError(
                f"cannot prepare the blob store at {self._root}: {exc.strerror or exc}",
                key="root",
            ) from exc
        self._remove_stale_temp_files()

    def _write_marker(self) -> None:
        marker = self._root / _MARKER
        try:
            layout = json.loads(marker.read_bytes()).get("layout")
        except FileNotFoundError:
            temp = self._tmp / f"marker-{uuid.uuid4().hex}"
            _write_synced(temp, json.dumps({"layout": _LAYOUT}).encode())
            temp.replace(marker)
            return
        except (ValueError, AttributeError):
            layout = None
        if layout != _LAYOUT:
            raise ConfigError(
                f"{self._root} holds a blob store of layout {layout!r}; this version "
                f"reads layout {_LAYOUT}",
                key="root",
            )

    def _remove_stale_temp_files(self) -> None:
        # Only a crashed writer leaves temp files (a failed put removes its own); a live
        # writer touches its file far more often than once a day. File times come from the
        # filesystem's clock, so compare with real time, not the injected clock.
        cutoff = time.time() - _STALE_TEMP_SECONDS
        with contextlib.suppress(OSError), os.scandir(self._tmp) as scan:
            for item in scan:
                with contextlib.suppress(OSError):
                    if item.stat(follow_symlinks=False).st_mtime < cutoff:
                        Path(item.path).unlink()

    @contextlib.contextmanager
    def _translate(self, action: str, subject: str) -> Iterator[None]:
        """Turn the filesystem's errors into ``BackendUnavailable``."""
        try:
            yield
        except OSError as exc:
            self._unavailable(f"cannot {action} {subject!r}", exc)

    def _unavailable(self, message: str, exc: OSError) -> NoReturn:
        reason = exc.strerror or errno.errorcode.get(exc.errno or 0) or type(exc).__name__
        raise BackendUnavailable(f"local blob store {self._root}: {message}: {reason}") from exc


# -- names --------------------------------------------------------------------------------


def _name(kind: str, segment: str) -> str:
    """The file or directory name of one key segment (see the module docstring)."""
    parts = [
        char if char in _SAFE else "".join(f"%{byte:02x}" for byte in char.encode("utf-8"))
        for char in segment
    ]
    name = kind + "".join(parts)
    if len(name) > _NAME_LIMIT:
        return f"{kind}~{hashlib.sha256(segment.encode('utf-8')).hexdigest()}"
    return name


def _decode(body: str) -> str:
    """Invert :func:`_name` for a name that is not a hash; ``ValueError`` if not ours."""
    raw = bytearray()
    position = 0
    for match in _ESCAPE.finditer(body):
        literal = body[position : match.start()]
        if not all(char in _SAFE for char in literal):
            raise ValueError(body)
        raw += literal.encode("ascii")
        raw.append(int(match.group(1), 16))
        position = match.end()
    tail = body[position:]
    if not body or not all(char in _SAFE for char in tail):
        raise ValueError(body)
    raw += tail.encode("ascii")
    return raw.decode("utf-8")  # UnicodeDecodeError is a ValueError


# -- records ------------------------------------------------------------------------------


def _record(info: BlobInfo, version: str) -> dict[str, Any]:
    return {
        "layout": _LAYOUT,
        "key": info.key,
        "version": version,
        "size": info.size,
        "etag": info.etag,
        "content_type": info.content_type,
        "cache_control": info.cache_control,
        "expires": info.expires.isoformat() if info.expires else None,
        "last_modified": info.last_modified.isoformat(),
    }


def _parse_record(document: Any) -> tuple[str, BlobInfo]:
    """Return (version, info) from a pointer's JSON; ``ValueError``/``KeyError``/``TypeError``
    if anything is missing or malformed."""
    version = document["version"]
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise ValueError(f"bad version {version!r}")
    etag, size = document["etag"], document["size"]
    if not isinstance(etag, str) or not _ETAG.fullmatch(etag):
        raise ValueError(f"bad etag {etag!r}")
    if not is_int(size) or size < 0:
        raise ValueError(f"bad size {size!r}")
    key, content_type, cache_control = (
        document["key"],
        document["content_type"],
        document["cache_control"],
    )
    if not isinstance(key, str) or not isinstance(content_type, str):
        raise TypeError("key and content_type must be strings")
    if cache_control is not None and not isinstance(cache_control, str):
        raise TypeError("cache_control must be a string or null")
    expires = document["expires"]
    info = BlobInfo(
        key=key,
        size=size,
        etag=etag,
        content_type=content_type,
        cache_control=cache_control,
        expires=None if expires is None else _utc(expires),
        last_modified=_utc(document["last_modified"]),
    )
    return version, info


def _utc(text: Any) -> dt.datetime:
    if not isinstance(text, str):
        raise TypeError("timestamps must be ISO 8601 strings")
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {text!r}")
    return value.astimezone(dt.UTC)


# -- options and files --------------------------------------------------------------------


def _check_secret(secret: object) -> bytes:
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes):
        raise ConfigError(
            f"must be bytes or a string, not {type(secret).__name__}", key="url_secret"
        )
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"must be at least {MIN_SECRET_BYTES} bytes long", key="url_secret")
    return secret


def _check_url_base(url_base: object) -> str:
    if not isinstance(url_base, str):
        raise ConfigError(f"must be a string, not {type(url_base).__name__}", key="url_base")
    if re.search(r"[\x00-\x20\x7f?#]", url_base):
        raise ConfigError(
            f"must not contain spaces, control characters, '?' or '#': {url_base!r}",
            key="url_base",
        )
    return url_base.rstrip("/")


def _write_synced(path: Path, content: bytes) -> None:
    with path.open("xb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a file's fsync does not cover its directory entry)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    # Clean-up must never hide the error that made it necessary.
    with contextlib.suppress(OSError):
        path.unlink()
