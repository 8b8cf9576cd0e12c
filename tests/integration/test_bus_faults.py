"""RabbitMQ failing under the bus: workers killed mid-message, the broker restarted.

* A worker process killed with SIGKILL again and again while it works through thousands of
  messages: the broker redelivers what it had not acknowledged, the handler applies each
  message's effect once (idempotent by message id), and nothing is lost. Runs on the shared
  broker, in a topic of its own.
* The broker restarted (gracefully, then by a crash) while publishers are sending: every
  message whose ``publish`` returned is delivered. This one starts a private RabbitMQ node
  on free loopback ports, in a temporary directory, so the machine's shared broker (and
  whatever else is using it) is never touched.

The last section checks what :class:`RabbitMqBus` promises beyond the contract suite: its
options, an unreachable broker, immediate retries, foreign messages, logging.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest
from tcp_relay import Relay

from adapters.bus.rabbitmq import RabbitMqBus
from scalecore.capabilities import Capability
from scalecore.errors import BackendUnavailable, ConfigError
from scalecore.ports.bus import Message
from scalecore.types import JSONValue

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("_bus_worker.py")
#: The RabbitMQ start script that runs a node as the calling user (the one in /usr/sbin
#: switches to the rabbitmq user, who could not write to a pytest temporary directory).
RABBITMQ_SERVER = os.environ.get("SCTEST_RABBITMQ_SERVER", "/usr/lib/rabbitmq/bin/rabbitmq-server")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.01)


def retire(bus: RabbitMqBus, topic: str, group: str) -> None:
    """Close ``bus``, then delete the group's queues (a running consumer would declare them
    again), leaving the shared broker as it was."""
    bus.close()
    bus.delete_group(topic, group)
    bus.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# -- 1. a worker killed with SIGKILL mid-message -----------------------------------------------

MESSAGES = 2000
KILLS = 5


class Effects:
    """The worker's SQLite database, read from the test."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE deliveries (id TEXT NOT NULL, attempt INTEGER NOT NULL)")
            db.execute("CREATE TABLE applied (id TEXT PRIMARY KEY)")
            db.execute("CREATE TABLE feed (id TEXT NOT NULL, n INTEGER NOT NULL)")

    def query(self, sql: str) -> list[tuple[object, ...]]:
        with sqlite3.connect(self.path, timeout=30) as db:
            return db.execute(sql).fetchall()

    def applied(self) -> int:
        count = self.query("SELECT COUNT(*) FROM applied")[0][0]
        assert isinstance(count, int)
        return count


def test_a_worker_killed_mid_message_loses_nothing_and_applies_each_effect_once(
    amqp_url: str, tmp_path: Path, unique: str
) -> None:
    topic, group = f"fault.kill.{unique}", "feed"
    effects = Effects(tmp_path / "effects.sqlite3")
    bus = RabbitMqBus(url=amqp_url, retry_delays=[0.05])  # the worker's, for delete_group
    workers: list[subprocess.Popen[bytes]] = []

    def start_worker() -> subprocess.Popen[bytes]:
        worker = subprocess.Popen(
            [sys.executable, str(WORKER), amqp_url, topic, group, str(effects.path)],
            stdout=subprocess.DEVNULL,
        )
        workers.append(worker)
        return worker

    try:
        bus.declare(topic, group)
        sent: list[Message] = []
        for start in range(0, MESSAGES, 500):
            sent += bus.publish_many(topic, [{"n": n} for n in range(start, start + 500)])

        kills = 0
        while kills < KILLS and effects.applied() < MESSAGES * 0.8:
            worker, before = start_worker(), effects.applied()

            def progressed(worker: subprocess.Popen[bytes] = worker, before: int = before) -> bool:
                return effects.applied() > before + 20 or worker.poll() is not None

            # Kill it in full flight: once it has made progress, at a random moment after.
            wait_until(progressed, 30, "a worker made progress")
            assert worker.poll() is None, "the worker exited on its own"
            time.sleep(random.uniform(0.02, 0.15))
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            kills += 1
        assert kills >= 3, "the messages ran out before the worker was killed three times"

        final = start_worker()
        wait_until(lambda: effects.applied() == MESSAGES, 60, "every message applied")
        time.sleep(0.3)  # a duplicate effect, if any, would have time to show
        final.send_signal(signal.SIGTERM)
        assert final.wait(30) == 0

        published = Counter(message.id for message in sent)
        feed = Counter(str(row[0]) for row in effects.query("SELECT id FROM feed"))
        assert feed == published  # every effect present, and exactly once
        numbers = sorted(int(str(row[0])) for row in effects.query("SELECT n FROM feed"))
        assert numbers == list(range(MESSAGES))
        [(total, distinct)] = effects.query("SELECT COUNT(*), COUNT(DISTINCT id) FROM deliveries")
        assert distinct == MESSAGES
        assert isinstance(total, int)
        assert total > MESSAGES, "no message was redelivered: no kill hit a handler"
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
        bus.delete_group(topic, group)
        bus.close()


# -- 2. the broker restarted while publishers are sending -------------------------------------


class PrivateRabbitMq:
    """A RabbitMQ node of our own: free ports, data and logs under ``base``.

    The node runs in its own session, so stopping it (SIGTERM, or SIGKILL for a crash)
    signals exactly its processes and nothing else on the machine.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = _free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.log = base / "server.log"
        (base / "home").mkdir()
        (base / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")
        env = {key: value for key, value in os.environ.items() if not key.startswith("RABBITMQ_")}
        env.update(
            HOME=str(base / "home"),  # its own Erlang cookie
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_NODENAME=f"scfault{os.getpid()}x{self.port}@localhost",
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(_free_port()),
            RABBITMQ_CONFIG_FILE=str(base / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(base / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(base / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
            RABBITMQ_LOG_BASE=str(base / "log"),
            RABBITMQ_PID_FILE=str(base / "rabbitmq.pid"),
        )
        self._env = env
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        if not Path(RABBITMQ_SERVER).is_file():
            pytest.fail(f"no RabbitMQ server script at {RABBITMQ_SERVER} (SCTEST_RABBITMQ_SERVER)")
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [RABBITMQ_SERVER],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                tail = self.log.read_text(errors="replace")[-2000:]
                pytest.fail(f"the private RabbitMQ node did not start:\n{tail}")
            time.sleep(0.1)

    def pause(self) -> None:
        """Freeze every process of the node (SIGSTOP): connections stay open, nothing answers."""
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGCONT)

    def stop(self, how: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            os.killpg(process.pid, how)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        except ProcessLookupError:
            pass
        # The node's helper processes (beam, erl_child_setup) share its session.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        wait_until(lambda: not _port_open(self.port), 10, "the node's port closed")


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateRabbitMq]:
    """A running private RabbitMQ node, stopped (whatever happens) after the test."""
    node = PrivateRabbitMq(tmp_path)
    node.start()
    try:
        yield node
    finally:
        node.stop(signal.SIGKILL)


def test_every_message_whose_publish_returned_survives_broker_restarts(
    private_broker: PrivateRabbitMq,
) -> None:
    topic, group = "fault.restart", "group"
    url = private_broker.url
    publisher = RabbitMqBus(url=url, connect_timeout=2.0, heartbeat=5, publish_timeout=90)
    consumer = RabbitMqBus(url=url, connect_timeout=2.0, heartbeat=5, prefetch=100, workers=2)
    received: set[int] = set()
    lock = threading.Lock()

    def handle(message: Message) -> None:
        assert isinstance(message.payload, int)
        with lock:
            received.add(message.payload)

    confirmed: list[int] = []
    failed: list[BaseException] = []
    stop = threading.Event()
    numbers = iter(range(10**9))
    numbers_lock = threading.Lock()

    def take(count: int) -> list[int]:
        with numbers_lock:
            return [next(numbers) for _ in range(count)]

    longest = [0.0]  # the slowest publish: one held up by a restart, then confirmed

    def send_one_by_one() -> None:
        while not stop.is_set():
            [n] = take(1)
            began = time.monotonic()
            try:
                publisher.publish(topic, n)
            except BackendUnavailable as exc:
                failed.append(exc)
            else:
                longest[0] = max(longest[0], time.monotonic() - began)
                with lock:
                    confirmed.append(n)

    def send_in_batches() -> None:
        while not stop.is_set():
            batch = take(25)
            try:
                publisher.publish_many(topic, batch)  # type: ignore[arg-type]
            except BackendUnavailable as exc:
                failed.append(exc)
            else:
                with lock:
                    confirmed.extend(batch)

    def confirmed_count() -> int:
        with lock:
            return len(confirmed)

    senders = [threading.Thread(target=send_one_by_one), threading.Thread(target=send_in_batches)]
    try:
        publisher.declare(topic, group)
        consumer.subscribe(topic, group, handle)
        consumer.start()
        for sender in senders:
            sender.start()
        for how in (signal.SIGTERM, signal.SIGKILL, None):
            before = confirmed_count()

            def progressed(before: int = before) -> bool:
                return confirmed_count() > before + 300

            wait_until(progressed, 60, "publishing")
            if how is not None:  # a clean restart, then a crash
                private_broker.stop(how)
                private_broker.start()
        stop.set()
        for sender in senders:
            sender.join(120)
        # publish_timeout outlasts a restart: publishes caught by it waited and were resent.
        assert not failed
        assert longest[0] > 1.0
        with lock:
            expected = set(confirmed)
        wait_until(lambda: expected <= received, 60, "every confirmed message delivered")
        # The admin connections, idle through the restarts, reconnect too.
        publisher.ping()
        assert consumer.dead_letters(topic, group) == []
    finally:
        stop.set()
        for sender in senders:
            if sender.is_alive():
                sender.join(120)
        consumer.close()
        publisher.close()


def test_a_stalled_broker_fails_a_publish_at_publish_timeout_and_the_bus_recovers(
    private_broker: PrivateRabbitMq,
) -> None:
    """A broker that stops answering (frozen, not gone: no reset, no close) costs a publish
    ``publish_timeout`` seconds, not the minutes heartbeats would take to notice."""
    topic, group = "fault.stall", "group"
    bus = RabbitMqBus(url=private_broker.url, connect_timeout=2.0, publish_timeout=1.5)
    try:
        bus.declare(topic, group)
        bus.publish(topic, "before")
        private_broker.pause()
        try:
            began = time.monotonic()
            with pytest.raises(BackendUnavailable, match="did not confirm"):
                bus.publish(topic, "while frozen")
            assert 1.4 < time.monotonic() - began < 4.0
            publisher = bus._publisher  # the pool is what this part is about
            assert publisher is not None
            assert publisher.connections == 0  # a timed-out connection is not lent again
            began = time.monotonic()
            bus.close()  # one wait of CLOSE_WAIT (2 s) for all its connections together
            assert time.monotonic() - began < 3.5
        finally:
            private_broker.resume()
        bus.publish_timeout = 30.0
        bus.publish(topic, "after")  # the same link, or a new one: either way it works
        assert bus.depth(topic, group).ready >= 2
    finally:
        bus.close()


# -- RabbitMqBus beyond the contract ---------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"url": "http://localhost"}, "url"),
        ({"url": 5}, "url"),
        ({"exchange": ""}, "exchange"),
        ({"exchange": "Has Space"}, "exchange"),
        ({"exchange": "amq.topic"}, "exchange"),
        ({"prefetch": 0}, "prefetch"),
        ({"prefetch": True}, "prefetch"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"retry_delays": []}, "retry_delays"),
        ({"retry_delays": [-1]}, "retry_delays"),
        ({"workers": 0}, "workers"),
        ({"workers": 1.5}, "workers"),
        ({"heartbeat": -1}, "heartbeat"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"connect_timeout": float("nan")}, "connect_timeout"),
        ({"publish_timeout": "30"}, "publish_timeout"),
        ({"clock": object()}, "clock"),
    ],
)
def test_bad_options_name_the_option(options: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RabbitMqBus(**options)  # type: ignore[arg-type]
    assert caught.value.key == key


def test_defaults_and_capabilities() -> None:
    bus = RabbitMqBus()  # builds without connecting to anything
    assert (bus.exchange, bus.prefetch, bus.max_attempts, bus.retry_delays, bus.workers) == (
        "scalecore",
        10,
        5,
        (0.1, 0.5, 2.0),
        1,
    )
    assert (bus.heartbeat, bus.connect_timeout, bus.publish_timeout) == (60, 10.0, 30.0)
    assert bus.capabilities == {
        Capability.SHARED,
        Capability.DURABLE,
        Capability.DEAD_LETTER,
        Capability.REQUEST_REPLY,
    }


def test_an_unreachable_broker_is_backend_unavailable_without_the_password() -> None:
    url = f"amqp://guest:s3cret-pw@127.0.0.1:{_free_port()}/%2F"
    bus = RabbitMqBus(url=url, connect_timeout=0.5, publish_timeout=0.5)
    try:
        began = time.monotonic()
        for call in (
            bus.ping,
            lambda: bus.publish("fault.nobody", 1),
            lambda: bus.declare("fault.nobody", "group"),
            lambda: bus.dead_letters("fault.nobody", "group"),
        ):
            with pytest.raises(BackendUnavailable) as caught:
                call()
            assert "s3cret-pw" not in str(caught.value)
        assert time.monotonic() - began < 10
    finally:
        bus.close()


def test_zero_retry_delay_redelivers_at_once(amqp_url: str, unique: str) -> None:
    topic = f"fault.zero.{unique}"
    bus = RabbitMqBus(url=amqp_url, max_attempts=3, retry_delays=[0.0])
    attempts: list[int] = []

    def fail(message: Message) -> None:
        attempts.append(message.attempt)
        raise RuntimeError("fails every time")

    bus.subscribe(topic, "group", fail)
    try:
        bus.start()
        sent = bus.publish(topic, "x")
        wait_until(lambda: len(bus.dead_letters(topic, "group")) == 1, 10, "dead-lettered")
        assert attempts == [1, 2, 3]
        assert [m.id for m in bus.dead_letters(topic, "group")] == [sent.id]
        stats = bus.stats.snapshot()
        assert stats.published[topic] == 1
        assert stats.handled_count(topic, "group", "retry") == 2
        assert stats.handled_count(topic, "group", "dead") == 1
    finally:
        retire(bus, topic, "group")


def test_a_message_no_scalecore_bus_wrote_is_dropped_not_handled(
    amqp_url: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"fault.foreign.{unique}"
    bus = RabbitMqBus(url=amqp_url)
    received: list[JSONValue] = []
    bus.subscribe(topic, "group", lambda m: received.append(m.payload))
    try:
        bus.start()
        raw = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            raw.channel().basic_publish(bus.exchange, topic, b"not json, no id")
        finally:
            raw.close()
        with caplog.at_level(logging.ERROR, logger="adapters.bus.rabbitmq"):
            bus.publish(topic, "ours")
            wait_until(lambda: received == ["ours"], 10, "our message handled")
            wait_until(lambda: bool(caplog.records), 10, "the foreign message logged")
        assert any("no message id" in record.getMessage() for record in caplog.records)
        assert bus.dead_letters(topic, "group") == []
    finally:
        retire(bus, topic, "group")


def test_a_consumer_whose_queue_is_deleted_declares_it_again(amqp_url: str, unique: str) -> None:
    topic = f"fault.deleted.{unique}"
    bus, other = RabbitMqBus(url=amqp_url), RabbitMqBus(url=amqp_url)
    received: list[JSONValue] = []
    bus.subscribe(topic, "group", lambda m: received.append(m.payload))
    try:
        bus.start()
        bus.publish(topic, "before")
        wait_until(lambda: received == ["before"], 10, "the first message handled")
        other.delete_group(topic, "group")  # the broker cancels the consumer

        def delivered_again() -> bool:
            bus.publish(topic, "after")  # dropped until the consumer has declared the queue
            time.sleep(0.05)
            return "after" in received

        wait_until(delivered_again, 10, "the queue declared again and consumed")
    finally:
        bus.close()
        retire(other, topic, "group")


def test_failures_are_logged_without_the_payload(
    amqp_url: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"fault.logs.{unique}"
    bus = RabbitMqBus(url=amqp_url, max_attempts=2, retry_delays=[0.01])

    def fail(_message: Message) -> None:
        raise RuntimeError("fails every time")

    bus.subscribe(topic, "group", fail)
    try:
        bus.start()
        with caplog.at_level(logging.WARNING, logger="adapters.bus.rabbitmq"):
            sent = bus.publish(topic, {"email": "alice@example.com"})
            wait_until(lambda: len(caplog.records) >= 3, 10, "two failures and a dead letter")
        messages = [record.getMessage() for record in caplog.records]
        assert all(sent.id in text and topic in text for text in messages)
        assert not any("alice@example.com" in text for text in messages)
    finally:
        retire(bus, topic, "group")


def test_threads_publishing_at_once_get_a_connection_each_and_later_ones_reuse_them(
    amqp_url: str, unique: str
) -> None:
    """Publishes run on the calling thread, on a pool of connections as large as the most
    threads that ever published at once; a thread that comes later reuses an idle one."""
    topic, group = f"fault.pool.{unique}", "group"
    bus = RabbitMqBus(url=amqp_url)
    threads_at_once = 4
    barrier = threading.Barrier(threads_at_once, timeout=10)
    failures: list[BaseException] = []

    def publish_together() -> None:
        try:
            barrier.wait()
            for n in range(50):
                bus.publish(topic, n)
        except BaseException as exc:  # reported below, not lost in a thread
            failures.append(exc)

    try:
        bus.declare(topic, group)
        together = [threading.Thread(target=publish_together) for _ in range(threads_at_once)]
        for thread in together:
            thread.start()
        for thread in together:
            thread.join(30)
        assert failures == []
        publisher = bus._publisher  # the pool is what this test is about
        assert publisher is not None
        opened = publisher.connections
        assert 1 <= opened <= threads_at_once
        for n in range(8):  # one thread after another
            later = threading.Thread(target=bus.publish, args=(topic, n))
            later.start()
            later.join(10)
        assert publisher.connections == opened
        assert bus.depth(topic, group).ready == threads_at_once * 50 + 8
        bus.close()
        assert publisher.connections == 0
        bus.publish(topic, "after close")  # reconnects on demand
        assert bus.depth(topic, group).ready == threads_at_once * 50 + 9
    finally:
        retire(bus, topic, group)


def test_an_idle_connection_is_kept_alive_past_the_heartbeat(
    amqp_url: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An idle publishing connection is kept alive (the broker drops a connection after two
    missed heartbeats): a publish after a quiet spell finds it working, with nothing to
    reconnect and nothing logged."""
    topic, group = f"fault.idle.{unique}", "group"
    bus = RabbitMqBus(url=amqp_url, heartbeat=1)
    try:
        bus.declare(topic, group)
        bus.publish(topic, "before")
        time.sleep(3.5)  # the broker gives up on a silent connection after about 2 s
        caplog.clear()
        with caplog.at_level(logging.INFO):
            began = time.monotonic()
            bus.publish(topic, "after")
            took = time.monotonic() - began
            logged = [record.getMessage() for record in caplog.records]
        assert logged == []
        assert took < 1.0
        assert bus.depth(topic, group).ready == 2
    finally:
        retire(bus, topic, group)


def test_a_forked_child_publishes_on_connections_of_its_own(amqp_url: str, unique: str) -> None:
    """A pre-forking server forks after the bus was used: the child must not write to the
    parent's sockets, and the parent's connections keep working."""
    topic, group = f"fault.fork.{unique}", "group"
    bus = RabbitMqBus(url=amqp_url)
    try:
        bus.declare(topic, group)
        bus.publish(topic, "parent, before")
        child = os.fork()
        if child == 0:  # pragma: no cover - the child's outcome is its exit code
            code = 1
            try:
                bus.publish(topic, "child")
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        bus.publish(topic, "parent, after")
        assert bus.depth(topic, group).ready == 3
    finally:
        retire(bus, topic, group)


def test_an_idle_connection_that_was_cut_is_dropped_and_the_next_publish_opens_one(
    amqp_url: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    topic, group = f"fault.cut.{unique}", "group"
    relay = Relay(("127.0.0.1", 5672))
    bus = RabbitMqBus(url=f"amqp://guest:guest@127.0.0.1:{relay.port}/%2F", heartbeat=1)
    try:
        bus.declare(topic, group)
        bus.publish(topic, "before")
        publisher = bus._publisher  # the pool is what this test is about
        assert publisher is not None
        assert publisher.connections == 1
        relay.cut()
        # The keeper (every quarter heartbeat) notices and drops it, without reconnecting
        # in the background: a publish opens what it needs.
        wait_until(lambda: publisher.connections == 0, 5, "the cut connection dropped")
        caplog.clear()
        time.sleep(1.0)
        assert publisher.connections == 0
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        relay.restore()  # the broker is reachable again
        began = time.monotonic()
        bus.publish(topic, "after")
        assert time.monotonic() - began < 1.0
        assert bus.depth(topic, group).ready == 2
    finally:
        bus.close()
        relay.cut()
        retire(RabbitMqBus(url=amqp_url), topic, group)


def test_the_pool_does_not_grow_while_the_keeper_tends_it(amqp_url: str, unique: str) -> None:
    """Sixteen threads publish without pause for 4 s while the keeper runs every 0.25 s: the
    pool never holds more connections than threads."""
    topic, group = f"fault.steady.{unique}", "group"
    bus = RabbitMqBus(url=amqp_url, heartbeat=1)
    stop = threading.Event()
    failures: list[BaseException] = []
    most = [0]

    def publish_until_stopped() -> None:
        try:
            while not stop.is_set():
                bus.publish(topic, 1)
        except BaseException as exc:  # reported below
            failures.append(exc)

    senders = [threading.Thread(target=publish_until_stopped) for _ in range(16)]
    try:
        bus.declare(topic, group)
        for sender in senders:
            sender.start()
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            publisher = bus._publisher  # the pool is what this test is about
            if publisher is not None:
                most[0] = max(most[0], publisher.connections)
            time.sleep(0.01)
        stop.set()
        for sender in senders:
            sender.join(30)
        assert failures == []
        assert 1 <= most[0] <= 16
    finally:
        stop.set()
        retire(bus, topic, group)


def test_the_pool_shrinks_back_to_one_connection_after_a_burst(
    amqp_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("adapters.bus._rabbitmq_publisher.IDLE_CLOSE", 0.5)
    topic, group = f"fault.shrink.{unique}", "group"
    bus = RabbitMqBus(url=amqp_url, heartbeat=1)  # the keeper runs every 0.25 s
    barrier = threading.Barrier(4, timeout=10)

    def burst() -> None:
        barrier.wait()
        for n in range(30):
            bus.publish(topic, n)

    try:
        bus.declare(topic, group)
        threads = [threading.Thread(target=burst) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        publisher = bus._publisher  # the pool is what this test is about
        assert publisher is not None
        assert publisher.connections >= 2
        wait_until(lambda: publisher.connections == 1, 5, "the surplus connections closed")
        bus.publish(topic, "after")  # on the one kept warm
        assert publisher.connections == 1
        assert bus.depth(topic, group).ready == 121
    finally:
        retire(bus, topic, group)
