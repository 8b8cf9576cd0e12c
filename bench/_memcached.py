"""A private memcached with one worker thread, for benchmarks that compare two clients.

memcached hands each new connection to one of its worker threads in turn, and on this
kind of (virtual) box how long a get takes depends on which thread serves it: two
clients on the shared server can differ by a factor of two for a whole run whatever
their code. With a single worker thread every connection is served by the same thread,
so a ratio between two clients measures the clients. The server listens on loopback
only, on a free port, and is stopped when the block ends.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def single_thread_memcached(memory_mb: int = 64) -> Iterator[tuple[str, int]]:
    """Start ``memcached -t 1`` on a free loopback port; yield ``(host, port)``; stop it."""
    binary = shutil.which("memcached")
    if binary is None:
        raise RuntimeError("memcached is not installed: run scripts/services up")
    port = _free_port()
    command = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "1"]
    command += ["-m", str(memory_mb), "-u", getpass.getuser()]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"memcached did not start on port {port}") from None
                time.sleep(0.05)
        yield ("127.0.0.1", port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
