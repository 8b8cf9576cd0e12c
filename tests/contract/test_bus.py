"""The Bus contract: what every adapter of the port promises, run against each of them.

Every test gets an unstarted bus from the ``bus`` fixture (or several from ``case.make``),
uses topic names with a unique suffix so a shared broker needs no cleanup, and branches on
declared capabilities and on the :class:`BusCase` flags, never on an adapter's name.
Message order is not promised, so no test depends on it.

A new adapter joins by adding one entry to :data:`FACTORIES`. The tests after the contract
section cover what only :class:`~adapters.bus.inprocess.InProcessBus` promises.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.bus.inprocess import InProcessBus
from scalecore import requestid
from scalecore.capabilities import Capability
from scalecore.clock import ManualClock
from scalecore.errors import BackendUnavailable, ConfigError, InvalidInput, UnsupportedOperation
from scalecore.ports.bus import Bus, Message, QueueDepth
from scalecore.types import JSONValue

#: Every factory configures its bus with this many attempts.
MAX_ATTEMPTS = 3
#: ... and this retry delay, short so retry tests stay fast.
RETRY_DELAY = 0.05


@attrs.frozen
class BusCase:
    """How to make buses of one adapter, and what the suite may expect of them.

    ``make`` returns a new, unstarted bus configured with ``max_attempts=MAX_ATTEMPTS`` and
    ``retry_delays=[RETRY_DELAY]``. ``spreads_work``: two consumers of one group, busy at
    the same time, each get a share. ``quiet``: seconds to wait before asserting that
    something did *not* happen (0 where delivery is inline).
    """

    make: Callable[[], Bus]
    spreads_work: bool
    quiet: float


def _inprocess(mode: str) -> Callable[[pytest.FixtureRequest], BusCase]:
    def factory(request: pytest.FixtureRequest) -> BusCase:
        return BusCase(
            make=lambda: InProcessBus(
                mode=mode, max_attempts=MAX_ATTEMPTS, retry_delays=[RETRY_DELAY], workers=2
            ),
            spreads_work=True,
            quiet=0.0 if mode == "sync" else 0.1,
        )

    return factory


def _rabbitmq(request: pytest.FixtureRequest) -> BusCase:
    # Imported here, so collecting the suite needs no pika.
    from adapters.bus.rabbitmq import RabbitMqBus

    url: str = request.getfixturevalue("amqp_url")
    declared: set[tuple[str, str]] = set()

    class RecordingRabbitMqBus(RabbitMqBus):
        """Remembers the groups it declares (subscribe declares too), for the cleanup."""

        def declare(self, topic: str, group: str) -> None:
            super().declare(topic, group)
            declared.add((topic, group))

    def delete_queues() -> None:
        # Durable queues outlive the test: delete them, or a shared broker collects
        # hundreds per run. Runs after the case fixture has closed the test's buses.
        cleaner = RabbitMqBus(url=url, max_attempts=MAX_ATTEMPTS, retry_delays=[RETRY_DELAY])
        try:
            for topic, group in declared:
                cleaner.delete_group(topic, group)
        finally:
            cleaner.close()

    request.addfinalizer(delete_queues)
    return BusCase(
        make=lambda: RecordingRabbitMqBus(
            url=url, max_attempts=MAX_ATTEMPTS, retry_delays=[RETRY_DELAY], workers=2
        ),
        spreads_work=True,
        quiet=0.2,
    )


#: id -> factory; a factory may ask ``request`` for server fixtures (``amqp_url``).
FACTORIES: dict[str, Callable[[pytest.FixtureRequest], BusCase]] = {
    "inprocess-threaded": _inprocess("threaded"),
    "inprocess-sync": _inprocess("sync"),
    "rabbitmq": _rabbitmq,
}
#: Factories that need a real server: their tests carry the ``integration`` marker.
INTEGRATION = frozenset({"rabbitmq"})


@pytest.fixture(
    params=[
        pytest.param(name, marks=pytest.mark.integration) if name in INTEGRATION else name
        for name in FACTORIES
    ]
)
def case(request: pytest.FixtureRequest) -> Iterator[BusCase]:
    """A BusCase whose buses are all closed after the test."""
    made: list[Bus] = []
    base = FACTORIES[request.param](request)

    def make() -> Bus:
        bus = base.make()
        made.append(bus)
        return bus

    yield attrs.evolve(base, make=make)
    for bus in made:
        bus.close()


@pytest.fixture
def bus(case: BusCase) -> Bus:
    """A new, unstarted bus."""
    return case.make()


@pytest.fixture
def topic() -> str:
    """A topic name no other test uses."""
    return f"test.{uuid.uuid4().hex[:12]}"


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds.

    Returns at once when it is already true, as it is after any call on a bus that delivers
    inline.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.005)


def settle(case: BusCase) -> None:
    """Give stray deliveries the chance to happen before asserting they did not."""
    if case.quiet:
        time.sleep(case.quiet)


class Recorder:
    """A handler that records every message it gets; optionally fails some deliveries."""

    def __init__(
        self, fail: Callable[[Message], bool] = lambda _m: False, *, busy: float = 0.0
    ) -> None:
        self.messages: list[Message] = []
        self.fail = fail
        self.busy = busy
        self._lock = threading.Lock()

    def __call__(self, message: Message) -> None:
        with self._lock:
            self.messages.append(message)
        if self.busy:
            time.sleep(self.busy)
        if self.fail(message):
            raise RuntimeError("handler failed on purpose")

    @property
    def payloads(self) -> list[JSONValue]:
        with self._lock:
            return [message.payload for message in self.messages]

    def count(self) -> int:
        with self._lock:
            return len(self.messages)


def same_json(a: object, b: object) -> bool:
    """Equal as JSON values, types included (``True`` is not ``1``, ``1`` is not ``1.0``)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    return a == b


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

BAD_NAMES: list[object] = ["", "Upper", "has space", "a..b", ".a", "a.", "a/b", "x" * 121, 5, None]


# -- fan-out and work sharing -------------------------------------------------------------


def test_every_group_gets_every_message(bus: Bus, topic: str) -> None:
    first, second = Recorder(), Recorder()
    bus.subscribe(topic, "first", first)
    bus.subscribe(topic, "second", second)
    bus.start()
    bus.publish_many(topic, list(range(5)))
    wait_until(lambda: first.count() == 5 and second.count() == 5)
    assert sorted(first.payloads) == sorted(second.payloads) == list(range(5))  # type: ignore[type-var]


def test_members_of_a_group_share_its_messages_without_duplicates(
    case: BusCase, bus: Bus, topic: str
) -> None:
    # Busy handlers, so a second consumer has reason to take a turn.
    one, two = Recorder(busy=0.005), Recorder(busy=0.005)
    bus.subscribe(topic, "workers", one)
    bus.subscribe(topic, "workers", two)
    bus.start()
    sent = bus.publish_many(topic, list(range(20)))
    wait_until(lambda: one.count() + two.count() == 20)
    settle(case)
    handled = [message.id for message in one.messages + two.messages]
    assert sorted(handled) == sorted(message.id for message in sent)
    if case.spreads_work:
        assert one.count() > 0
        assert two.count() > 0


def test_a_cancelled_subscription_gets_nothing_more(case: BusCase, bus: Bus, topic: str) -> None:
    stays, leaves = Recorder(), Recorder()
    bus.subscribe(topic, "workers", stays)
    subscription = bus.subscribe(topic, "workers", leaves)
    bus.start()
    subscription.cancel()
    subscription.cancel()  # idempotent
    bus.publish_many(topic, list(range(6)))
    wait_until(lambda: stays.count() == 6)
    settle(case)
    assert leaves.count() == 0
    assert (subscription.topic, subscription.group) == (topic, "workers")


def test_publish_to_a_topic_without_groups_drops_the_message(
    case: BusCase, bus: Bus, topic: str
) -> None:
    bus.start()
    bus.publish(topic, "lost")
    recorder = Recorder()
    bus.subscribe(topic, "late", recorder)
    bus.publish(topic, "kept")
    wait_until(lambda: recorder.count() >= 1)
    settle(case)
    assert recorder.payloads == ["kept"]


def test_a_declared_group_keeps_messages_until_a_consumer_subscribes(bus: Bus, topic: str) -> None:
    bus.declare(topic, "later")
    bus.declare(topic, "later")  # idempotent
    bus.start()
    bus.publish_many(topic, ["a", "b", "c"])
    recorder = Recorder()
    bus.subscribe(topic, "later", recorder)
    wait_until(lambda: recorder.count() == 3)
    assert sorted(recorder.payloads) == ["a", "b", "c"]  # type: ignore[type-var]


def test_deliveries_begin_only_once_the_bus_is_started(case: BusCase, bus: Bus, topic: str) -> None:
    recorder = Recorder()
    bus.subscribe(topic, "group", recorder)
    bus.publish(topic, "waiting")
    settle(case)
    assert recorder.count() == 0
    bus.start()
    bus.start()  # idempotent
    wait_until(lambda: recorder.payloads == ["waiting"])


# -- at-least-once, retries and dead letters ---------------------------------------------


def test_a_failing_handler_gets_the_message_again_with_the_same_id(bus: Bus, topic: str) -> None:
    recorder = Recorder(fail=lambda message: message.attempt < 3)
    bus.subscribe(topic, "group", recorder)
    bus.start()
    sent = bus.publish(topic, {"n": 1})
    wait_until(lambda: recorder.count() == 3)
    assert [message.attempt for message in recorder.messages] == [1, 2, 3]
    assert {message.id for message in recorder.messages} == {sent.id}
    assert all(message.payload == {"n": 1} for message in recorder.messages)


def test_a_message_failing_max_attempts_times_is_dead_lettered(
    case: BusCase, bus: Bus, topic: str
) -> None:
    recorder = Recorder(fail=lambda _m: True)
    bus.subscribe(topic, "group", recorder)
    bus.start()
    sent = bus.publish(topic, {"broken": True}, headers={"trace": "t-1"})
    wait_until(lambda: recorder.count() == MAX_ATTEMPTS)
    settle(case)
    assert [message.attempt for message in recorder.messages] == list(range(1, MAX_ATTEMPTS + 1))
    if Capability.DEAD_LETTER not in bus.capabilities:
        with pytest.raises(UnsupportedOperation):
            bus.dead_letters(topic, "group")
        return
    wait_until(lambda: len(bus.dead_letters(topic, "group")) == 1)
    [dead] = bus.dead_letters(topic, "group")
    assert (dead.id, dead.topic, dead.payload) == (sent.id, topic, {"broken": True})
    assert dead.headers["trace"] == "t-1"
    assert bus.dead_letters(topic, "group") == [dead]  # reading does not remove
    assert bus.dead_letters(topic, "other") == []


def test_depth_counts_waiting_messages_and_dead_letters(
    case: BusCase, bus: Bus, topic: str
) -> None:
    assert bus.depth(topic, "group") == QueueDepth(ready=0, dead=0)  # no such queue yet
    bus.declare(topic, "group")
    for n in range(3):
        bus.publish(topic, {"n": n})
    wait_until(lambda: bus.depth(topic, "group") == QueueDepth(ready=3, dead=0))
    recorder = Recorder(fail=lambda message: message.payload == {"n": 0})
    bus.subscribe(topic, "group", recorder)
    bus.start()
    wait_until(lambda: recorder.count() == 2 + MAX_ATTEMPTS)
    settle(case)
    dead = 1 if Capability.DEAD_LETTER in bus.capabilities else 0
    wait_until(lambda: bus.depth(topic, "group") == QueueDepth(ready=0, dead=dead))


def test_a_message_carries_the_current_request_id_to_its_handler(bus: Bus, topic: str) -> None:
    seen: list[tuple[str | None, str | None]] = []

    def handler(message: Message) -> None:
        seen.append((message.headers.get(requestid.HEADER), requestid.current()))

    bus.subscribe(topic, "group", handler)
    bus.start()
    with requestid.bind("req-0123456789"):
        sent = bus.publish(topic, {"n": 1})
        bus.publish(topic, {"n": 2}, headers={requestid.HEADER: "own-id-42424242"})
    bus.publish(topic, {"n": 3})
    assert sent.headers[requestid.HEADER] == "req-0123456789"
    wait_until(lambda: len(seen) == 3)
    assert sorted(seen, key=str) == sorted(
        [
            ("req-0123456789", "req-0123456789"),
            ("own-id-42424242", "own-id-42424242"),
            (None, None),
        ],
        key=str,
    )
    assert requestid.current() is None


def test_replayed_dead_letters_are_handled_again_from_attempt_one(bus: Bus, topic: str) -> None:
    if Capability.DEAD_LETTER not in bus.capabilities:
        with pytest.raises(UnsupportedOperation):
            bus.replay_dead_letters(topic, "group")
        return
    broken = threading.Event()
    broken.set()
    recorder = Recorder(fail=lambda _m: broken.is_set())
    bus.subscribe(topic, "group", recorder)
    bus.start()
    sent = bus.publish_many(topic, ["x", "y"])
    wait_until(lambda: len(bus.dead_letters(topic, "group")) == 2)
    broken.clear()
    assert bus.replay_dead_letters(topic, "group") == 2
    wait_until(lambda: recorder.count() == 2 * MAX_ATTEMPTS + 2)
    replayed = recorder.messages[2 * MAX_ATTEMPTS :]
    assert sorted(message.id for message in replayed) == sorted(message.id for message in sent)
    assert [message.attempt for message in replayed] == [1, 1]
    assert bus.dead_letters(topic, "group") == []
    assert bus.replay_dead_letters(topic, "group") == 0
    assert bus.replay_dead_letters(topic, "never-declared") == 0


# -- payloads, ids, names -----------------------------------------------------------------


@attrs.frozen
class RoundTrip:
    bus: Bus
    topic: str
    received: dict[str, Message]


@pytest.fixture
def roundtrip(bus: Bus, topic: str) -> RoundTrip:
    """A started bus with one subscription that keeps every message by id."""
    received: dict[str, Message] = {}
    bus.subscribe(topic, "group", lambda message: received.__setitem__(message.id, message))
    bus.start()
    return RoundTrip(bus, topic, received)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # one bus for all examples
)
@given(payload=json_values)
def test_payloads_arrive_as_equal_json_copies(roundtrip: RoundTrip, payload: JSONValue) -> None:
    sent = roundtrip.bus.publish(roundtrip.topic, payload)
    wait_until(lambda: sent.id in roundtrip.received)
    got = roundtrip.received[sent.id].payload
    assert same_json(got, payload)
    assert same_json(sent.payload, payload)
    if isinstance(payload, list | dict):
        assert got is not payload


def test_a_handler_gets_a_copy_it_may_change(bus: Bus, topic: str) -> None:
    original: dict[str, JSONValue] = {"items": [1, 2], "name": "a"}

    def mutate(message: Message) -> None:
        assert isinstance(message.payload, dict)
        message.payload["name"] = "changed"

    bus.subscribe(topic, "first", mutate)
    second = Recorder()
    bus.subscribe(topic, "second", second)
    bus.start()
    bus.publish(topic, original)
    wait_until(lambda: second.count() == 1)
    assert original == {"items": [1, 2], "name": "a"}
    assert second.payloads == [{"items": [1, 2], "name": "a"}]


@pytest.mark.parametrize(
    "payload",
    [
        object(),
        {1: "int key"},
        {"nested": {"set": {1, 2}}},
        ["tuple", ("a", "b")],
        b"bytes",
        math.nan,
        [math.inf],
        {"x": -math.inf},
    ],
    ids=["object", "int-key", "set", "tuple", "bytes", "nan", "inf", "-inf"],
)
def test_non_json_payloads_are_refused_and_nothing_is_published(
    case: BusCase, bus: Bus, topic: str, payload: object
) -> None:
    recorder = Recorder()
    bus.subscribe(topic, "group", recorder)
    bus.start()
    with pytest.raises(InvalidInput):
        bus.publish(topic, payload)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        bus.publish_many(topic, ["fine", payload])  # type: ignore[list-item]
    bus.publish(topic, "marker")
    wait_until(lambda: recorder.count() >= 1)
    settle(case)
    assert recorder.payloads == ["marker"]


def test_a_self_containing_payload_is_refused(bus: Bus, topic: str) -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(InvalidInput):
        bus.publish(topic, loop)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_invalid_topic_and_group_names_are_refused(bus: Bus, topic: str, name: object) -> None:
    bad: str = name  # type: ignore[assignment]
    calls: list[Callable[[], object]] = [
        lambda: bus.publish(bad, 1),
        lambda: bus.publish_many(bad, [1]),
        lambda: bus.declare(bad, "group"),
        lambda: bus.declare(topic, bad),
        lambda: bus.subscribe(bad, "group", Recorder()),
        lambda: bus.subscribe(topic, bad, Recorder()),
    ]
    if Capability.DEAD_LETTER in bus.capabilities:
        calls += [
            lambda: bus.dead_letters(bad, "group"),
            lambda: bus.dead_letters(topic, bad),
            lambda: bus.replay_dead_letters(bad, "group"),
            lambda: bus.replay_dead_letters(topic, bad),
        ]
    if Capability.REQUEST_REPLY in bus.capabilities:
        calls += [lambda: bus.request(bad, 1, timeout=0.1), lambda: bus.respond(bad, lambda p: p)]
    for call in calls:
        with pytest.raises(InvalidInput):
            call()


def test_publish_returns_the_message_as_sent(bus: Bus, topic: str) -> None:
    recorder = Recorder()
    bus.subscribe(topic, "group", recorder)
    bus.start()
    sent = bus.publish(topic, {"a": 1}, message_id="order-42", headers={"trace": "abc"})
    assert (sent.topic, sent.id, sent.attempt, sent.payload) == (topic, "order-42", 1, {"a": 1})
    assert sent.headers["trace"] == "abc"
    wait_until(lambda: recorder.count() == 1)
    [got] = recorder.messages
    assert (got.topic, got.id, got.attempt, got.payload) == (topic, "order-42", 1, {"a": 1})
    assert got.headers["trace"] == "abc"
    assert abs(got.published_at - sent.published_at) < 1e-3


@pytest.mark.parametrize(
    ("message_id", "headers"),
    [("", None), ("has space", None), ("x" * 129, None), (None, {"k": 1}), (None, {"": "v"})],
)
def test_bad_message_ids_and_headers_are_refused(
    case: BusCase, bus: Bus, topic: str, message_id: str | None, headers: dict[str, str] | None
) -> None:
    recorder = Recorder()
    bus.subscribe(topic, "group", recorder)
    bus.start()
    with pytest.raises(InvalidInput):
        bus.publish(topic, "bad", message_id=message_id, headers=headers)
    settle(case)
    assert recorder.count() == 0


def test_publish_many_returns_one_message_per_payload(bus: Bus, topic: str) -> None:
    recorder = Recorder()
    bus.subscribe(topic, "group", recorder)
    bus.start()
    sent = bus.publish_many(topic, [{"n": n} for n in range(10)])
    assert [message.payload for message in sent] == [{"n": n} for n in range(10)]
    assert len({message.id for message in sent}) == 10
    assert all(message.topic == topic and message.attempt == 1 for message in sent)
    wait_until(lambda: recorder.count() == 10)
    assert Counter(m.id for m in recorder.messages) == Counter(m.id for m in sent)
    assert bus.publish_many(topic, []) == []


# -- stopping and restarting --------------------------------------------------------------


def test_stop_waits_for_handlers_in_flight(bus: Bus, topic: str) -> None:
    started, finished = threading.Event(), threading.Event()

    def slow(_message: Message) -> None:
        started.set()
        time.sleep(0.2)
        finished.set()

    bus.subscribe(topic, "group", slow)
    bus.start()
    # Publish from another thread: a bus that delivers inline runs the handler there.
    publisher = threading.Thread(target=bus.publish, args=(topic, "work"))
    publisher.start()
    assert started.wait(5)
    bus.stop(timeout=5)
    assert finished.is_set()
    publisher.join(5)
    bus.stop()  # idempotent


def test_messages_survive_a_stop_with_handlers_in_flight_and_a_restart(
    bus: Bus, topic: str
) -> None:
    release, started = threading.Event(), threading.Event()
    handled: list[JSONValue] = []

    def blocking(message: Message) -> None:
        started.set()
        assert release.wait(5)
        handled.append(message.payload)

    bus.subscribe(topic, "group", blocking)
    bus.start()
    publisher = threading.Thread(target=bus.publish_many, args=(topic, [1, 2, 3, 4, 5]))
    publisher.start()
    assert started.wait(5)
    bus.stop(timeout=0.1)  # gives up waiting: handlers are still blocked
    release.set()
    publisher.join(5)
    bus.start()
    wait_until(lambda: set(handled) == {1, 2, 3, 4, 5})


# -- capabilities, each checked in both directions ---------------------------------------


def test_request_reply(bus: Bus, topic: str) -> None:
    if Capability.REQUEST_REPLY not in bus.capabilities:
        with pytest.raises(UnsupportedOperation):
            bus.respond(topic, lambda payload: payload)
        with pytest.raises(UnsupportedOperation):
            bus.request(topic, 1, timeout=0.1)
        return

    def responder(payload: JSONValue) -> JSONValue:
        if payload == "boom":
            raise ValueError("cannot answer boom")
        return {"echo": payload}

    bus.respond(topic, responder)
    bus.start()
    assert bus.request(topic, {"q": [1, 2]}, timeout=5) == {"echo": {"q": [1, 2]}}
    assert bus.request(topic, None, timeout=5) == {"echo": None}
    with pytest.raises(BackendUnavailable, match="cannot answer boom"):
        bus.request(topic, "boom", timeout=5)
    with pytest.raises(InvalidInput):
        bus.request(topic, {1, 2}, timeout=5)  # type: ignore[arg-type]


def test_request_without_a_responder_times_out(bus: Bus, topic: str) -> None:
    if Capability.REQUEST_REPLY not in bus.capabilities:
        with pytest.raises(UnsupportedOperation):
            bus.request(topic, 1, timeout=0.1)
        return
    bus.start()
    began = time.monotonic()
    with pytest.raises(BackendUnavailable):
        bus.request(topic, "anyone?", timeout=0.2)
    assert time.monotonic() - began < 3


def test_several_responders_answer_each_request_once(bus: Bus, topic: str) -> None:
    if Capability.REQUEST_REPLY not in bus.capabilities:
        with pytest.raises(UnsupportedOperation):
            bus.respond(topic, lambda payload: payload)
        return
    bus.respond(topic, lambda payload: ["a", payload])
    bus.respond(topic, lambda payload: ["b", payload])
    bus.start()
    replies = [bus.request(topic, n, timeout=5) for n in range(6)]
    assert all(isinstance(reply, list) and reply[0] in ("a", "b") for reply in replies)
    assert [reply[1] for reply in replies if isinstance(reply, list)] == list(range(6))


def test_shared_iff_declared(case: BusCase, topic: str) -> None:
    publisher, consumer = case.make(), case.make()
    recorder = Recorder()
    consumer.subscribe(topic, "group", recorder)
    consumer.start()
    publisher.start()
    publisher.publish(topic, "across instances")
    if Capability.SHARED in publisher.capabilities:
        wait_until(lambda: recorder.count() == 1)
    else:
        settle(case)
        assert recorder.count() == 0


def test_durable_iff_declared(case: BusCase, topic: str) -> None:
    first = case.make()
    first.declare(topic, "group")
    first.publish(topic, "kept?")
    first.close()
    second = case.make()
    recorder = Recorder()
    second.subscribe(topic, "group", recorder)
    second.start()
    if Capability.DURABLE in second.capabilities:
        wait_until(lambda: recorder.count() == 1)
    else:
        settle(case)
        assert recorder.count() == 0


# -- InProcessBus only: not part of the contract ------------------------------------------


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"mode": "async"}, "mode"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"max_attempts": "3"}, "max_attempts"),
        ({"retry_delays": []}, "retry_delays"),
        ({"retry_delays": [-1]}, "retry_delays"),
        ({"retry_delays": [math.nan]}, "retry_delays"),
        ({"retry_delays": ["1"]}, "retry_delays"),
        ({"retry_delays": 1.0}, "retry_delays"),
        ({"retry_delays": "0.1"}, "retry_delays"),
        ({"workers": 0}, "workers"),
        ({"workers": 1.5}, "workers"),
        ({"clock": object()}, "clock"),
    ],
)
def test_inprocess_bad_options_name_the_option(options: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        InProcessBus(**options)  # type: ignore[arg-type]
    assert caught.value.key == key


def test_inprocess_defaults() -> None:
    bus = InProcessBus()
    assert (bus.mode, bus.max_attempts, bus.retry_delays, bus.workers) == (
        "threaded",
        5,
        (0.1, 0.5, 2.0),
        1,
    )
    assert bus.capabilities == {Capability.DEAD_LETTER, Capability.REQUEST_REPLY}


def test_inprocess_sync_delivers_before_publish_returns(topic: str) -> None:
    bus = InProcessBus(mode="sync")
    recorder = Recorder()
    bus.subscribe(topic, "group", recorder)
    bus.publish(topic, "queued")
    assert recorder.count() == 0
    bus.start()
    assert recorder.payloads == ["queued"]
    bus.publish(topic, "inline")
    assert recorder.payloads == ["queued", "inline"]
    assert not [t for t in threading.enumerate() if t.name.startswith(f"bus:{topic}")]
    assert bus.drain() is True


def test_inprocess_sync_round_robins_within_a_group(topic: str) -> None:
    bus = InProcessBus(mode="sync")
    one, two = Recorder(), Recorder()
    bus.subscribe(topic, "group", one)
    bus.subscribe(topic, "group", two)
    bus.start()
    bus.publish_many(topic, list(range(6)))
    assert one.count() == two.count() == 3


def test_inprocess_sync_handlers_that_publish_do_not_recurse(topic: str) -> None:
    bus = InProcessBus(mode="sync")
    seen: list[int] = []

    def chain(message: Message) -> None:
        assert isinstance(message.payload, int)
        seen.append(message.payload)
        if message.payload < 3000:  # far deeper than the recursion limit
            bus.publish(topic, message.payload + 1)

    bus.subscribe(topic, "group", chain)
    bus.start()
    bus.publish(topic, 1)
    assert seen == list(range(1, 3001))


def test_inprocess_sync_retries_without_sleeping(topic: str) -> None:
    clock = ManualClock()
    bus = InProcessBus(mode="sync", max_attempts=4, retry_delays=[600.0], clock=clock)
    recorder = Recorder(fail=lambda _m: True)
    bus.subscribe(topic, "group", recorder)
    bus.start()
    began = time.monotonic()
    sent = bus.publish(topic, "doomed")
    assert time.monotonic() - began < 1
    assert [m.attempt for m in recorder.messages] == [1, 2, 3, 4]
    assert [m.id for m in bus.dead_letters(topic, "group")] == [sent.id]
    assert bus.dead_letters(topic, "group")[0].attempt == 4
    assert sent.published_at == clock.now()


def test_inprocess_sync_request_from_inside_a_handler(topic: str) -> None:
    bus = InProcessBus(mode="sync")
    answers: list[JSONValue] = []
    bus.respond(f"{topic}.rpc", lambda payload: {"double": payload * 2})  # type: ignore[operator]
    bus.subscribe(topic, "group", lambda m: answers.append(bus.request(f"{topic}.rpc", m.payload)))
    bus.start()
    bus.publish(topic, 21)
    assert answers == [{"double": 42}]


def test_inprocess_threaded_retry_waits_for_the_delay_on_the_clock(topic: str) -> None:
    clock = ManualClock()
    bus = InProcessBus(max_attempts=3, retry_delays=[30.0], clock=clock)
    recorder = Recorder(fail=lambda m: m.attempt == 1)
    bus.subscribe(topic, "group", recorder)
    bus.start()
    try:
        bus.publish(topic, "later")
        wait_until(lambda: recorder.count() == 1)
        time.sleep(0.15)  # several retry polls: the clock has not moved, so no redelivery
        assert recorder.count() == 1
        clock.advance(30.0)
        wait_until(lambda: recorder.count() == 2)
        assert [m.attempt for m in recorder.messages] == [1, 2]
        assert bus.drain(5) is True
    finally:
        bus.close()


def test_inprocess_threaded_workers_run_handlers_concurrently(topic: str) -> None:
    bus = InProcessBus(workers=3)
    barrier = threading.Barrier(3, timeout=5)
    recorder = Recorder()

    def together(message: Message) -> None:
        barrier.wait()  # breaks (and the handler fails) unless all three run at once
        recorder(message)

    bus.subscribe(topic, "group", together)
    bus.start()
    try:
        bus.publish_many(topic, [1, 2, 3])
        assert bus.drain(5) is True
        assert sorted(recorder.payloads) == [1, 2, 3]  # type: ignore[type-var]
        assert [m.attempt for m in recorder.messages] == [1, 1, 1]
    finally:
        bus.close()


@pytest.mark.parametrize("mode", ["threaded", "sync"])
def test_inprocess_drain(mode: str, topic: str) -> None:
    bus = InProcessBus(mode=mode, retry_delays=[0.01])
    recorder = Recorder(fail=lambda m: m.attempt == 1 and m.payload == 0)
    bus.subscribe(topic, "group", recorder)
    bus.declare(topic, "nobody")  # an unconsumed queue is not waited for
    bus.publish_many(topic, list(range(30)))
    assert bus.drain(0.1) is False  # not started: nothing can move
    bus.start()
    try:
        assert bus.drain(5) is True
        assert recorder.count() == 31
    finally:
        bus.close()
    with pytest.raises(InvalidInput):
        bus.drain(-1)


@pytest.mark.parametrize("mode", ["threaded", "sync"])
def test_inprocess_stop_from_inside_a_handler(mode: str, topic: str) -> None:
    bus = InProcessBus(mode=mode)
    recorder = Recorder()

    def stopper(message: Message) -> None:
        bus.stop(timeout=5)
        recorder(message)

    bus.subscribe(topic, "group", stopper)
    bus.start()
    bus.publish_many(topic, [1, 2])
    wait_until(lambda: recorder.count() >= 1)
    time.sleep(0.05)
    assert recorder.count() == 1  # the second stays queued
    bus.close()


@pytest.mark.parametrize("mode", ["threaded", "sync"])
def test_inprocess_stats(mode: str, topic: str) -> None:
    bus = InProcessBus(mode=mode, max_attempts=2, retry_delays=[0.0])
    bus.subscribe(topic, "flaky", Recorder(fail=lambda m: m.attempt == 1))
    bus.subscribe(topic, "broken", Recorder(fail=lambda _m: True))
    bus.start()
    try:
        bus.publish_many(topic, ["a", "b"])
        bus.publish(f"{topic}.empty", "dropped")
        assert bus.drain(5) is True
    finally:
        bus.close()
    stats = bus.stats.snapshot()
    assert stats.published[topic] == 2
    assert stats.published[f"{topic}.empty"] == 1
    assert stats.handled_count(topic, "flaky", "retry") == 2
    assert stats.handled_count(topic, "flaky", "ok") == 2
    assert stats.handled_count(topic, "broken", "retry") == 2
    assert stats.handled_count(topic, "broken", "dead") == 2
    assert stats.handled_count(topic, "broken", "ok") == 0


def test_inprocess_failures_are_logged_without_the_payload(
    topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    bus = InProcessBus(mode="sync", max_attempts=2)
    bus.subscribe(topic, "group", Recorder(fail=lambda _m: True))
    bus.start()
    with caplog.at_level(logging.WARNING, logger="adapters.bus.inprocess"):
        sent = bus.publish(topic, {"email": "alice@example.com"})
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3  # two failures, one dead letter
    assert all(sent.id in text and topic in text for text in messages)
    assert not any("alice@example.com" in text for text in messages)


def test_inprocess_responder_returning_non_json_is_an_error_reply(topic: str) -> None:
    bus = InProcessBus(mode="sync")
    bus.respond(topic, lambda _payload: {1, 2})  # type: ignore[arg-type, return-value]
    bus.start()
    with pytest.raises(BackendUnavailable, match="non-JSON"):
        bus.request(topic, "x", timeout=1)


def test_inprocess_request_refuses_a_bad_timeout(topic: str) -> None:
    bus = InProcessBus(mode="sync")
    for timeout in (-1, math.nan, "5"):
        with pytest.raises(InvalidInput):
            bus.request(topic, 1, timeout=timeout)  # type: ignore[arg-type]


def test_inprocess_sync_first_request_made_while_starting(topic: str) -> None:
    # start() delivers the queued message inline, and its handler makes the bus's first
    # request: the reply topic is set up while a delivery loop runs in this thread.
    bus = InProcessBus(mode="sync")
    bus.respond(f"{topic}.rpc", lambda payload: payload)
    answers: list[JSONValue] = []
    bus.subscribe(topic, "group", lambda m: answers.append(bus.request(f"{topic}.rpc", m.payload)))
    bus.publish(topic, "queued before start")
    bus.start()
    assert answers == ["queued before start"]


def test_create_schema_is_idempotent_and_the_bus_works_after_it(bus: Bus) -> None:
    """``create_schema()`` says whether the backend keeps tables, the same each time, and
    leaves a working bus (``db init`` and the library entry call it on every start)."""
    first = bus.create_schema()
    assert isinstance(first, bool)
    assert bus.create_schema() is first
    bus.ping()
