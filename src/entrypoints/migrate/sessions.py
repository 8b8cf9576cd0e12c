"""Move logged-in users: every live session, with its data and remaining lifetime.

Sessions go through the SessionStore port's ``EXPORT`` and ``IMPORT`` capabilities, so any
exporting store (SQL) can feed any importing one (SQL, memcached). Each imported session is
then loaded back from the target by id and compared (data and expiry). A target that can
list its sessions (SQL) also loses those the source no longer has (users who logged out
since an earlier pass); memcached cannot list them, so with a memcached target copy
sessions in the final pass only (``--skip sessions`` before). Session ids never appear in
a message: a problem names the session by its position in the export.
"""

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
    by loading it back; without ``write``, only check."""
    began = time.monotonic()
    result = SessionResult()
    exported = source.export_sessions()
    position = 0
    # Digests of the source's ids (never the ids: they are secrets), to find sessions the
    # target holds that the source no longer does (logged out since an earlier pass).
    seen: set[bytes] = set()
    while batch := list(itertools.islice(exported, BATCH)):
        result.read += len(batch)
        if write:
            result.written += target.import_sessions(batch)
        for record in batch:
            position += 1
            seen.add(_digest(record.id))
            data, expires = _row(record)
            result.bytes += len(data)
            result.source.add((data, expires))
            loaded = target.load(record.id)
            if loaded is None:
                if record.expires_at > time.time():
                    result.differences.append(f"session #{position}: missing in the target")
                continue
            stored = SessionRecord(record.id, loaded.data, loaded.expires_at)
            result.target.add(_row(stored))
            if loaded.data != record.data:
                result.differences.append(f"session #{position}: data differ")
            elif abs(loaded.expires_at - record.expires_at) > EXPIRY_TOLERANCE:
                result.differences.append(f"session #{position}: expiry differs")
            else:
                result.verified += 1
        if progress is not None:
            progress(len(batch))
    if Capability.EXPORT in target.capabilities:
        for stored in target.export_sessions():
            if _digest(stored.id) not in seen:
                if write:
                    target.delete(stored.id)
                    result.deleted += 1
                else:
                    result.differences.append("a session only in the target")
    result.seconds = time.monotonic() - began
    return result


def _digest(session_id: str) -> bytes:
    return hashlib.blake2b(session_id.encode("ascii"), digest_size=16).digest()
