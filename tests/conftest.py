"""Fixtures shared by every tier: where the real servers are, and proof that they answer.

``scripts/services up`` starts them on these loopback addresses. A server that does not
answer fails the test that needs it: the suite never skips for a missing server.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator

import pytest

MEMCACHED_SERVERS = os.environ.get("SCTEST_MEMCACHED", "127.0.0.1:21211,127.0.0.1:21212").split(",")
S3_ENDPOINT = os.environ.get("SCTEST_S3_ENDPOINT", "http://127.0.0.1:25000")
AMQP_URL = os.environ.get("SCTEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
POSTGRES_URL = os.environ.get("SCTEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")


def require_server(host: str, port: int, what: str) -> None:
    """Fail (never skip) unless something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=3):
            return
    except OSError as exc:
        pytest.fail(
            f"{what} is not reachable at {host}:{port} ({exc}); run scripts/services up",
            pytrace=False,
        )


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return (host or address, int(port) if port.isdigit() else default_port)


@pytest.fixture(scope="session")
def memcached_servers() -> list[str]:
    """Two running memcached servers as "host:port" strings."""
    for address in MEMCACHED_SERVERS:
        require_server(*_host_port(address, 11211), "memcached")
    return list(MEMCACHED_SERVERS)


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """The URL of a running S3-compatible endpoint (moto server)."""
    host_port = S3_ENDPOINT.split("://", 1)[1]
    require_server(*_host_port(host_port, 80), "the S3 endpoint")
    return S3_ENDPOINT


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The URL of a running RabbitMQ broker."""
    require_server("127.0.0.1", 5672, "RabbitMQ")
    return AMQP_URL


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A server URL (no database name) of a running PostgreSQL with trust auth."""
    require_server("127.0.0.1", 5432, "PostgreSQL")
    return POSTGRES_URL


@pytest.fixture
def unique() -> str:
    """A short unique token for names on shared servers (topics, databases, buckets)."""
    return uuid.uuid4().hex[:12]


@pytest.fixture(scope="session")
def scratch_database(postgres_url: str) -> Iterator[Callable[[str], str]]:
    """``scratch_database("ledger")``: the URL of a PostgreSQL database private to this test
    run (the adapter under test creates it, e.g. with ``create_database=True``). Every
    database handed out is dropped at the end of the run."""
    names: list[str] = []

    def make(label: str) -> str:
        name = f"scalecore_test_{label}_{uuid.uuid4().hex[:10]}"
        names.append(name)
        return f"{postgres_url}/{name}"

    yield make
    if not names:
        return
    import sqlalchemy as sa

    admin = sa.create_engine(f"{postgres_url}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for name in names:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()
