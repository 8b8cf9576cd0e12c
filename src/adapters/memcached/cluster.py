"""A fixed set of memcached servers: key placement, pooled connections, failed-server skipping.

Backend: pymemcache (a pool of its ``Client`` per server, placement by pymemcache's
    ``RendezvousHash``, the hashing its ``HashClient`` uses)
Install extra: memcached
Options (each adapter passes them through under these names): servers (a list of
    "host:port" strings, at least one; a single string may list several separated by
    commas); connect_timeout (seconds to open a connection, default 0.5); timeout (seconds
    a read or write may block, default 0.5); max_pool_size (open connections per server,
    default 64: one more concurrent request fails as the server being unavailable);
    dead_timeout (seconds a failed server is skipped before it is tried again, default 5).
Differs from the port: not a port; the plumbing the memcached adapters share.

Placement: every key lives on exactly one server, picked by rendezvous (highest random
weight) hashing of ``"host:port"`` and the key, so adding a server moves only the keys that
now hash to it. A failed server's keys are not moved to the others while it is down: they
fail fast (see below) until it answers again. Moving them would keep hit rates up, but when
the server came back it would serve the values it held before, which writes and deletes made
elsewhere meanwhile had superseded; and, at the next failover, the other servers would
serve their own leftover copies. A miss is always safe; a stale hit after an invalidation
is not.

Failure: a request that times out, is refused or finds its connection broken marks the
server failed for ``dead_timeout`` seconds, during which requests for its keys raise
``BackendUnavailable`` at once, without touching the network; after that one request
probes it (the others keep failing fast) and a success puts it back. A connection found
closed (the server restarted since it was pooled) is retried once on a fresh connection
before the server is marked, and the pool's other idle connections, which are as dead, are
dropped. ``CLIENT_ERROR`` replies become ``CommandRefused`` (an ``InvalidInput``);
``SERVER_ERROR`` replies (out of memory, value too large) and an exhausted pool become
``BackendUnavailable`` without marking the server. Nothing else escapes: this module is the
one place where pymemcache and socket errors become scalecore errors.

The pool of each server is a free list of pymemcache ``Client`` objects rather than
pymemcache's ``PooledClient``: that one takes its pool's lock twice and searches a list on
every call, about 2 µs, which is 5-10% of a get on loopback; a deque's ``pop`` and
``append`` are atomic and need no lock. Connections are made on demand, up to
``max_pool_size``, and one that failed is closed, never reused.

pymemcache's ``HashClient`` is not used: with its default retries it answers calls to a
failing server with silent defaults (``add`` returns ``False``, which would read as "the
lease is taken"), its failover bookkeeping is not thread-safe, and a ``get_many`` across
servers loses every server's hits when one of them fails.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, NamedTuple, TypeVar

from pymemcache.client.base import Client
from pymemcache.client.rendezvous import RendezvousHash
from pymemcache.exceptions import (
    MemcacheClientError,
    MemcacheError,
    MemcacheServerError,
    MemcacheUnexpectedCloseError,
)

from scalecore.clock import Clock, SystemClock
from scalecore.errors import BackendUnavailable, ConfigError, InvalidInput, ScalecoreError
from scalecore.validate import check_int, check_seconds

__all__ = [
    "EXPIRE_NOW",
    "CommandRefused",
    "Connections",
    "MemcachedCluster",
    "Server",
    "Stored",
    "memcached_expiry",
]

T = TypeVar("T")

#: memcached reads an expiry above 30 days as a Unix time instead of a number of seconds.
RELATIVE_EXPIRY_LIMIT: Final = 30 * 24 * 3600
#: memcached parses expiry times as signed 32-bit numbers; larger ones wrap into the past.
MAX_EXPIRY: Final = 2**31 - 1
#: An expiry that makes the item just written expire at once (a compare-and-delete).
EXPIRE_NOW: Final = -1

#: Errors that mean "this connection was closed under us" rather than "the server is gone".
_CLOSED: Final = (
    MemcacheUnexpectedCloseError,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)


class CommandRefused(InvalidInput):
    """memcached refused a command as malformed (``CLIENT_ERROR``), e.g. ``incr`` of text."""


class Stored(NamedTuple):
    """An item as read from memcached: the adapter's bytes and the item's 32-bit flags."""

    data: bytes
    flags: int


class _RawSerde:
    """Values cross the wire as bytes the adapter encoded itself (JSON); never pickle.

    Reads return :class:`Stored`, so an adapter decodes (and may reject) each value itself
    and sees the flags it wrote. Stateless, hence safe for every pooled connection at once.
    """

    def serialize(self, key: bytes, value: bytes) -> tuple[bytes, int]:
        return value, 0

    def deserialize(self, key: bytes, value: bytes, flags: int) -> Stored:
        return Stored(value, flags)


_SERDE: Final = _RawSerde()


def memcached_expiry(seconds: float | None, now: float) -> int:
    """The ``exptime`` for an item that should live ``seconds`` from ``now`` (Unix time).

    ``None`` gives 0, memcached's "no expiry". Otherwise whole seconds, rounded up and at
    least 1 (memcached reads 0 as "never"); beyond 30 days an absolute Unix time, as
    memcached requires, capped at 2**31 - 1. memcached's clock ticks once a second, so an
    item written with an expiry of ``n`` seconds lives between ``n - 1`` and ``n`` seconds.
    """
    if seconds is None:
        return 0
    whole = max(1, math.ceil(seconds))
    if whole <= RELATIVE_EXPIRY_LIMIT:
        return whole
    return min(math.ceil(now + seconds), MAX_EXPIRY)


def parse_servers(value: object) -> tuple[tuple[str, int], ...]:
    """``("host", port)`` pairs from the ``servers`` option; ``ConfigError`` naming it if bad."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, Sequence) or not value:
        raise ConfigError(
            'must be a non-empty list of "host:port" strings, like ["127.0.0.1:11211"]',
            key="servers",
        )
    parsed: list[tuple[str, int]] = []
    for item in value:
        if not isinstance(item, str):
            raise ConfigError(f'must hold "host:port" strings, not {item!r}', key="servers")
        host, colon, port = item.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")  # "[::1]:11211"
        if (
            not colon
            or not host
            or any(char.isspace() for char in host)
            or not (port.isascii() and port.isdigit())
            or not 0 < int(port) < 65536
        ):
            raise ConfigError(f'{item!r} is not "host:port"', key="servers")
        parsed.append((host, int(port)))
    if len(set(parsed)) != len(parsed):
        raise ConfigError("lists the same server twice", key="servers")
    return tuple(parsed)


class Connections:
    """Open connections (pymemcache ``Client`` objects) to one server, reused LIFO.

    Thread-safe. ``run`` lends a connection to one command: taken from the free list (or
    made, up to ``max_size``; past that, ``RuntimeError`` as pymemcache's own pool
    raises), returned after a success, closed after any error. After ``retire`` every
    connection is closed when its command ends.
    """

    __slots__ = ("_count", "_free", "_lock", "_make", "_max", "_retired")

    def __init__(self, make: Callable[[], Any], max_size: int) -> None:
        self._make = make
        self._max = max_size
        self._free: deque[Any] = deque()
        self._count = 0  # connections made and not yet closed
        self._lock = threading.Lock()
        self._retired = False

    def run(self, command: Callable[[Any], T]) -> T:
        try:
            client = self._free.pop()
        except IndexError:
            client = self._new()
        try:
            result = command(client)
        except BaseException:
            self._close(client)
            raise
        if self._retired:
            self._close(client)
        else:
            self._free.append(client)
        return result

    def close(self) -> None:
        """Close the idle connections; a later command opens new ones."""
        while True:
            try:
                client = self._free.pop()
            except IndexError:
                return
            self._close(client)

    def retire(self) -> None:
        """Close the idle connections now and the busy ones when their command ends."""
        self._retired = True
        self.close()

    def _new(self) -> Any:
        with self._lock:
            if self._count >= self._max:
                raise RuntimeError(f"Too many objects, {self._count} >= {self._max}")
            self._count += 1
        try:
            return self._make()
        except BaseException:
            with self._lock:
                self._count -= 1
            raise

    def _close(self, client: Any) -> None:
        with self._lock:
            self._count -= 1
        client.close()


class Server:
    """One memcached server: its address, current connection pool and failure mark."""

    __slots__ = ("address", "client", "dead_until", "host", "lock", "port")

    def __init__(self, host: str, port: int, client: Connections) -> None:
        self.host = host
        self.port = port
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.client: Connections = client  # replaced, never mutated, on failure
        self.dead_until = 0.0  # monotonic time until which it is skipped; 0: healthy
        self.lock = threading.Lock()  # guards client and dead_until changes

    def __repr__(self) -> str:
        return f"<memcached {self.address}>"


class MemcachedCluster:
    """The servers of one adapter. Thread-safe; nothing connects until the first request.

    See the module docstring for placement and failure handling. ``clock`` times the
    ``dead_timeout``; socket timeouts are always real time. ``serde`` (a pymemcache serde,
    shared by every connection, so it must be thread-safe) turns each item read into what
    the adapter wants; by default a :class:`Stored`. Writes always take bytes and flags.
    """

    def __init__(
        self,
        *,
        servers: object,
        connect_timeout: object = 0.5,
        timeout: object = 0.5,
        max_pool_size: object = 64,
        dead_timeout: object = 5.0,
        clock: Clock | None = None,
        serde: Any = None,
    ) -> None:
        addresses = parse_servers(servers)
        self._serde: Any = _SERDE if serde is None else serde
        self.connect_timeout = check_seconds(connect_timeout, "connect_timeout", error=ConfigError)
        self.timeout = check_seconds(timeout, "timeout", error=ConfigError)
        self.dead_timeout = check_seconds(dead_timeout, "dead_timeout", error=ConfigError)
        self.max_pool_size = check_int(max_pool_size, "max_pool_size", minimum=1, error=ConfigError)
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigError(f"must be a Clock, not {type(clock).__name__}", key="clock")
        self._clock: Clock = clock or SystemClock()
        self.servers: tuple[Server, ...] = tuple(
            Server(host, port, self._new_client(host, port)) for host, port in addresses
        )
        self._by_address = {server.address: server for server in self.servers}
        # One server needs no hashing; several use pymemcache's rendezvous hash.
        self._hasher = (
            RendezvousHash(nodes=list(self._by_address)) if len(self.servers) > 1 else None
        )

    @property
    def addresses(self) -> list[str]:
        """The servers as ``"host:port"`` strings, in configured order."""
        return [server.address for server in self.servers]

    # -- placement -----------------------------------------------------------------------

    def server_for(self, key: str) -> Server:
        """The server that holds ``key`` (a valid memcached key)."""
        if self._hasher is None:
            return self.servers[0]
        return self._by_address[self._hasher.get_node(key)]

    def by_server(self, keys: Iterable[str]) -> dict[Server, list[str]]:
        """``keys`` grouped by the server that holds each, for one batch per server."""
        if self._hasher is None:
            listed = list(keys)
            return {self.servers[0]: listed} if listed else {}
        groups: dict[Server, list[str]] = {}
        for key in keys:
            groups.setdefault(self.server_for(key), []).append(key)
        return groups

    # -- requests ------------------------------------------------------------------------

    def call(self, server: Server, command: Callable[[Any], T]) -> T:
        """Run ``command(client)`` against ``server`` and return its result.

        Raises ``BackendUnavailable`` if the server is skipped after a recent failure,
        fails now, or has no free connection; ``CommandRefused`` if it refuses the command.
        """
        if server.dead_until and not self._may_probe(server):
            raise BackendUnavailable(
                f"memcached {server.address} failed recently; skipped for up to "
                f"{self.dead_timeout:g} s"
            )
        return self._run(server, command)

    def ping(self) -> None:
        """Raise ``BackendUnavailable`` unless every server answers ``version`` now.

        Servers marked failed are asked too, and put back if they answer.
        """
        failures: list[str] = []
        for server in self.servers:
            try:
                self._run(server, lambda client: client.version())
            except BackendUnavailable as exc:
                failures.append(str(exc))
        if failures:
            raise BackendUnavailable("; ".join(failures))

    def close(self) -> None:
        """Close every pooled connection. Idempotent; a later request reconnects."""
        for server in self.servers:
            server.client.close()

    # -- failure handling ----------------------------------------------------------------

    def _run(self, server: Server, command: Callable[[Any], T]) -> T:
        client = server.client
        try:
            result = client.run(command)
        except Exception as exc:
            _raise_unless_connection_error(server, exc, self.max_pool_size)
            if server.client is client and not isinstance(exc, _CLOSED):
                self._mark_failed(server, client)
                raise BackendUnavailable(f"memcached {server.address} failed: {exc!r}") from exc
            # The connection was closed under us: the server restarted since it was pooled,
            # or another thread dropped the pool. One retry on a fresh connection tells.
            self._renew(server, client)
            client = server.client
            try:
                result = client.run(command)
            except Exception as again:
                _raise_unless_connection_error(server, again, self.max_pool_size)
                self._mark_failed(server, client)
                raise BackendUnavailable(f"memcached {server.address} failed: {again!r}") from again
        if server.dead_until:
            server.dead_until = 0.0  # it answered: back in service
        return result

    def _may_probe(self, server: Server) -> bool:
        """Whether a request may go to a server marked failed; lets one through per period."""
        with server.lock:
            until = server.dead_until
            if not until:
                return True
            now = self._clock.monotonic()
            if now < until:
                return False
            server.dead_until = now + self.dead_timeout  # this caller probes; others skip
            return True

    def _mark_failed(self, server: Server, client: Connections) -> None:
        server.dead_until = self._clock.monotonic() + self.dead_timeout
        self._renew(server, client)

    def _renew(self, server: Server, failed: Connections) -> bool:
        """Replace ``failed`` with a fresh pool unless another thread already did."""
        with server.lock:
            if server.client is not failed:
                return False
            server.client = self._new_client(server.host, server.port)
        # Its idle connections are as dead as the one that failed. In-flight requests on it
        # fail too, see the pool replaced, and retry on the new one.
        failed.retire()
        return True

    def _new_client(self, host: str, port: int) -> Connections:
        def connect() -> Client:
            return Client(
                (host, port),
                serde=self._serde,
                connect_timeout=self.connect_timeout,
                timeout=self.timeout,
                no_delay=True,
                # Wait for every reply: a write sent without one could still be in flight
                # when the same caller reads on another pooled connection.
                default_noreply=False,
            )

        return Connections(connect, self.max_pool_size)


def _raise_unless_connection_error(server: Server, exc: Exception, pool_size: int) -> None:
    """Translate ``exc`` unless it says the connection or server failed (then return)."""
    if isinstance(exc, ScalecoreError):
        raise exc
    if isinstance(exc, MemcacheClientError):
        raise CommandRefused(f"memcached refused the command: {exc}") from exc
    if isinstance(exc, MemcacheServerError) and not isinstance(exc, MemcacheUnexpectedCloseError):
        raise BackendUnavailable(f"memcached {server.address} answered: {exc}") from exc
    if isinstance(exc, RuntimeError):  # pymemcache's pool is full
        raise BackendUnavailable(
            f"all {pool_size} connections to memcached {server.address} are busy"
        ) from exc
    if not isinstance(exc, OSError | MemcacheError | ValueError):
        raise exc  # a bug, not a server failure: let it show as itself
