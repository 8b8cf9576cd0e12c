"""RabbitMqBus.publish / publish_many against bare pika with publisher confirms.

Both sides publish persistent JSON messages to a durable topic exchange with a durable
queue bound to the topic, on the broker at 127.0.0.1:5672, and wait for the broker's
confirm. The baseline is a pika ``BlockingConnection`` with ``confirm_delivery()``: each
``basic_publish`` returns once its confirm arrived. ``publish_many`` is compared per
message against that same baseline publishing the batch one confirmed message at a time
(what bare pika gives without extra code); the adapter sends the batch together and
awaits the confirms together. Target (issue 4): a confirmed publish within 10% of bare
pika with confirms. Every exchange and queue declared here has a unique name and is
deleted at the end.

Run: ``python -m bench.bus_publish [--quick]`` from the repository root.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Sequence

import pika

from adapters.bus.rabbitmq import RabbitMqBus
from bench._common import (
    alternating,
    header,
    interleaved,
    latency_table,
    load_average,
    paired_verdict,
    parse_args,
    verdict,
)

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
PAYLOAD = {"photo_id": "p-123", "owner_id": "u-456", "created_at": 1.5, "occurred_at": 1.5}
TOPIC = "bench.publish"
BARE = "pika publish+confirm (baseline)"
ADAPTER = "RabbitMqBus.publish"
GROUP = "bench"


def run(quick: bool) -> dict[str, float]:
    rounds, batch, warmup = (6, 40, 50) if quick else (30, 100, 200)
    many = 50  # messages per publish_many call
    many_rounds = 4 if quick else 10
    run_id = uuid.uuid4().hex[:8]
    bus_exchange = f"bench-bus-{run_id}"
    bare_exchange = f"bench-bare-{run_id}"
    bare_queue = f"bench-bare-{run_id}:queue"

    bus = RabbitMqBus(url=URL, exchange=bus_exchange)
    bus.declare(TOPIC, GROUP)  # a durable queue, so messages are routed and kept
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    channel.exchange_declare(bare_exchange, exchange_type="topic", durable=True)
    channel.queue_declare(bare_queue, durable=True)
    channel.queue_bind(bare_queue, bare_exchange, routing_key=TOPIC)
    channel.confirm_delivery()

    def bare_publish() -> None:
        body = json.dumps(PAYLOAD, separators=(",", ":")).encode()
        channel.basic_publish(
            bare_exchange,
            TOPIC,
            body,
            pika.BasicProperties(
                content_type="application/json",
                delivery_mode=2,
                message_id=uuid.uuid4().hex,
                timestamp=int(time.time()),
            ),
        )

    def bus_publish() -> None:
        bus.publish(TOPIC, PAYLOAD)

    def bare_publish_many() -> None:
        for _ in range(many):
            bare_publish()

    def bus_publish_many() -> None:
        bus.publish_many(TOPIC, [PAYLOAD] * many)

    try:
        singles = alternating(
            {BARE: bare_publish, ADAPTER: bus_publish},
            rounds=rounds,
            per_round=batch,
            warmup=warmup,
        )
        channel.queue_purge(bare_queue)
        batches = interleaved(
            {
                f"pika x{many}, confirm each (baseline)": bare_publish_many,
                f"RabbitMqBus.publish_many x{many}": bus_publish_many,
            },
            rounds=many_rounds,
            batch=3,
            warmup=2,
        )
    finally:
        with contextlib.suppress(Exception):
            bus.delete_group(TOPIC, GROUP)
        bus.close()
        with contextlib.suppress(Exception):
            channel.queue_delete(bare_queue)
            channel.exchange_delete(bare_exchange)
            channel.exchange_delete(bus_exchange)
        connection.close()

    text_single, _ = latency_table(singles.samples, {ADAPTER: BARE})
    text_many, many_ratios = latency_table(
        batches,
        {f"RabbitMqBus.publish_many x{many}": f"pika x{many}, confirm each (baseline)"},
        per=many,
    )
    print("confirmed persistent publishes to a durable queue on 127.0.0.1:5672")
    print(text_single)
    print()
    print(f"publish_many: per message, batches of {many}")
    print(text_many)
    publish_ratio = singles.ratio(ADAPTER, BARE)[0]
    many_ratio = many_ratios[f"RabbitMqBus.publish_many x{many}"]
    print(paired_verdict("confirmed publish vs bare pika with confirms", singles, ADAPTER, BARE))
    print(verdict("publish_many per message vs bare pika confirming each", many_ratio))
    print(load_average())
    return {"bus.publish": publish_ratio, "bus.publish_many": many_ratio}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    header("bus publish: RabbitMqBus vs bare pika with confirms", args.quick)
    run(args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
