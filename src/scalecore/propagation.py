"""What a bus message carries from the work that published it to the handler that gets it.

Every bus adapter calls :func:`inject` on the headers of a message it publishes, and runs
each handler inside :func:`handling`. Built in: the request id (:mod:`scalecore.requestid`)
travels as the ``x-request-id`` header and is current while the handler runs. An
entrypoint may :func:`install` more :class:`Propagator` s (trace context for
OpenTelemetry, say) without the core or the adapters knowing their library.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, MutableMapping
from typing import Protocol

from scalecore import requestid
from scalecore.ports.bus import Message

__all__ = ["Propagator", "handling", "inject", "install", "uninstall"]

logger = logging.getLogger(__name__)


class Propagator(Protocol):
    """Adds context to outgoing message headers, and restores it around a handler."""

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Add this context's headers, leaving names already present alone."""

    def handling(self, message: Message) -> contextlib.AbstractContextManager[object]:
        """A context in which ``message``'s handler runs."""


_installed: list[Propagator] = []


def install(propagator: Propagator) -> None:
    """Carry ``propagator``'s context on every message from now on (once per object)."""
    if propagator not in _installed:
        _installed.append(propagator)


def uninstall(propagator: Propagator) -> None:
    """Stop carrying ``propagator``'s context. Idempotent."""
    if propagator in _installed:
        _installed.remove(propagator)


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current request id and every installed propagator's headers to ``headers``.

    A propagator that fails is logged and skipped: context is never worth a lost publish.
    """
    current = requestid.current()
    if current is not None:
        headers.setdefault(requestid.HEADER, current)
    for propagator in list(_installed):
        try:
            propagator.inject(headers)
        except Exception:
            logger.warning("propagation: %r failed to inject", propagator, exc_info=True)


@contextlib.contextmanager
def handling(message: Message) -> Iterator[None]:
    """Run a handler of ``message`` with the context it carries: its request id current,
    and each installed propagator's context entered (one that fails is skipped)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(requestid.bind(requestid.parse(message.headers.get(requestid.HEADER))))
        for propagator in list(_installed):
            try:
                stack.enter_context(propagator.handling(message))
            except Exception:
                logger.warning("propagation: %r failed to restore", propagator, exc_info=True)
        yield
