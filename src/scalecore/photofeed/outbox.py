"""The photo feed's outbox relay: the library's (:mod:`scalecore.outbox`), over the
photos' outbox repository."""

from scalecore.outbox import OutboxRelay

__all__ = ["OutboxRelay"]
