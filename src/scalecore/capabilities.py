"""Capabilities an adapter may declare beyond its port's baseline promise.

An adapter lists what it can do in its ``capabilities`` class attribute. An operation that
needs an undeclared capability raises :class:`~scalecore.errors.UnsupportedOperation`, and the
contract suites check both directions, so a declaration cannot lie. The composition root
refuses, at start-up, a configuration whose adapter lacks a capability the service needs.
"""

from __future__ import annotations

import enum

from scalecore.errors import UnsupportedOperation

__all__ = ["Capability", "declared", "require"]


class Capability(enum.StrEnum):
    """What an adapter can do; each port's docs say which ones apply to it."""

    #: State is visible to every process and host using the same configuration; without it
    #: the adapter keeps state on one server (a "puppy" in a multi-node deployment).
    SHARED = "shared"
    #: BlobStore: signed, expiring URLs a client can download from directly.
    DIRECT_URL = "direct_url"
    #: Bus: messages that fail ``max_attempts`` times are kept and can be replayed.
    DEAD_LETTER = "dead_letter"
    #: Bus: request/reply (RPC) over the bus.
    REQUEST_REPLY = "request_reply"
    #: Messages, sessions or records survive a restart of the process that wrote them.
    DURABLE = "durable"
    #: SessionStore / JobLedger: expired entries must be purged by a scheduled job.
    PURGE = "purge"
    #: SessionStore: every live session can be listed with its data and expiry (for a move
    #: to another store).
    EXPORT = "export"
    #: SessionStore: sessions can be written as they are, keeping their id and expiry.
    IMPORT = "import"


def declared(adapter: object) -> frozenset[Capability]:
    """The capabilities ``adapter`` (an instance or its class) declares: every port class
    has a ``capabilities`` class attribute; anything else declares none."""
    capabilities: frozenset[Capability] = getattr(adapter, "capabilities", frozenset())
    return capabilities


def require(adapter: object, capability: Capability, operation: str) -> None:
    """Raise :class:`UnsupportedOperation` unless ``adapter`` declares ``capability``."""
    if capability not in declared(adapter):
        name = type(adapter).__name__
        raise UnsupportedOperation(
            f"{name} does not support {operation}: it lacks the {capability.value!r} capability"
        )
