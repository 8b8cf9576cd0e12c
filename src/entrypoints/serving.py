"""The WSGI server of ``scalecore run``: waitress, threaded, in the calling process.

waitress is a production WSGI server in pure Python: one thread accepts and buffers
requests and responses, a fixed pool of threads runs the app. That suits ``scalecore run``,
which also runs the feed worker, the outbox relay and the scheduler as threads of the same
process (a forking server such as gunicorn would not carry those threads into its workers).
werkzeug's development server remains available for debugging (``--server werkzeug``).

:class:`WsgiServer` is what the runner drives, whichever server is underneath:
``serve_forever()`` in a thread, then ``shutdown(timeout)`` (stop accepting, let requests
in flight finish, all within ``timeout`` seconds) and ``server_close()``.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from typing import Any, Protocol

__all__ = ["SERVERS", "WaitressServer", "WsgiServer", "serve"]

#: ``scalecore run --server`` choices; the first is the default.
SERVERS = ("waitress", "werkzeug")
#: Open client connections waitress keeps at most (each keep-alive client holds one).
CONNECTION_LIMIT = 1000
#: Pending connections the kernel queues before accept.
BACKLOG = 2048


#: Seconds a stopping waitress still gives its loop to close the connections once the
#: stop timeout has passed (closing takes a moment; it is what ends the loop).
CLOSE_GRACE = 0.5

_log = logging.getLogger(__name__)


class WsgiServer(Protocol):
    server_address: tuple[Any, ...]

    def serve_forever(self) -> None: ...

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop serving within ``timeout`` seconds (None: the server's own); True if
        every request in flight finished in time."""
        ...

    def server_close(self) -> None: ...


#: waitress's own refusals (before the app sees a request) as the API's error codes.
_ERROR_CODES = {400: "invalid_input", 413: "too_large", 431: "invalid_input"}


def _json_channel() -> type:
    """waitress's channel class, answering its own errors with the API's JSON body."""
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    class JsonErrorTask(ErrorTask):  # type: ignore[misc]
        def execute(self) -> None:
            error = self.request.error
            code = _ERROR_CODES.get(error.code, "internal_error")
            message = "the request body is too large" if code == "too_large" else error.reason
            body = json.dumps({"error": {"code": code, "message": message}}).encode()
            self.status = f"{error.code} {error.reason}"
            self.response_headers.extend(
                [("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff")]
            )
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class JsonErrorChannel(HTTPChannel):  # type: ignore[misc]
        error_task_class = JsonErrorTask

    return JsonErrorChannel


class WaitressServer:
    """waitress on an already bound, listening socket, with ``threads`` app threads.

    waitress reads a whole request before the app runs (slow clients never hold an app
    thread), so a body above ``max_body`` is refused by waitress itself, from its
    Content-Length and before it is read: ``413`` with the API's JSON error body.
    """

    def __init__(
        self,
        app: Any,
        listener: socket.socket,
        *,
        threads: int,
        stop_timeout: float,
        max_body: int,
    ) -> None:
        from waitress.server import create_server

        self.server_address = listener.getsockname()
        self._stop_timeout = stop_timeout
        self._server: Any = create_server(
            app,
            sockets=[listener],
            threads=threads,
            connection_limit=CONNECTION_LIMIT,
            backlog=BACKLOG,
            ident="scalecore",
            clear_untrusted_proxy_headers=True,
            max_request_body_size=max_body,
        )
        self._server.channel_class = _json_channel()
        # waitress warns at every request that waits for a thread ("Task queue depth is
        # N"): under load that is one line per request. Saturation shows in the latency
        # histogram of /metrics instead.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (run it in a thread of its own)."""
        try:
            self._server.run()
        finally:
            self._stopped.set()

    def _in_loop(self, thunk: Any) -> None:
        # waitress's dispatchers belong to the thread running its loop: hand work to it.
        self._server.trigger.pull_trigger(thunk)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop accepting; let requests in flight finish; close every connection (idle
        keep-alive ones at once) and end the loop; stop the app threads.

        All of it within ``timeout`` seconds (default: the server's ``stop_timeout``),
        plus at most :data:`CLOSE_GRACE` to close the connections once it has passed.
        Returns True if every request in flight finished in time; logs what did not.
        """
        server = self._server
        from waitress import wasyncore

        wait = self._stop_timeout if timeout is None else max(0.0, timeout)
        deadline = time.monotonic() + wait

        def remaining() -> float:
            return max(0.0, deadline - time.monotonic())

        self._in_loop(lambda: wasyncore.dispatcher.close(server))  # the listener only
        while remaining() > 0 and self._busy(server):
            time.sleep(0.05)
        drained = not self._busy(server)
        if not drained:
            _log.warning(
                "web: requests still in flight after the %.1f s stop timeout: closing "
                "their connections",
                wait,
            )

        trigger = server.trigger

        def close_everything() -> None:
            for dispatcher in list(server._map.values()):
                if dispatcher is not trigger:
                    dispatcher.handle_close()
            # The loop ends once its map is empty. The trigger's pipe stays open: this
            # thunk may run before the thread that queued it has written its wake-up
            # byte, and app threads still pull the trigger as they finish. Closing it
            # here would make those writes fail (EBADF), or land in whatever file
            # reuses the descriptor.
            trigger.del_channel()

        # Closing takes a moment even when the timeout has passed: give it the grace.
        deadline = max(deadline, time.monotonic() + CLOSE_GRACE)
        self._in_loop(close_everything)
        if not self._stopped.wait(remaining()):
            _log.warning("web: the waitress loop did not end within the stop timeout")
        # Logs by itself how many app threads are still running when time is up.
        server.task_dispatcher.shutdown(timeout=remaining())
        trigger.close()
        return drained

    @staticmethod
    def _busy(server: Any) -> bool:
        """Whether a request is queued or being served (an idle keep-alive connection
        is not)."""
        return bool(server.task_dispatcher.queue) or any(
            channel.requests for channel in list(server.active_channels.values())
        )

    def server_close(self) -> None:
        """Nothing left to close after :meth:`shutdown`."""


class _Werkzeug:
    """werkzeug's development server as a :class:`WsgiServer`. Its request threads are
    daemons it does not wait for: ``shutdown`` only ends its loop (within half a second)."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self.server_address: tuple[Any, ...] = server.server_address

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def shutdown(self, timeout: float | None = None) -> bool:
        self._server.shutdown()
        return True

    def server_close(self) -> None:
        self._server.server_close()


def serve(
    app: Any,
    listener: socket.socket,
    *,
    server: str,
    threads: int,
    stop_timeout: float,
    max_body: int,
) -> WsgiServer:
    """A server named in :data:`SERVERS` for ``app`` on ``listener`` (bound, listening),
    not yet serving. The listener is the server's from now on."""
    if server == "waitress":
        return WaitressServer(
            app, listener, threads=threads, stop_timeout=stop_timeout, max_body=max_body
        )
    if server == "werkzeug":
        from werkzeug.serving import make_server

        host, port = listener.getsockname()[:2]
        try:
            # Werkzeug takes a duplicate of the bound socket.
            return _Werkzeug(make_server(host, port, app, threaded=True, fd=listener.fileno()))
        finally:
            listener.close()
    raise ValueError(f"unknown server {server!r}; known: {', '.join(SERVERS)}")
