"""Bus adapters, and the wire rules every one of them applies identically.

A payload is checked and serialised here before any adapter queues it, so a payload
accepted by the in-process bus is accepted by a broker, and comes back equal: JSON only
(``None``, ``bool``, ``int``, finite ``float``, ``str``, ``list``, ``dict`` with ``str``
keys), nested at most :data:`MAX_DEPTH` levels. Tuples, sets, bytes, NaN and infinities are
refused with ``InvalidInput`` rather than silently changed. The body is ASCII JSON text.

Request/reply uses two headers and one reply shape, also shared: a request carries
:data:`REPLY_TO_HEADER` (the topic to answer on) and :data:`CORRELATION_ID_HEADER`; the
answer is ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "Type: message"}``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Mapping

from scalecore import propagation
from scalecore.errors import BackendUnavailable, InvalidInput
from scalecore.ports.bus import Bus, Message, Subscription, validate_name
from scalecore.types import JSONValue
from scalecore.validate import check_json

__all__ = [
    "CORRELATION_ID_HEADER",
    "MAX_DEPTH",
    "REPLY_TO_HEADER",
    "RESPONDER_GROUP",
    "RepliesOverTopics",
    "ReplyWaiter",
    "check_headers",
    "check_message_id",
    "decode_payload",
    "encode_payload",
    "error_reply",
    "ok_reply",
    "outgoing_headers",
    "unpack_reply",
]

#: Deepest nesting of lists and objects a payload may have.
MAX_DEPTH = 100
#: Request header naming the topic the responder publishes its answer to.
REPLY_TO_HEADER = "x-scalecore-reply-to"
#: Request header the answer carries back, so the requester can match it.
CORRELATION_ID_HEADER = "x-scalecore-correlation-id"
#: The group responders of a topic share, so several responder processes split requests.
RESPONDER_GROUP = "responders"

_MESSAGE_ID = re.compile(r"[!-~]{1,128}")  # printable ASCII, no space: an AMQP shortstr
_HEADER_NAME = re.compile(r"[!-~]{1,128}")
_MAX_HEADER_VALUE = 4096


def encode_payload(payload: object) -> str:
    """Return ``payload`` as JSON text, or raise ``InvalidInput`` naming what is not JSON."""
    check_json(payload, "payload", max_depth=MAX_DEPTH)
    try:
        return json.dumps(payload, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:  # belt and braces after the check
        raise InvalidInput(f"payload is not JSON: {exc}") from exc


def decode_payload(body: str | bytes) -> JSONValue:
    """Parse a body written by :func:`encode_payload`; a fresh object on every call."""
    value: JSONValue = json.loads(body)
    return value


def check_message_id(message_id: object) -> str:
    """Return ``message_id`` if it is 1-128 printable ASCII characters without spaces."""
    if not isinstance(message_id, str) or not _MESSAGE_ID.fullmatch(message_id):
        raise InvalidInput(
            "message_id must be 1-128 printable ASCII characters without spaces, "
            f"got {message_id!r}"
        )
    return message_id


def check_headers(headers: object) -> dict[str, str]:
    """Return a copy of ``headers`` if it maps names to ``str`` values, else ``InvalidInput``.

    Names are 1-128 printable ASCII characters without spaces; values at most 4096 characters.
    """
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise InvalidInput(f"headers must be a mapping of str to str, not {type(headers).__name__}")
    copy: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise InvalidInput(
                f"header names must be 1-128 printable ASCII characters, got {name!r}"
            )
        if not isinstance(value, str) or len(value) > _MAX_HEADER_VALUE:
            raise InvalidInput(
                f"header {name!r} must be a str of at most {_MAX_HEADER_VALUE} characters"
            )
        copy[name] = value
    return copy


def outgoing_headers(headers: object) -> dict[str, str]:
    """:func:`check_headers`, plus what :func:`scalecore.propagation.inject` adds: the
    current request id as ``x-request-id`` (unless ``headers`` names its own) and the
    headers of any installed propagator (trace context)."""
    checked = check_headers(headers)
    propagation.inject(checked)
    return checked


def ok_reply(result: JSONValue) -> JSONValue:
    """The reply payload for a responder that returned ``result``."""
    return {"ok": True, "result": result}


def error_reply(error: BaseException | str) -> JSONValue:
    """The reply payload for a responder that failed (type and message, no traceback)."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return {"ok": False, "error": text}


def unpack_reply(topic: str, reply: JSONValue) -> JSONValue:
    """Return the result carried by ``reply``; raise ``BackendUnavailable`` for an error reply.

    ``topic`` is the request's topic, for the message.
    """
    if isinstance(reply, dict) and reply.get("ok") is True and "result" in reply:
        return reply["result"]
    if isinstance(reply, dict) and reply.get("ok") is False:
        raise BackendUnavailable(f"the responder on {topic!r} failed: {reply.get('error')}")
    raise BackendUnavailable(f"the responder on {topic!r} sent a malformed reply")


class ReplyWaiter:
    """A request waiting for its reply: ``done`` is set once ``reply`` holds it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: JSONValue = None


logger = logging.getLogger("adapters.bus")


class RepliesOverTopics(Bus):
    """Request/reply built on publish and subscribe, shared by the bus adapters.

    A responder subscribes to its topic in the group ``responders``; each request carries
    a reply topic and a correlation id in its headers, and the answer is published there.
    """

    def respond(self, topic: str, responder: Callable[[JSONValue], JSONValue]) -> Subscription:
        """Answer requests on ``topic``; responders of one topic share its requests.

        A responder that raises sends an error reply (the request is not retried).
        """
        validate_name(topic)
        if not callable(responder):
            raise InvalidInput(f"responder must be callable, not {type(responder).__name__}")

        def answer(message: Message) -> None:
            try:
                reply = ok_reply(responder(message.payload))
            except Exception as exc:
                logger.warning(
                    "bus responder failed: topic=%s message_id=%s",
                    message.topic,
                    message.id,
                    exc_info=True,
                )
                reply = error_reply(exc)
            self._send_reply(message, reply)

        return self.subscribe(topic, RESPONDER_GROUP, answer)

    def _send_reply(self, request: Message, reply: JSONValue) -> None:
        reply_to = request.headers.get(REPLY_TO_HEADER)
        correlation_id = request.headers.get(CORRELATION_ID_HEADER)
        if reply_to is None or correlation_id is None:
            return  # published without request(): nobody waits for an answer
        try:
            validate_name(reply_to)
        except InvalidInput:
            logger.warning("bus request has an invalid reply topic: message_id=%s", request.id)
            return
        headers = {CORRELATION_ID_HEADER: correlation_id}
        try:
            self.publish(reply_to, reply, headers=headers)
        except InvalidInput:
            self.publish(
                reply_to, error_reply("the responder returned a non-JSON value"), headers=headers
            )
