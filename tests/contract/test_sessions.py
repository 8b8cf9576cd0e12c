"""The SessionStore contract, run against every adapter.

Fixtures: ``make_store()`` builds another store on the same backend (same file, same server)
with the test's clock; ``store`` is the first one; ``advance(seconds)`` moves time for all of
them. A new adapter adds an entry to ``FACTORIES`` and passes this file unchanged.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    multiple,
    rule,
    run_state_machine_as_test,
)

from adapters.sessions.memcached import MemcachedSessionStore
from adapters.sessions.memory import MemorySessionStore
from adapters.sessions.sql import SqlSessionStore, sessions_table
from adapters.sql.engine import make_engine
from scalecore.capabilities import Capability
from scalecore.clock import ManualClock
from scalecore.errors import ConfigError, InvalidInput, NotFound, UnsupportedOperation
from scalecore.ports.sessions import (
    Session,
    SessionRecord,
    SessionStore,
    is_valid_session_id,
    new_session_id,
)

TTL = 100.0

Factory = Callable[[], SessionStore]


def _memory(request: pytest.FixtureRequest, clock: ManualClock) -> Factory:
    return lambda: MemorySessionStore(ttl=TTL, clock=clock)


def _sql(url: str, clock: ManualClock, *, create_database: bool = False) -> Factory:
    def make() -> SessionStore:
        store = SqlSessionStore(url=url, ttl=TTL, clock=clock, create_database=create_database)
        store.create_schema()
        return store

    return make


def _sql_sqlite(request: pytest.FixtureRequest, clock: ManualClock) -> Factory:
    tmp_path = request.getfixturevalue("tmp_path")
    return _sql(f"sqlite:///{tmp_path / 'sessions.db'}", clock)


def _sql_postgres(request: pytest.FixtureRequest, clock: ManualClock) -> Factory:
    url: str = request.getfixturevalue("sessions_postgres_url")
    make = _sql(url, clock, create_database=True)
    make().close()  # the table exists from here on
    engine = make_engine(url)
    try:
        with engine.begin() as conn:  # one database per run; a clean table per test
            conn.execute(sessions_table.delete())
    finally:
        engine.dispose()
    return make


def _memcached(request: pytest.FixtureRequest, clock: ManualClock) -> Factory:
    servers: list[str] = request.getfixturevalue("memcached_servers")
    # A namespace of its own per test; memcached expires what the test leaves one second
    # after TTL (real time), since the store checks expiry against the test's clock.
    namespace = f"t{uuid.uuid4().hex[:16]}:"
    return lambda: MemcachedSessionStore(servers=servers, ttl=TTL, clock=clock, namespace=namespace)


#: backend id -> how to build stores of it on one shared backend, with the test's clock.
FACTORIES: dict[str, Callable[[pytest.FixtureRequest, ManualClock], Factory]] = {
    "memory": _memory,
    "sql-sqlite": _sql_sqlite,
    "sql-postgres": _sql_postgres,
    "memcached": _memcached,
}

PARAMS = [
    pytest.param("memory", id="memory"),
    pytest.param("sql-sqlite", id="sql-sqlite"),
    pytest.param("sql-postgres", id="sql-postgres", marks=pytest.mark.integration),
    pytest.param("memcached", id="memcached", marks=pytest.mark.integration),
]


@pytest.fixture(scope="session")
def sessions_postgres_url(scratch_database: Callable[[str], str]) -> str:
    """A PostgreSQL database of its own for this test run, dropped afterwards."""
    return scratch_database("sessions")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def advance(clock: ManualClock) -> Callable[[float], None]:
    """Move every store's time forward by ``seconds``."""
    return clock.advance


@pytest.fixture(params=PARAMS)
def make_store(request: pytest.FixtureRequest, clock: ManualClock) -> Iterator[Factory]:
    """Build stores on one backend; each call is a new instance (a new "server")."""
    build = FACTORIES[request.param](request, clock)
    made: list[SessionStore] = []

    def make() -> SessionStore:
        store = build()
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def store(make_store: Factory) -> SessionStore:
    return make_store()


# --------------------------------------------------------------------------- basics


def test_create_returns_a_fresh_unguessable_id_and_the_data(store: SessionStore) -> None:
    first = store.create({"user": 1, "roles": ["admin"], "prefs": {"dark": True}})
    second = store.create()
    assert is_valid_session_id(first.id)
    assert is_valid_session_id(second.id)
    assert first.id != second.id
    assert first.data == {"user": 1, "roles": ["admin"], "prefs": {"dark": True}}
    assert second.data == {}
    assert not first.modified
    loaded = store.load(first.id)
    assert loaded is not None
    assert loaded.id == first.id
    assert loaded.data == first.data
    assert loaded.expires_at == pytest.approx(first.expires_at)


def test_json_values_round_trip_exactly(store: SessionStore) -> None:
    data: dict[str, Any] = {
        "int": 2**60,
        "float": 0.1,
        "neg": -1.5e-7,
        "str": 'héllo \u2603 "quoted" \\ \n',
        "lone": "\ud800",
        "none": None,
        "bools": [True, False],
        "nested": {"a": [{"b": []}, {}]},
        "": "empty key",
    }
    session = store.create(data)
    loaded = store.load(session.id)
    assert loaded is not None
    assert loaded.data == data
    assert type(loaded["int"]) is int
    assert type(loaded["float"]) is float


@pytest.mark.parametrize(
    "bad_id",
    [
        "",
        "short",
        "x" * 42,
        "x" * 44,
        "../../../etc/passwd",
        "a" * 42 + "=",
        "a" * 42 + "\x00",
        "a" * 42 + " ",
        "' OR 1=1 --" + "a" * 32,
        "é" * 43,
        "a" * 10_000,
        None,
        42,
        b"a" * 43,
    ],
)
def test_malformed_ids_are_unknown_never_errors(store: SessionStore, bad_id: Any) -> None:
    store.create({"a": 1})
    assert store.load(bad_id) is None
    store.delete(bad_id)  # ignored


def test_an_unknown_well_formed_id_is_none(store: SessionStore) -> None:
    assert store.load(new_session_id()) is None


def test_load_gives_a_copy_changes_apply_only_on_save(store: SessionStore) -> None:
    session = store.create({"n": 1, "items": [1]})
    session["n"] = 2
    session["items"] = [1, 2]
    again = store.load(session.id)
    assert again is not None
    assert again.data == {"n": 1, "items": [1]}
    store.save(session)
    again = store.load(session.id)
    assert again is not None
    assert again.data == {"n": 2, "items": [1, 2]}
    assert not session.modified


def test_save_overwrites_and_removes_keys(store: SessionStore) -> None:
    session = store.create({"keep": 1, "change": "old", "drop": True})
    session["change"] = "new"
    session["added"] = {"x": 1}
    del session["drop"]
    store.save(session)
    loaded = store.load(session.id)
    assert loaded is not None
    assert loaded.data == {"keep": 1, "change": "new", "added": {"x": 1}}
    assert session.data == loaded.data


def test_delete_is_idempotent(store: SessionStore) -> None:
    session = store.create({"a": 1})
    store.delete(session.id)
    assert store.load(session.id) is None
    store.delete(session.id)
    store.delete(new_session_id())


def test_saving_a_deleted_session_raises_not_found(store: SessionStore) -> None:
    session = store.create({"a": 1})
    store.delete(session.id)
    session["a"] = 2
    with pytest.raises(NotFound):
        store.save(session)
    assert store.load(session.id) is None


def test_saving_a_session_with_a_forged_id_raises_not_found(store: SessionStore) -> None:
    for forged in ("../x", new_session_id()):
        with pytest.raises(NotFound):
            store.save(Session(forged, {"admin": True}, 0.0))
        assert store.load(forged) is None


# --------------------------------------------------------------------------- TTL


def test_a_session_expires_after_its_ttl(
    store: SessionStore, advance: Callable[[float], None]
) -> None:
    session = store.create({"a": 1})
    advance(TTL - 1)
    assert store.load(session.id) is not None  # loading does not extend the TTL
    advance(2)
    assert store.load(session.id) is None
    session["a"] = 2
    with pytest.raises(NotFound):
        store.save(session)
    with pytest.raises(NotFound):
        store.rotate(session)


def test_save_restarts_the_ttl(store: SessionStore, advance: Callable[[float], None]) -> None:
    session = store.create({"a": 1})
    created_expiry = session.expires_at
    advance(TTL * 0.75)
    store.save(session)  # even without changes
    assert session.expires_at > created_expiry
    advance(TTL * 0.75)
    loaded = store.load(session.id)
    assert loaded is not None
    assert loaded["a"] == 1
    assert loaded.expires_at == pytest.approx(session.expires_at)
    advance(TTL * 0.5)
    assert store.load(session.id) is None


# --------------------------------------------------------------------------- rotate


def test_rotate_moves_data_and_pending_changes_to_a_new_id(
    store: SessionStore, advance: Callable[[float], None]
) -> None:
    session = store.create({"cart": [1, 2], "stale": 1})
    session["user"] = 7
    del session["stale"]
    advance(TTL / 2)
    rotated = store.rotate(session)
    assert rotated.id != session.id
    assert is_valid_session_id(rotated.id)
    assert rotated.data == {"cart": [1, 2], "user": 7}
    assert not rotated.modified
    assert store.load(session.id) is None
    loaded = store.load(rotated.id)
    assert loaded is not None
    assert loaded.data == rotated.data
    advance(TTL * 0.75)  # rotating restarted the TTL
    assert store.load(rotated.id) is not None
    with pytest.raises(NotFound):
        store.save(session)  # the old id is dead
    with pytest.raises(NotFound):
        store.rotate(session)


def test_rotate_of_a_deleted_session_raises_not_found(store: SessionStore) -> None:
    session = store.create()
    store.delete(session.id)
    with pytest.raises(NotFound):
        store.rotate(session)


# --------------------------------------------------------------------------- JSON only


@pytest.mark.parametrize(
    "bad",
    [object(), {1, 2}, (1, 2), b"bytes", float("nan"), float("inf"), {1: "int key"}, [object()]],
    ids=["object", "set", "tuple", "bytes", "nan", "inf", "int-key", "nested"],
)
def test_non_json_values_are_refused_and_nothing_is_written(store: SessionStore, bad: Any) -> None:
    with pytest.raises(InvalidInput):
        store.create({"bad": bad})
    session = store.create({"a": 1})
    session["a"] = 2
    session["ok"] = "fine"
    session["bad"] = bad
    with pytest.raises(InvalidInput):
        store.save(session)
    with pytest.raises(InvalidInput):
        store.rotate(session)
    loaded = store.load(session.id)
    assert loaded is not None
    assert loaded.data == {"a": 1}


def test_data_nested_deeper_than_json_can_encode_is_refused(store: SessionStore) -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(InvalidInput):
        store.create({"deep": deep})


def test_create_refuses_non_mappings(store: SessionStore) -> None:
    with pytest.raises(InvalidInput):
        store.create([("a", 1)])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- concurrency


def test_two_requests_changing_different_keys_both_survive(make_store: Factory) -> None:
    first_store = make_store()
    shared = Capability.SHARED in first_store.capabilities
    second_store = make_store() if shared else first_store
    session = first_store.create({"start": 0})
    a = first_store.load(session.id)
    b = second_store.load(session.id)
    assert a is not None
    assert b is not None
    a["from_a"] = 1
    b["from_b"] = 2
    del b["start"]
    first_store.save(a)
    second_store.save(b)
    assert b.data == {"from_a": 1, "from_b": 2}  # b adopted the merged result
    loaded = first_store.load(session.id)
    assert loaded is not None
    assert loaded.data == {"from_a": 1, "from_b": 2}


def test_concurrent_writers_of_different_keys_are_all_kept(make_store: Factory) -> None:
    first = make_store()
    shared = Capability.SHARED in first.capabilities
    stores = [first, make_store()] if shared else [first]
    session = first.create()
    writers, rounds = 6, 5
    errors: list[BaseException] = []
    barrier = threading.Barrier(writers)

    def write(index: int) -> None:
        store = stores[index % len(stores)]
        try:
            barrier.wait()
            for round_ in range(rounds):
                request = store.load(session.id)
                assert request is not None
                request[f"w{index}-{round_}"] = index
                store.save(request)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    loaded = first.load(session.id)
    assert loaded is not None
    assert loaded.data == {f"w{i}-{r}": i for i in range(writers) for r in range(rounds)}


def test_the_last_writer_of_one_key_wins(store: SessionStore) -> None:
    session = store.create()
    a, b = store.load(session.id), store.load(session.id)
    assert a is not None
    assert b is not None
    a["k"] = "a"
    b["k"] = "b"
    store.save(a)
    store.save(b)
    loaded = store.load(session.id)
    assert loaded is not None
    assert loaded["k"] == "b"


# --------------------------------------------------------------------------- capabilities


def test_shared_iff_declared(make_store: Factory) -> None:
    one, two = make_store(), make_store()
    session = one.create({"a": 1})
    seen = two.load(session.id)
    if Capability.SHARED in one.capabilities:
        assert seen is not None
        assert seen.data == {"a": 1}
        seen["b"] = 2
        two.save(seen)
        mine = one.load(session.id)
        assert mine is not None
        assert mine.data == {"a": 1, "b": 2}
    else:
        assert seen is None


def test_durable_sessions_survive_a_restart(make_store: Factory) -> None:
    store = make_store()
    if Capability.DURABLE not in store.capabilities:
        return  # not durable: no promise either way (a shared server may still hold them)
    session = store.create({"a": 1})
    store.close()
    restarted = make_store()
    loaded = restarted.load(session.id)
    assert loaded is not None
    assert loaded.data == {"a": 1}


def test_purge_expired_iff_declared(store: SessionStore, advance: Callable[[float], None]) -> None:
    if Capability.PURGE not in store.capabilities:
        with pytest.raises(UnsupportedOperation):
            store.purge_expired()
        return
    old = [store.create({"n": i}) for i in range(3)]
    advance(TTL / 2)
    young = store.create({"young": True})
    advance(TTL / 2 + 1)
    assert store.purge_expired() == 3
    assert store.purge_expired() == 0
    assert all(store.load(s.id) is None for s in old)
    assert store.load(young.id) is not None


def test_export_lists_every_live_session_iff_declared(
    store: SessionStore, advance: Callable[[float], None]
) -> None:
    if Capability.EXPORT not in store.capabilities:
        with pytest.raises(UnsupportedOperation):
            list(store.export_sessions())
        return
    old = store.create({"n": 0})
    advance(TTL / 2)
    live = [store.create({"n": n, "tags": ["x"] * n}) for n in range(1, 1200, 7)]
    advance(TTL / 2 + 1)  # ``old`` has expired, the others have not
    exported = {record.id: record for record in store.export_sessions()}
    assert old.id not in exported
    assert set(exported) == {session.id for session in live}
    for session in live:
        assert exported[session.id].data == session.data
        assert exported[session.id].expires_at == pytest.approx(session.expires_at)


def test_import_keeps_ids_data_and_expiry_iff_declared(
    make_store: Factory, advance: Callable[[float], None]
) -> None:
    store = make_store()
    records = [
        SessionRecord(new_session_id(), {"user": f"u{n}", "n": n}, 1000.0 + n) for n in range(3)
    ]
    if Capability.IMPORT not in store.capabilities:
        with pytest.raises(UnsupportedOperation):
            store.import_sessions(records)
        return
    now = store.load(store.create().id)
    assert now is not None
    base = now.expires_at - TTL  # the test clock's "now"
    records = [SessionRecord(r.id, r.data, base + 10 * (n + 1)) for n, r in enumerate(records)]
    expired = SessionRecord(new_session_id(), {"gone": True}, base - 1)
    assert store.import_sessions([*records, expired]) == len(records)
    assert store.import_sessions(records) == len(records)  # idempotent
    reader = make_store() if Capability.SHARED in store.capabilities else store
    for record in records:
        loaded = reader.load(record.id)
        assert loaded is not None
        assert loaded.data == record.data
        assert loaded.expires_at == pytest.approx(record.expires_at)
    assert reader.load(expired.id) is None
    # The remaining TTL is the record's, not the store's: the first one expires first.
    advance(15)
    assert reader.load(records[0].id) is None
    session = reader.load(records[1].id)
    assert session is not None
    session["more"] = 1
    reader.save(session)  # an imported session is a normal session
    loaded = reader.load(records[1].id)
    assert loaded is not None
    assert loaded.data == {**records[1].data, "more": 1}


def test_import_replaces_a_session_of_the_same_id(make_store: Factory) -> None:
    store = make_store()
    if Capability.IMPORT not in store.capabilities:
        return
    session = store.create({"a": 1})
    store.import_sessions([SessionRecord(session.id, {"b": 2}, session.expires_at)])
    loaded = store.load(session.id)
    assert loaded is not None
    assert loaded.data == {"b": 2}


@pytest.mark.parametrize(
    "bad",
    [
        SessionRecord("not-an-id", {}, 2000.0),
        SessionRecord(new_session_id(), {"bytes": b"x"}, 2000.0),  # type: ignore[dict-item]
        SessionRecord(new_session_id(), {}, float("nan")),
    ],
)
def test_import_refuses_malformed_records_without_quoting_ids(
    store: SessionStore, bad: SessionRecord
) -> None:
    if Capability.IMPORT not in store.capabilities:
        return
    with pytest.raises(InvalidInput) as caught:
        store.import_sessions([bad])
    assert bad.id not in str(caught.value) or bad.id == "not-an-id"
    assert bad.id not in repr(bad)


def test_export_then_import_moves_every_session_between_backends(
    make_store: Factory, tmp_path: Any, clock: ManualClock
) -> None:
    """From this store to a SQLite store and back: the round trip any move makes."""
    source = make_store()
    if Capability.EXPORT not in source.capabilities:
        return
    sessions = [source.create({"user": n}) for n in range(5)]
    other = SqlSessionStore(url=f"sqlite:///{tmp_path / 'other.db'}", ttl=TTL, clock=clock)
    other.create_schema()
    try:
        assert other.import_sessions(source.export_sessions()) == len(sessions)
        for session in sessions:
            loaded = other.load(session.id)
            assert loaded is not None
            assert loaded.data == session.data
    finally:
        other.close()


def test_ping_and_close_are_harmless(make_store: Factory) -> None:
    store = make_store()
    store.ping()
    store.close()
    store.close()


def test_create_schema_is_idempotent_and_the_store_works_after_it(make_store: Factory) -> None:
    """``create_schema()`` says whether the backend keeps tables, the same each time, and
    leaves a working store (``db init`` and the library entry call it on every start)."""
    store = make_store()
    first = store.create_schema()
    assert isinstance(first, bool)
    assert store.create_schema() is first
    store.ping()


def test_reprs_never_show_session_ids(store: SessionStore) -> None:
    session = store.create({"a": 1})
    assert session.id not in repr(session)
    assert session.id not in repr(store)


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("ttl", [0, -5, float("nan"), float("inf"), "100", True, None])
def test_a_bad_ttl_is_a_config_error(ttl: Any, tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="ttl"):
        MemorySessionStore(ttl=ttl)
    with pytest.raises(ConfigError, match="ttl"):
        SqlSessionStore(url=f"sqlite:///{tmp_path / 's.db'}", ttl=ttl)


def test_sql_options_are_checked(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="url"):
        SqlSessionStore(url="")
    with pytest.raises(ConfigError, match="url"):
        SqlSessionStore(url="not a url at all")
    with pytest.raises(ConfigError, match="url") as caught:
        SqlSessionStore(url="postgresql://user:hunter2@host:port/db")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ConfigError, match="create_database"):
        SqlSessionStore(url=f"sqlite:///{tmp_path / 's.db'}", create_database="yes")  # type: ignore[arg-type]


def test_a_bad_clock_is_a_config_error(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="clock"):
        MemorySessionStore(clock="now")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="clock"):
        SqlSessionStore(url=f"sqlite:///{tmp_path / 's.db'}", clock=42)  # type: ignore[arg-type]


def test_the_default_ttl_is_fourteen_days() -> None:
    assert MemorySessionStore().ttl == 14 * 24 * 3600


# --------------------------------------------------------------------------- model-based

KEYS = st.sampled_from(["a", "b", "c"])
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.text(max_size=5),
    st.lists(st.integers(0, 9), max_size=3),
)


def test_stateful_against_a_model(store: SessionStore, clock: ManualClock) -> None:
    """Random create/set/delete-key/save/load/delete/rotate/advance sequences match a dict."""

    class SessionMachine(RuleBasedStateMachine):
        handles = Bundle("handles")
        ids = Bundle("ids")

        def __init__(self) -> None:
            super().__init__()
            # id -> (data, expires_at) as the store should hold it.
            self.model: dict[str, tuple[dict[str, Any], float]] = {}

        def live(self, session_id: str) -> dict[str, Any] | None:
            entry = self.model.get(session_id)
            if entry is None or entry[1] <= clock.now():
                return None
            return entry[0]

        @rule(target=handles, data=st.dictionaries(KEYS, VALUES, max_size=3))
        def create(self, data: dict[str, Any]) -> Session:
            session = store.create(data)
            self.model[session.id] = (dict(data), clock.now() + TTL)
            assert session.data == data
            return session

        @rule(target=ids, handle=handles)
        def remember_id(self, handle: Session) -> str:
            return handle.id

        @rule(target=handles, session_id=ids)
        def load(self, session_id: str) -> Any:
            loaded = store.load(session_id)
            expected = self.live(session_id)
            if expected is None:
                assert loaded is None
                return multiple()
            assert loaded is not None
            assert loaded.data == expected
            return loaded

        @rule(handle=handles, key=KEYS, value=VALUES)
        def set_key(self, handle: Session, key: str, value: Any) -> None:
            handle[key] = value

        @rule(handle=handles, key=KEYS)
        def delete_key(self, handle: Session, key: str) -> None:
            if key in handle:
                del handle[key]

        @rule(handle=handles)
        def save(self, handle: Session) -> None:
            current = self.live(handle.id)
            if current is None:
                with pytest.raises(NotFound):
                    store.save(handle)
                return
            changed, removed = handle.changes
            merged = {**current, **changed}
            for key in removed:
                merged.pop(key, None)
            store.save(handle)
            assert handle.data == merged
            assert not handle.modified
            self.model[handle.id] = (merged, clock.now() + TTL)

        @rule(session_id=ids)
        def delete(self, session_id: str) -> None:
            store.delete(session_id)
            self.model.pop(session_id, None)

        @rule(target=handles, handle=handles)
        def rotate(self, handle: Session) -> Any:
            current = self.live(handle.id)
            if current is None:
                with pytest.raises(NotFound):
                    store.rotate(handle)
                return multiple()
            changed, removed = handle.changes
            merged = {**current, **changed}
            for key in removed:
                merged.pop(key, None)
            rotated = store.rotate(handle)
            assert rotated.data == merged
            assert rotated.id != handle.id
            del self.model[handle.id]
            self.model[rotated.id] = (merged, clock.now() + TTL)
            return rotated

        @rule(seconds=st.sampled_from([1.0, TTL / 2, TTL + 1]))
        def advance(self, seconds: float) -> None:
            clock.advance(seconds)

    run_state_machine_as_test(
        SessionMachine, settings=settings(max_examples=25, stateful_step_count=25, deadline=None)
    )
