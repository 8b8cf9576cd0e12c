"""Move logged-in users: every live session, with its data and remaining lifetime.

Sessions go through the SessionStore port's ``EXPORT`` and ``IMPORT`` capabilities, so any
exporting store (SQL) can feed any importing one (SQL, memcached). A target that can list
its sessions (SQL) is listed once before the copy: a session it already holds with the
same data and expiry is verified by that listing and not written again, so a later pass
rewrites only the sessions that changed; every other session is imported, then loaded
back from the target by id and compared (data and expiry); and the target loses the
sessions the source no longer has (users who logged out since an earlier pass).
memcached cannot list its sessions, so every session is imported and loaded back, and
none is deleted: with a memcached target copy sessions in the final pass only (``--skip
sessions`` before). Session ids never appear in a message: a problem names the session
by its position in the export."""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Callable

import attrs

from scalecore.capabilities import Capability
from scalecore.checksum import Digest
from scalecore.ports.sessions import SessionRecord, SessionStore

__all__ = ["SessionResult", "sync_sessions"]

BATCH = 500
#: Expiries may be rounded by a store (none does today); a second is plenty.
EXPIRY_TOLERANCE = 1.0


@attrs.define
class SessionResult:
    read: int = 0
    written: int = 0
    deleted: int = 0
    verified: int = 0
    bytes: int = 0
    source: Digest = attrs.Factory(Digest)
    target: Digest = attrs.Factory(Digest)
    differences: list[str] = attrs.Factory(list)
    seconds: float = 0.0


def _row(record: SessionRecord) -> tuple[str, float]:
    return json.dumps(record.data, sort_keys=True, separators=(",", ":")), round(
        record.expires_at, 3
    )


def sync_sessions(
    source: SessionStore,
    target: SessionStore,
    *,
    write: bool,
    progress: Callable[[int], None] | None = None,
) -> SessionResult:
    """Import every live session of ``source`` into ``target`` (``write``) and check each
    against the target; without ``write``, only check.

    A target that can list its sessions (SQL) is listed once, before the copy: a session
    it already holds with the same data and expiry is verified by that listing and not
    written again (a later pass rewrites only the sessions that changed), the others are
    imported and loaded back one by one, and those only in the target are deleted. A
    target that cannot list them (memcached) gets every session imported and loaded back.
    """
    began = time.monotonic()
    result = SessionResult()
    # What the target holds: a digest of each id (never logged: ids are secrets) -> the
    # digest of its data and expiry, and the id itself (to delete it if the source no
    # longer has it).
    held: dict[bytes, tuple[bytes, str]] | None = None
    if Capability.EXPORT in target.capabilities:
        held = {
            _digest(stored.id): (_fingerprint(stored), stored.id)
            for stored in target.export_sessions()
        }
    exported = source.export_sessions()
    position = 0
    while batch := list(itertools.islice(exported, BATCH)):
        result.read += len(batch)
        todo: list[tuple[int, SessionRecord]] = []
        for record in batch:
            position += 1
            data, expires = _row(record)
            result.bytes += len(data)
            result.source.add((data, expires))
            found = None if held is None else held.pop(_digest(record.id), None)
            if found is not None and found[0] == _fingerprint(record):
                # The target's own listing holds this session as it is: verified.
                result.target.add((data, expires))
                result.verified += 1
            else:
                todo.append((position, record))
        if write and todo:
            result.written += target.import_sessions([record for _, record in todo])
        for number, record in todo:
            _check(target, number, record, result)
        if progress is not None:
            progress(len(batch))
    for _, session_id in (held or {}).values():  # only in the target
        if write:
            target.delete(session_id)
            result.deleted += 1
        else:
            result.differences.append("a session only in the target")
    result.seconds = time.monotonic() - began
    return result


def _check(target: SessionStore, number: int, record: SessionRecord, result: SessionResult) -> None:
    """Load ``record`` back from ``target`` and compare."""
    loaded = target.load(record.id)
    if loaded is None:
        if record.expires_at > time.time():
            result.differences.append(f"session #{number}: missing in the target")
        return
    stored = SessionRecord(record.id, loaded.data, loaded.expires_at)
    result.target.add(_row(stored))
    if loaded.data != record.data:
        result.differences.append(f"session #{number}: data differ")
    elif abs(loaded.expires_at - record.expires_at) > EXPIRY_TOLERANCE:
        result.differences.append(f"session #{number}: expiry differs")
    else:
        result.verified += 1


def _fingerprint(record: SessionRecord) -> bytes:
    """A digest of a session's data and expiry (as :func:`_row` renders them)."""
    data, expires = _row(record)
    return hashlib.blake2b(f"{expires!r} {data}".encode(), digest_size=16).digest()


def _digest(session_id: str) -> bytes:
    return hashlib.blake2b(session_id.encode("ascii"), digest_size=16).digest()
