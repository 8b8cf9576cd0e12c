"""memcached failing under the adapters: the cache degrades, callers never see an error.

Each fault test runs its own memcached on a free loopback port (the shared servers on
21211/21212 are never touched), kills it with SIGKILL and starts it again on the same port:

* a stopped memcached: every request is still answered, from the source of truth, with the
  failures counted, and no exception reaches the caller; once it is back, caching resumes
  within a bounded time (the adapters' ``dead_timeout``);
* a memcached restarted between two requests: the pooled connections it broke are
  replaced at once, without an error or a pause;
* one of two servers down: only its keys miss;
* sessions on a memcached that is down are an error (``BackendUnavailable``), not a logout.

The last section checks the adapters' options, which needs no server.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from adapters.cache.memcached import MemcachedCache
from adapters.cache.twotier import TwoTierCache
from adapters.sessions.memcached import MemcachedSessionStore
from scalecore.errors import BackendUnavailable, ConfigError, InvalidInput
from scalecore.ports.cache import NO_VALUE, Cache
from scalecore.ports.sessions import new_session_id
from scalecore.stampede import CachedLoader
from scalecore.types import JSONValue

pytestmark = pytest.mark.integration

#: Short, so a failed server is tried again soon and the tests stay fast.
DEAD_TIMEOUT = 0.5
#: Every wait for "caching resumed" gives up after this long.
RESUME_WITHIN = 10.0
FAST = {"connect_timeout": 0.5, "timeout": 0.5, "dead_timeout": DEAD_TIMEOUT}


# -- a private memcached ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivateMemcached:
    """A memcached of one test, on a loopback port of its own; killed and restarted at will."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it on its port (the same one after a kill) and wait until it accepts."""
        user = pwd.getpwuid(os.getuid()).pw_name  # memcached run as root insists on -u
        command = [self.binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0"]
        command += ["-u", user, "-m", "16"]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                stderr = self._process.stderr.read().decode() if self._process.stderr else ""
                self._process = None
                pytest.fail(f"memcached on port {self.port} exited at start: {stderr}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.kill()
        pytest.fail(f"memcached on port {self.port} did not accept connections within 5 s")

    def kill(self) -> None:
        """SIGKILL it (only this test's own process) and wait until it is gone."""
        if self._process is None:
            return
        process, self._process = self._process, None
        process.kill()
        process.wait(timeout=5)
        if process.stderr is not None:
            process.stderr.close()


@pytest.fixture(scope="module")
def memcached_binary() -> str:
    """The memcached executable; its absence fails the tests (scripts/services installs it)."""
    binary = shutil.which("memcached")
    if binary is None:
        pytest.fail(
            "the memcached binary is not on PATH; `scripts/services up` installs it",
            pytrace=False,
        )
    return binary


@pytest.fixture
def start_memcached(memcached_binary: str) -> Iterator[Callable[[], PrivateMemcached]]:
    """Start private memcached servers; every one is killed after the test."""
    started: list[PrivateMemcached] = []

    def start() -> PrivateMemcached:
        server = PrivateMemcached(memcached_binary)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def private_memcached(start_memcached: Callable[[], PrivateMemcached]) -> PrivateMemcached:
    return start_memcached()


def _namespace() -> str:
    return f"f{uuid.uuid4().hex[:12]}:"


class Source:
    """The source of truth behind the cache (a database, say); counts how often it is read."""

    def __init__(self) -> None:
        self.reads = 0

    def read(self) -> JSONValue:
        self.reads += 1
        return {"id": 1, "name": "Ada"}


def _wait_until(condition: Callable[[], bool], what: str) -> float:
    """Poll ``condition`` until true; return the seconds it took or fail after RESUME_WITHIN."""
    started = time.monotonic()
    while time.monotonic() - started < RESUME_WITHIN:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"{what} did not happen within {RESUME_WITHIN} s")


def _coordination_ops(cache: Cache) -> list[Callable[[], Any]]:
    return [
        lambda: cache.add("lease", 1),
        lambda: cache.incr("counter"),
        lambda: cache.gets("k"),
        lambda: cache.cas("k", 1, 1),
        lambda: cache.delete_if("k", 1),
        cache.ping,
    ]


# -- a stopped memcached ---------------------------------------------------------------------


def test_a_stopped_memcached_is_a_miss_and_caching_resumes_when_it_returns(
    private_memcached: PrivateMemcached,
) -> None:
    cache = MemcachedCache(servers=[private_memcached.address], namespace=_namespace(), **FAST)
    loader = CachedLoader(cache, ttl=60, jitter=0)
    source = Source()
    try:
        assert loader.get_or_compute("profile:1", source.read) == {"id": 1, "name": "Ada"}
        assert loader.get_or_compute("profile:1", source.read) == {"id": 1, "name": "Ada"}
        assert source.reads == 1

        private_memcached.kill()
        started = time.monotonic()
        for _ in range(10):
            assert loader.get_or_compute("profile:1", source.read) == {"id": 1, "name": "Ada"}
        assert source.reads == 11  # every request answered by the source of truth
        assert time.monotonic() - started < 5  # failing fast, not waiting on timeouts
        assert cache.stats.errors > 0
        assert loader.stats.errors > 0

        # The data operations degrade without raising; the coordination ones raise.
        errors = cache.stats.errors
        cache.set("k", 1)
        cache.set_many({"k": 1, "m": 2})
        cache.delete("k")
        assert cache.get("k") is NO_VALUE
        assert cache.get_many(["k", "m"]) == {}
        assert cache.stats.errors == errors + 5
        for operation in _coordination_ops(cache):
            with pytest.raises(BackendUnavailable):
                operation()

        private_memcached.start()

        def cached_again() -> bool:
            before = source.reads
            loader.get_or_compute("profile:1", source.read)
            loader.get_or_compute("profile:1", source.read)
            return source.reads - before <= 1  # the second request was a hit

        _wait_until(cached_again, "caching after memcached came back")
        reads = source.reads
        assert loader.get_or_compute("profile:1", source.read) == {"id": 1, "name": "Ada"}
        assert source.reads == reads
        cache.ping()
    finally:
        cache.close()


def test_a_stopped_memcached_under_a_two_tier_cache(
    private_memcached: PrivateMemcached,
) -> None:
    options: dict[str, Any] = {
        "servers": [private_memcached.address],
        "namespace": _namespace(),
        "local_ttl": 0.3,
        **FAST,
    }
    first, other_process = TwoTierCache(**options), TwoTierCache(**options)
    loader = CachedLoader(first, ttl=60, jitter=0)
    source = Source()
    try:
        assert loader.get_or_compute("profile:1", source.read) == {"id": 1, "name": "Ada"}
        assert other_process.get("profile:1") is not NO_VALUE  # it reached memcached

        private_memcached.kill()
        deadline = time.monotonic() + 1.0  # well past local_ttl: local copies expire
        requests = 0
        while time.monotonic() < deadline:
            assert loader.get_or_compute("profile:1", source.read) == {"id": 1, "name": "Ada"}
            requests += 1
            time.sleep(0.02)
        assert first.stats.errors > 0
        # The local tier still absorbed most requests: one source read per local_ttl or so.
        assert 1 < source.reads < requests / 2
        with pytest.raises(BackendUnavailable):
            first.add("lease", 1)

        private_memcached.start()

        def shared_again() -> bool:
            loader.get_or_compute("profile:1", source.read)
            return other_process.get("profile:1") is not NO_VALUE

        _wait_until(shared_again, "the shared tier caching again")
        first.ping()
    finally:
        first.close()
        other_process.close()


def test_a_restart_between_requests_costs_no_error(private_memcached: PrivateMemcached) -> None:
    # A long dead_timeout: were the server marked failed, the last get would miss.
    cache = MemcachedCache(
        servers=[private_memcached.address],
        namespace=_namespace(),
        connect_timeout=0.5,
        timeout=0.5,
        dead_timeout=60,
    )
    try:
        # Concurrent requests leave several connections in the pool; the restart breaks all.
        barrier = threading.Barrier(4)

        def write(n: int) -> None:
            barrier.wait()
            cache.set(f"k{n}", n)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert cache.get_many([f"k{n}" for n in range(4)]) == {f"k{n}": n for n in range(4)}
        private_memcached.kill()
        private_memcached.start()
        assert cache.get("k0") is NO_VALUE  # memcached forgot everything, and said so
        cache.set("k0", "again")
        assert cache.get("k0") == "again"
        assert cache.add("lease", 1) is True
        assert cache.stats.errors == 0
    finally:
        cache.close()


def test_with_one_of_two_servers_down_only_its_keys_miss(
    start_memcached: Callable[[], PrivateMemcached],
) -> None:
    alive, doomed = start_memcached(), start_memcached()
    cache = MemcachedCache(servers=[alive.address, doomed.address], namespace=_namespace(), **FAST)
    keys = [f"key-{n}" for n in range(40)]
    try:
        cache.set_many({key: key for key in keys})
        assert cache.get_many(keys) == {key: key for key in keys}
        doomed.kill()
        errors = cache.stats.errors
        survivors = cache.get_many(keys)
        assert 0 < len(survivors) < len(keys)  # rendezvous hashing spread them over both
        assert all(value == key for key, value in survivors.items())
        assert cache.stats.errors == errors + 1  # one failed request: the dead server's batch
        for key in keys:
            if key in survivors:
                assert cache.get(key) == key
                assert cache.add(key, "other") is False  # the live server still coordinates
            else:
                assert cache.get(key) is NO_VALUE
                with pytest.raises(BackendUnavailable):
                    cache.add(key, "other")
        with pytest.raises(BackendUnavailable):
            cache.ping()
    finally:
        cache.close()


# -- unreachable servers (nothing listens) ---------------------------------------------------


@pytest.fixture
def unreachable() -> str:
    """The address of a loopback port where nothing listens."""
    return f"127.0.0.1:{_free_port()}"


@pytest.mark.parametrize("adapter", [MemcachedCache, TwoTierCache])
def test_a_cache_on_an_unreachable_server_never_raises_from_data_operations(
    adapter: Callable[..., Cache], unreachable: str
) -> None:
    cache = adapter(servers=[unreachable], namespace=_namespace(), **FAST)  # no connection yet
    loader = CachedLoader(cache, ttl=60, jitter=0)
    source = Source()
    assert loader.get_or_compute("k", lambda: 41) == 41
    assert cache.get("absent") is NO_VALUE
    assert cache.get_many(["absent", "also"]) == {}
    cache.delete("k")
    for operation in _coordination_ops(cache):
        with pytest.raises(BackendUnavailable):
            operation()
    assert loader.get_or_compute("profile", source.read) == {"id": 1, "name": "Ada"}
    assert cache.stats.errors >= 3
    # Bad input is still refused, whatever the server's state.
    with pytest.raises(InvalidInput):
        cache.set("k", {1, 2})  # type: ignore[arg-type]
    cache.close()


def test_sessions_on_an_unreachable_server_are_an_error_not_a_logout(unreachable: str) -> None:
    store = MemcachedSessionStore(servers=[unreachable], **FAST)
    session_id = new_session_id()
    for operation in (
        lambda: store.create({"user": 1}),
        lambda: store.load(session_id),
        lambda: store.delete(session_id),
        store.ping,
    ):
        with pytest.raises(BackendUnavailable) as raised:
            operation()
        assert session_id not in str(raised.value)
    assert store.load("not an id") is None  # a malformed id never reaches the server
    store.close()


def test_sessions_come_back_with_memcached_but_not_their_data(
    private_memcached: PrivateMemcached,
) -> None:
    store = MemcachedSessionStore(servers=[private_memcached.address], ttl=60, **FAST)
    try:
        session = store.create({"user": 1})
        private_memcached.kill()
        with pytest.raises(BackendUnavailable):
            store.load(session.id)
        private_memcached.start()
        _wait_until(lambda: _answers(store), "the session store answering again")
        assert store.load(session.id) is None  # not DURABLE: a restart logs everyone out
        assert store.load(store.create({"user": 2}).id) is not None
    finally:
        store.close()


def _answers(store: MemcachedSessionStore) -> bool:
    try:
        store.load(new_session_id())
    except BackendUnavailable:
        return False
    return True


# -- options (no server needed) --------------------------------------------------------------

BAD_SHARED_OPTIONS = [
    ({"servers": []}, "servers"),
    ({"servers": "no-port"}, "servers"),
    ({"servers": ["host:port"]}, "servers"),
    ({"servers": ["host:0"]}, "servers"),
    ({"servers": ["host:70000"]}, "servers"),
    ({"servers": [11211]}, "servers"),
    ({"servers": ["h:1", "h:1"]}, "servers"),
    ({"servers": None}, "servers"),
    ({"connect_timeout": 0}, "connect_timeout"),
    ({"timeout": -1}, "timeout"),
    ({"timeout": "1"}, "timeout"),
    ({"dead_timeout": True}, "dead_timeout"),
    ({"max_pool_size": 0}, "max_pool_size"),
    ({"max_pool_size": 2.5}, "max_pool_size"),
    ({"namespace": "has space"}, "namespace"),
    ({"namespace": "n" * 65}, "namespace"),
    ({"clock": "now"}, "clock"),
]
BAD_CACHE_OPTIONS = [
    *BAD_SHARED_OPTIONS,
    ({"default_ttl": 0}, "default_ttl"),
    ({"name": ""}, "name"),
]


@pytest.mark.parametrize(("options", "option"), BAD_CACHE_OPTIONS)
@pytest.mark.parametrize("adapter", [MemcachedCache, TwoTierCache])
def test_memcached_caches_refuse_bad_options_naming_them(
    adapter: Callable[..., Cache], options: dict[str, Any], option: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        adapter(**{"servers": ["127.0.0.1:11211"], **options})
    assert raised.value.key == option


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"local_ttl": None}, "local_ttl"),
        ({"local_ttl": 0}, "local_ttl"),
        ({"local_ttl": "5"}, "local_ttl"),
        ({"local_max_entries": 0}, "local_max_entries"),
        ({"local_max_entries": True}, "local_max_entries"),
    ],
)
def test_two_tier_cache_refuses_bad_local_options(options: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigError) as raised:
        TwoTierCache(servers=["127.0.0.1:11211"], **options)
    assert raised.value.key == option


@pytest.mark.parametrize(
    ("options", "option"),
    [*BAD_SHARED_OPTIONS, ({"ttl": 0}, "ttl"), ({"ttl": None}, "ttl")],
)
def test_memcached_session_store_refuses_bad_options_naming_them(
    options: dict[str, Any], option: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        MemcachedSessionStore(**{"servers": ["127.0.0.1:11211"], **options})
    assert raised.value.key == option


def test_server_lists_may_be_one_comma_separated_string() -> None:
    cache = MemcachedCache(servers="127.0.0.1:1, [::1]:2")  # type: ignore[arg-type]
    assert "127.0.0.1:1,[::1]:2" in repr(cache)
