"""A bus worker process for the fault tests: applies each message's effect once, by id.

Usage: ``python _bus_worker.py URL TOPIC GROUP DATABASE``

It consumes (TOPIC, GROUP) on a :class:`~adapters.bus.rabbitmq.RabbitMqBus` until SIGTERM.
For every delivery the handler first records it in ``deliveries`` (its own commit, so a
delivery cut short by SIGKILL still shows), then, in one SQLite transaction, marks the
message id in ``applied`` and writes the effect (a ``feed`` row) only if the id was not
there yet: the idempotent-consumer pattern. A kill at any point either leaves both rows or
neither, and the broker redelivers whatever was not acknowledged. The test creates the
tables (``deliveries(id, attempt)``, ``applied(id PRIMARY KEY)``, ``feed(id, n)``).
"""

from __future__ import annotations

import signal
import sqlite3
import sys
import threading
import time

from adapters.bus.rabbitmq import RabbitMqBus
from scalecore.ports.bus import Message

#: Seconds of "work" per message, so a kill often lands inside a handler.
WORK = 0.002


def main(argv: list[str]) -> int:
    url, topic, group, database = argv
    local = threading.local()

    def connection() -> sqlite3.Connection:
        existing: sqlite3.Connection | None = getattr(local, "connection", None)
        if existing is None:
            existing = sqlite3.connect(database, timeout=30, isolation_level=None)
            existing.execute("PRAGMA synchronous=NORMAL")
            local.connection = existing
        return existing

    def handle(message: Message) -> None:
        db = connection()
        db.execute("INSERT INTO deliveries VALUES (?, ?)", (message.id, message.attempt))
        time.sleep(WORK)
        assert isinstance(message.payload, dict)
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("SELECT 1 FROM applied WHERE id = ?", (message.id,)).fetchone() is None:
                db.execute("INSERT INTO applied VALUES (?)", (message.id,))
                db.execute("INSERT INTO feed VALUES (?, ?)", (message.id, message.payload["n"]))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    bus = RabbitMqBus(url=url, prefetch=50, workers=2, retry_delays=[0.05], connect_timeout=5)
    bus.subscribe(topic, group, handle)
    bus.start()
    stop.wait()
    bus.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
