"""What one Flask app holds: its container's adapters and service, built once per app.

The web layer knows the container only through :class:`ServiceContainer`, the providers it
calls; it never imports the composition root or an adapter, so everything it touches is
a port or the service (an import-linter contract holds it to that).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

import attrs
from flask import current_app

from entrypoints.readiness import ReadinessProbe
from entrypoints.web.metrics import Metrics

if TYPE_CHECKING:
    from scalecore.clock import Clock
    from scalecore.photofeed.service import PhotoFeed
    from scalecore.photofeed.settings import PhotoFeedSettings
    from scalecore.ports.blobstore import BlobStore
    from scalecore.ports.bus import Bus
    from scalecore.ports.cache import Cache
    from scalecore.ports.sessions import SessionStore

__all__ = ["ServiceContainer", "WebState", "state"]


class ServiceContainer(Protocol):
    """The providers of :class:`entrypoints.container.Container` the web app calls."""

    def settings(self) -> Any: ...

    def photofeed(self) -> PhotoFeed: ...

    def photofeed_settings(self) -> PhotoFeedSettings: ...

    def sessions(self) -> SessionStore: ...

    def blobs(self) -> BlobStore: ...

    def cache(self) -> Cache: ...

    def bus(self) -> Bus: ...

    def clock(self) -> Clock: ...

    def readiness(self) -> Mapping[str, Callable[[], None]]: ...

    def database_stats(self) -> Iterable[tuple[Any, ...]]: ...

    def sql_statements(self) -> Callable[[], int]: ...


_EXTENSION = "scalecore"


@attrs.define
class WebState:
    """The app's view of the container: the service and the ports the web layer touches.

    Built by :func:`entrypoints.web.create_app`; views read it through :func:`state`.
    """

    container: ServiceContainer
    service: PhotoFeed
    sessions: SessionStore
    blobs: BlobStore
    clock: Clock
    web: dict[str, Any]
    metrics: Metrics
    max_upload_bytes: int
    readiness: ReadinessProbe
    #: ``[deployment] read_only``: writes are refused and sessions are not written.
    read_only: bool = False

    @property
    def secure_cookies(self) -> bool:
        return bool(self.web["secure_cookies"])


def state() -> WebState:
    """The current app's :class:`WebState`."""
    return cast(WebState, current_app.extensions[_EXTENSION])


def attach(app: Any, web_state: WebState) -> None:
    app.extensions[_EXTENSION] = web_state
