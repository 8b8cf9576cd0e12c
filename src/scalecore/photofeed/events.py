"""Topics the photo feed publishes, the payload of each, and the queues to declare.

Both topics carry a :class:`PhotoEvent` payload (JSON)::

    {"photo_id": str, "owner_id": str, "created_at": float, "occurred_at": float}

``created_at`` is the photo's upload time (its place in feeds); ``occurred_at`` is when
the announced change happened: the upload itself, or the deletion. Feed entries take these
as their last-writer-wins timestamps, which is why a late or repeated message cannot undo a
newer change. The message id is the outbox event's id: a re-published event keeps it.
"""

from __future__ import annotations

from typing import Final

import attrs

from scalecore.errors import InvalidInput
from scalecore.ids import parse_id
from scalecore.types import JSONObject, JSONValue
from scalecore.validate import is_finite_number

__all__ = [
    "FEED_GROUP",
    "PHOTO_TOPICS",
    "TOPIC_PHOTO_DELETED",
    "TOPIC_PHOTO_UPLOADED",
    "TOPOLOGY",
    "PhotoEvent",
]

TOPIC_PHOTO_UPLOADED: Final = "photo.uploaded"
TOPIC_PHOTO_DELETED: Final = "photo.deleted"
PHOTO_TOPICS: Final = (TOPIC_PHOTO_UPLOADED, TOPIC_PHOTO_DELETED)
#: The consumer group of the feed workers: they share the messages of both topics.
FEED_GROUP: Final = "feed-fanout"
#: (topic, group) pairs to ``Bus.declare`` before anything is published, so events
#: published while no worker runs are kept for it.
TOPOLOGY: Final[tuple[tuple[str, str], ...]] = (
    (TOPIC_PHOTO_UPLOADED, FEED_GROUP),
    (TOPIC_PHOTO_DELETED, FEED_GROUP),
)


def _timestamp(value: object, name: str) -> float:
    if not is_finite_number(value):
        raise InvalidInput(f"photo event: {name} must be a finite number, got {value!r}")
    return float(value)


def _id(value: object, name: str) -> str:
    try:
        parse_id(value)
    except InvalidInput:
        raise InvalidInput(f"photo event: {name} is not an id: {value!r}") from None
    assert isinstance(value, str)
    return value


@attrs.frozen
class PhotoEvent:
    """A photo was uploaded or deleted (which one is the topic's business)."""

    photo_id: str
    owner_id: str
    created_at: float
    occurred_at: float

    def to_payload(self) -> JSONObject:
        return {
            "photo_id": self.photo_id,
            "owner_id": self.owner_id,
            "created_at": self.created_at,
            "occurred_at": self.occurred_at,
        }

    @classmethod
    def from_payload(cls, payload: JSONValue) -> PhotoEvent:
        """Read a payload; raise ``InvalidInput`` naming what is missing or malformed."""
        if not isinstance(payload, dict):
            raise InvalidInput("photo event: the payload must be a JSON object")
        missing = sorted({"photo_id", "owner_id", "created_at", "occurred_at"} - set(payload))
        if missing:
            raise InvalidInput(f"photo event: missing {', '.join(missing)}")
        return cls(
            photo_id=_id(payload["photo_id"], "photo_id"),
            owner_id=_id(payload["owner_id"], "owner_id"),
            created_at=_timestamp(payload["created_at"], "created_at"),
            occurred_at=_timestamp(payload["occurred_at"], "occurred_at"),
        )
