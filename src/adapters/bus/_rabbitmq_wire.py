"""The wire format of :mod:`adapters.bus.rabbitmq`: the headers and AMQP properties a message
travels with, and turning a delivery back into a :class:`~scalecore.ports.bus.Message`.
Private to that adapter."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Final

import attrs
import pika

from adapters.bus import decode_payload
from scalecore.ports.bus import Message
from scalecore.validate import is_int

#: Delivery attempt of a message, an AMQP integer.
ATTEMPT_HEADER: Final = "x-scalecore-attempt"
#: ``published_at`` as ``repr(float)``: the AMQP timestamp property has whole seconds only.
PUBLISHED_AT_HEADER: Final = "x-scalecore-published-at"
#: Marks an internal mandatory publish, so a Basic.Return can be matched to it.
MARK_HEADER: Final = "x-scalecore-publish-mark"
INTERNAL_HEADERS: Final = frozenset({ATTEMPT_HEADER, PUBLISHED_AT_HEADER, MARK_HEADER})
#: Headers the broker adds when it dead-letters a message (our retry queues do).
BROKER_HEADER_PREFIXES: Final = ("x-death", "x-first-death-", "x-last-death-")

PERSISTENT: Final = 2


# -- wire format --------------------------------------------------------------------------


class Undecodable(Exception):
    """A delivery that no handler can be given (not written by a scalecore bus)."""


def properties_for(
    message_id: str,
    published_at: float,
    headers: Mapping[str, str],
    *,
    expiration_ms: int | None = None,
) -> pika.BasicProperties:
    table: dict[str, object] = dict(headers)
    table[ATTEMPT_HEADER] = 1
    table[PUBLISHED_AT_HEADER] = repr(published_at)
    return pika.BasicProperties(
        content_type="application/json",
        delivery_mode=PERSISTENT,
        message_id=message_id,
        timestamp=int(published_at),
        headers=table,
        expiration=None if expiration_ms is None else str(expiration_ms),
    )


def copy_properties(properties: pika.BasicProperties, attempt: int) -> pika.BasicProperties:
    """The properties of a message as re-published for ``attempt``, broker headers dropped."""
    headers = {
        name: value
        for name, value in (properties.headers or {}).items()
        if name != MARK_HEADER and not name.startswith(BROKER_HEADER_PREFIXES)
    }
    headers[ATTEMPT_HEADER] = attempt
    result = copy.copy(properties)
    result.headers = headers
    return result


def attempt_of(properties: pika.BasicProperties) -> int:
    attempt = (properties.headers or {}).get(ATTEMPT_HEADER)
    if not is_int(attempt) or attempt < 1:
        return 1
    return attempt


def decode(topic: str, properties: pika.BasicProperties, body: bytes | None) -> Message:
    """The message a handler gets; ``Undecodable`` if the delivery is not one of ours."""
    message_id = properties.message_id
    if not isinstance(message_id, str) or not message_id:
        raise Undecodable("it has no message id")
    headers = properties.headers or {}
    try:
        payload = decode_payload(body or b"")
    except ValueError as exc:
        raise Undecodable("its body is not JSON") from exc
    published = headers.get(PUBLISHED_AT_HEADER)
    try:
        published_at = float(published) if isinstance(published, str) else None
    except ValueError:
        published_at = None
    if published_at is None:
        published_at = float(properties.timestamp or 0)
    return Message(
        topic=topic,
        payload=payload,
        id=message_id,
        attempt=attempt_of(properties),
        published_at=published_at,
        headers={
            name: value
            for name, value in headers.items()
            if isinstance(value, str)
            and name not in INTERNAL_HEADERS
            and not name.startswith(BROKER_HEADER_PREFIXES)
        },
    )


@attrs.frozen
class Envelope:
    """A message checked and serialised for publishing, not yet sent."""

    topic: str
    id: str
    body: str
    published_at: float
    headers: tuple[tuple[str, str], ...]

    def to_message(self) -> Message:
        return Message(
            topic=self.topic,
            payload=decode_payload(self.body),
            id=self.id,
            attempt=1,
            published_at=self.published_at,
            headers=dict(self.headers),
        )


def milliseconds(seconds: float) -> int:
    return round(seconds * 1000)
