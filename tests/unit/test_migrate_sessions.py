"""Sessions in ``scalecore migrate``: a later pass rewrites only what changed, removes
what the source no longer has, and verifies the rest from the target's own listing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from adapters.sessions.sql import SqlSessionStore
from entrypoints.migrate.sessions import sync_sessions
from scalecore.ports.sessions import SessionRecord


class Counting(SqlSessionStore):
    """A SQL session store that remembers how many sessions each import wrote."""

    imported: list[int]

    def import_sessions(self, records: Iterable[SessionRecord]) -> int:
        batch = list(records)
        self.imported.append(len(batch))
        return super().import_sessions(batch)


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[SqlSessionStore, Counting]]:
    source = SqlSessionStore(url=f"sqlite:///{tmp_path / 'source.db'}", ttl=3600)
    target = Counting(url=f"sqlite:///{tmp_path / 'target.db'}", ttl=3600)
    target.imported = []
    for store in (source, target):
        store.create_schema()
    yield source, target
    source.close()
    target.close()


def sessions(store: SqlSessionStore) -> dict[str, tuple[object, float]]:
    return {r.id: (r.data, round(r.expires_at, 3)) for r in store.export_sessions()}


def test_a_second_pass_copies_changed_and_new_sessions_and_removes_deleted_ones(
    stores: tuple[SqlSessionStore, Counting],
) -> None:
    source, target = stores
    created = [source.create({"user": f"u{n}"}) for n in range(1200)]  # several batches
    first = sync_sessions(source, target, write=True)
    assert (first.read, first.written, first.deleted, first.verified) == (1200, 1200, 0, 1200)
    assert not first.differences
    assert sessions(target) == sessions(source)

    # Nothing changed: nothing is written, everything verified from the target's listing.
    target.imported.clear()
    again = sync_sessions(source, target, write=True)
    assert (again.written, again.deleted, again.verified) == (0, 0, 1200)
    assert sum(target.imported) == 0
    assert again.source == again.target

    changed = source.load(created[5].id)
    assert changed is not None
    changed["user"] = "someone else"
    source.save(changed)
    source.delete(created[6].id)  # logged out
    source.create({"user": "new"})
    second = sync_sessions(source, target, write=True)
    assert (second.read, second.written, second.deleted) == (1200, 2, 1)
    assert sum(target.imported) == 2  # the changed and the new session, no other
    assert second.verified == 1200
    assert not second.differences
    assert sessions(target) == sessions(source)


def test_a_check_lists_a_session_that_differs_without_writing(
    stores: tuple[SqlSessionStore, Counting],
) -> None:
    source, target = stores
    kept = source.create({"user": "a"})
    source.create({"user": "b"})
    sync_sessions(source, target, write=True)
    stored = target.load(kept.id)
    assert stored is not None
    stored["user"] = "changed behind migrate's back"
    target.save(stored)
    target.imported.clear()
    check = sync_sessions(source, target, write=False)
    assert check.differences == ["session #1: data differ"] or check.differences == [
        "session #2: data differ"
    ]
    assert sum(target.imported) == 0
    assert check.source != check.target
