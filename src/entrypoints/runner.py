"""Process runners: the whole service in one process, or each part alone.

``run_all``        web (waitress, threaded) + feed worker + outbox relay + scheduler, in
                   one process: the embedded quick start (``scalecore run``).
``run_web``        gunicorn with N worker processes; each builds its own container and app
                   after the fork, so no connection is shared across processes.
``run_worker``     the bus consumers (feed fan-out) and the outbox relay.
``run_scheduler``  the cron jobs, claimed slot by slot in the JobLedger: run one on every
                   server, each slot still runs once.

Every runner stops gracefully on SIGTERM or SIGINT: it stops taking work, lets work in
flight finish (within ``STOP_TIMEOUT`` for the whole stop; a part still running then is
logged and left behind), closes its adapters and returns.

On a read-only deployment (``[deployment] read_only = true``) nothing writes while the data
is moved: the web app serves reads and refuses writes; the feed worker does not consume
(events wait in the broker), the outbox relay and the cron jobs do not run (unsent events
stay unsent, no slot is claimed). ``scalecore worker`` and ``scalecore scheduler`` stand by
(serving their ops endpoints) until stopped; each says so in a log line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from entrypoints.config import Settings
from entrypoints.container import (
    Container,
    close_adapters,
    create_container,
    create_tables,
    declare_topology,
)
from scalecore.errors import ConfigError, ScalecoreError

__all__ = ["run_all", "run_scheduler", "run_web", "run_worker"]

_log = logging.getLogger(__name__)

#: Seconds between outbox polls when the previous poll found nothing to relay.
RELAY_INTERVAL = 1.0
#: Events relayed per poll.
RELAY_BATCH = 100
#: Seconds the scheduler waits at most between passes.
SCHEDULER_POLL = 1.0
#: Seconds a stopping process waits for work in flight, all parts together: one deadline
#: for the whole stop, not one per part.
STOP_TIMEOUT = 10.0


def configure_logging(settings: Settings | None = None) -> None:
    """Log lines to stderr as ``[logging]`` says (text or JSON lines, with request ids)."""
    from entrypoints.logs import configure_logging as configure

    configure(settings.logging if settings is not None else None)


@contextmanager
def _traced(settings: Settings, role: str) -> Iterator[None]:
    """OpenTelemetry on for the block if ``[tracing]`` says so; spans flushed at its end."""
    from entrypoints.tracing import configure_tracing, shutdown_tracing

    configure_tracing(settings.tracing, role=role)
    try:
        yield
    finally:
        shutdown_tracing()


def _single_process_metrics() -> None:
    """A process that is not a gunicorn worker keeps its metrics in memory: a multiprocess
    directory inherited from the environment is not its own."""
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGTERM or SIGINT while the block runs (main thread only).

    The signal handler does nothing but write the signal's number to a pipe; a thread of
    its own ("signals") reads it, logs it and sets ``stop``. A Python signal handler runs in
    the main thread between two bytecodes, possibly while that thread holds ``stop``'s own
    lock (inside ``stop.wait()``, on its way out): setting the event from the handler would
    then wait for that lock forever, and so would anything else that takes a lock (a log
    line). A signal that arrives after the block is handled as before it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)

    def handler(signum: int, _frame: FrameType | None) -> None:
        # A full pipe (OSError): the watcher has signals enough to act on already.
        with contextlib.suppress(OSError):
            os.write(write_fd, bytes([signum]))

    def watch() -> None:
        while data := os.read(read_fd, 64):
            for signum in data:
                if signum == _END_OF_SIGNALS:
                    return
                _log.info("received %s: stopping", signal.Signals(signum).name)
                stop.set()

    watcher = threading.Thread(target=watch, name="signals", daemon=True)
    watcher.start()
    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
    finally:
        os.set_blocking(write_fd, True)
        os.write(write_fd, bytes([_END_OF_SIGNALS]))
        watcher.join()
        os.close(write_fd)
        os.close(read_fd)


#: Written to the signal pipe when the block of ``stop_on_signals`` ends (no signal is 0).
_END_OF_SIGNALS = 0


def relay_forever(relay: Any, stop: threading.Event, interval: float = RELAY_INTERVAL) -> None:
    """Move outbox events to the bus until ``stop`` is set.

    Polls again at once while there is a backlog, else waits ``interval``. A failing poll
    (a database or broker outage) is logged and retried after the interval: the events
    stay in the outbox, nothing is lost.
    """
    while not stop.is_set():
        try:
            moved = int(relay.relay_once(RELAY_BATCH))
        except ScalecoreError as exc:
            _log.warning("outbox relay failed, will retry: %s", exc)
            moved = 0
        except Exception:
            _log.exception("outbox relay crashed, will retry")
            moved = 0
        if moved < RELAY_BATCH:
            stop.wait(interval)


def _scheduler(container: Container) -> Any:
    from scalecore.cron import Scheduler

    return Scheduler(container.ledger(), container.cron_jobs(), clock=container.clock())


class _Stopping:
    """One deadline for every part of a stop: each part gets the time the parts before it
    left, and a part still running when that is gone is logged and left behind (its
    threads are daemons), so the process still exits."""

    def __init__(self, timeout: float = STOP_TIMEOUT) -> None:
        self.timeout = timeout
        self._deadline = time.monotonic() + timeout

    def remaining(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def late(self, part: str) -> None:
        _log.warning("stopping: %s did not stop within the %g s stop timeout", part, self.timeout)

    def part(self, part: str, stop: Callable[[float], object]) -> None:
        """Run ``stop(seconds left)``; log ``part`` as late if it returns False or uses up
        the time, and as failed (then go on) if it raises."""
        left = self.remaining()
        try:
            stopped = stop(left)
        except Exception:
            _log.exception("stopping: %s failed", part)
            return
        if left <= 0:
            _log.warning("stopping: no time left to wait for %s", part)
        elif stopped is False or self.remaining() <= 0:
            self.late(part)

    def join(self, thread: threading.Thread) -> None:
        thread.join(self.remaining())
        if thread.is_alive():
            self.late(f"thread {thread.name}")


def _thread(name: str, target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def apart_warnings(settings: Settings, part: str, *, workers: int = 1) -> list[str]:
    """What goes wrong when ``part`` runs apart from the others on these settings.

    A bus that is not SHARED keeps every event inside the process that published it, so
    events of the web process never reach ``scalecore worker``; sessions that are not
    SHARED log users out whenever another gunicorn worker answers; a cache that is not SHARED
    serves stale entries after another worker's invalidation. (A deployment declared
    multi-node refuses such settings outright.)
    """
    from entrypoints.registry import load_adapter
    from scalecore.capabilities import Capability, declared

    problems: list[str] = []
    backend = settings.port("bus")[0]
    if Capability.SHARED not in declared(load_adapter("bus", backend)):
        problems.append(
            f"warning: bus backend {backend!r} is not shared between processes: events "
            f"published by `scalecore {part}` reach no other process; use a shared bus, or "
            "`scalecore run` for one process"
        )
    backend = settings.port("sessions")[0]
    if workers > 1 and Capability.SHARED not in declared(load_adapter("sessions", backend)):
        problems.append(
            f"warning: sessions backend {backend!r} is not shared between the {workers} "
            "workers: a user is logged out whenever another worker answers"
        )
    backend = settings.port("cache")[0]
    if workers > 1 and Capability.SHARED not in declared(load_adapter("cache", backend)):
        problems.append(
            f"warning: cache backend {backend!r} is not shared between the {workers} "
            "workers: an invalidation reaches only the worker that made it, so the others "
            "serve stale entries until they expire"
        )
    return problems


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port; ``ConfigError`` if it cannot be had."""
    where = f"cannot listen on {host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"{where}: {getattr(exc, 'strerror', None) or exc}") from None
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except OSError as exc:
        listener.close()
        raise ConfigError(f"{where}: {exc.strerror or exc}") from None
    return listener


def _serve(app: Any, host: str, port: int) -> Any:
    """A threaded WSGI server for ``app`` on host:port, not yet serving."""
    from werkzeug.serving import make_server

    listener = _listen(host, port)
    try:
        # Werkzeug takes a duplicate of the bound socket (on a bind error of its own it
        # would print and exit instead of raising).
        return make_server(host, port, app, threaded=True, fd=listener.fileno())
    finally:
        listener.close()


def _split_bind(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    return host.strip("[]"), int(port)


@contextmanager
def ops_endpoints(
    container: Container, bind: str | None, echo: Callable[[str], None], **sources: Any
) -> Iterator[None]:
    """Serve /healthz, /readyz and /metrics of this process on ``bind`` while the block
    runs (nothing when ``bind`` is None). ``sources`` go to ``create_ops_app``: what else
    the metrics of this process show."""
    if bind is None:
        yield
        return
    from entrypoints.web import create_ops_app

    host, port = _split_bind(bind)
    server = _serve(create_ops_app(container, **sources), host, port)
    thread = _thread("ops-http", server.serve_forever)
    echo(f"metrics: http://{host}:{server.server_address[1]}/metrics")
    try:
        yield
    finally:
        server.shutdown()  # its loop ends within half a second; no request is waited for
        server.server_close()
        thread.join(STOP_TIMEOUT)


def _log_read_only(part: str) -> None:
    _log.warning(
        "read-only deployment ([deployment] read_only = true): %s stand by", _READ_ONLY_PARTS[part]
    )


def _stand_by(
    settings: Settings, part: str, echo: Callable[[str], None], metrics_bind: str | None
) -> None:
    """Do nothing but serve the ops endpoints until SIGTERM or SIGINT (read-only mode)."""
    container = create_container(settings)
    stop = threading.Event()
    with stop_on_signals(stop):
        try:
            with ops_endpoints(container, metrics_bind, echo):
                _log_read_only(part)
                echo(f"scalecore {part}: read-only deployment, standing by until stopped")
                stop.wait()
        finally:
            close_adapters(container)
    echo(f"scalecore {part}: stopped")


_READ_ONLY_PARTS = {
    "worker": "the feed worker (no consuming) and the outbox relay",
    "scheduler": "the cron jobs (no slot claimed)",
    "run": "the feed worker, the outbox relay and the cron jobs",
}


def _start_consumers(container: Container) -> Any:
    bus = container.bus()
    container.feed_worker().attach(bus)
    bus.start()
    return bus


def run_all(
    settings: Settings,
    host: str,
    port: int,
    *,
    echo: Callable[[str], None],
    server_name: str = "waitress",
) -> None:
    """Serve the whole service from this process until SIGTERM or SIGINT.

    The web part runs on waitress with ``[web] threads`` app threads (``server_name``
    "werkzeug": the development server, for debugging). Creates missing tables first
    (idempotent). Raises ``ConfigError`` for bad settings or an address that cannot be
    bound; backend errors at start-up propagate.
    """
    from entrypoints.serving import serve
    from entrypoints.web import create_app
    from entrypoints.web.drain import drain_limit

    configure_logging(settings)
    _single_process_metrics()
    container = create_container(settings)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    bus = None
    server = None
    with stop_on_signals(stop), _traced(settings, "run"):
        try:
            create_tables(container)
            scheduler = _scheduler(container)
            app = create_app(container, metrics=_worker_metrics(container, scheduler))
            server = serve(
                app,
                _listen(host, port),
                server=server_name,
                threads=int(settings.web["threads"]),
                stop_timeout=STOP_TIMEOUT,
                # Up to the app's drain limit, so the app itself answers an upload over
                # the limit: the form with its caption, the JSON error with the limit.
                max_body=drain_limit(container.photofeed_settings().max_upload_bytes),
            )
            declare_topology(container)
            parts = "web, feed worker, outbox relay, scheduler"
            if settings.read_only:
                _log_read_only("run")
                parts = "web, read-only: writes get 503; worker, relay and scheduler stand by"
            else:
                bus = _start_consumers(container)
                relay = container.outbox_relay()
                threads.append(_thread("outbox-relay", lambda: relay_forever(relay, stop)))
                threads.append(
                    _thread("scheduler", lambda: scheduler.run_forever(stop, SCHEDULER_POLL))
                )
            web_thread = _thread("web", server.serve_forever)
            echo(
                f"scalecore: serving http://{host}:{server.server_address[1]} on {server_name} "
                f"({parts}); Ctrl-C stops"
            )
            while not stop.is_set() and web_thread.is_alive():
                stop.wait(0.5)
        finally:
            stop.set()  # the relay and the scheduler stop while the web drains
            stopping = _Stopping()
            # The web first (its requests may still publish), then what feeds the bus,
            # then the bus: handlers in flight finish, what is queued stays unhandled.
            if server is not None:
                stopping.part("the web server", server.shutdown)
                server.server_close()
            for thread in threads:
                stopping.join(thread)
            if bus is not None:
                stopping.part("the bus", bus.stop)
            close_adapters(container)
    echo("scalecore: stopped")


def _worker_metrics(container: Container, scheduler: Any = None) -> dict[str, Any]:
    """What the metrics of a process running the feed worker and the relay (and, with
    ``scheduler``, the cron jobs) show beyond the web's."""
    from entrypoints.container import service_topology

    sources: dict[str, Any] = {
        "queues": tuple(service_topology()),
        "outbox": True,
        "feed": container.feed_worker,
    }
    if scheduler is not None:
        sources["cron"] = lambda: scheduler.stats
    return sources


def run_worker(
    settings: Settings,
    *,
    echo: Callable[[str], None],
    warn: Callable[[str], None],
    metrics_bind: str | None = None,
) -> None:
    """Consume the bus (feed fan-out) and relay the outbox until SIGTERM or SIGINT.

    With ``metrics_bind`` (HOST:PORT), also serve this process's /healthz, /readyz and
    /metrics there.
    """
    configure_logging(settings)
    _single_process_metrics()
    if settings.read_only:
        _stand_by(settings, "worker", echo, metrics_bind)
        return
    container = create_container(settings)
    for problem in apart_warnings(settings, "worker"):
        warn(problem)
    stop = threading.Event()
    bus = None
    relay_thread = None
    with stop_on_signals(stop), _traced(settings, "worker"):
        try:
            declare_topology(container)
            bus = _start_consumers(container)
            relay = container.outbox_relay()
            relay_thread = _thread("outbox-relay", lambda: relay_forever(relay, stop))
            with ops_endpoints(container, metrics_bind, echo, **_worker_metrics(container)):
                echo("scalecore worker: consuming (feed fan-out) and relaying the outbox")
                stop.wait()
        finally:
            stop.set()
            stopping = _Stopping()
            if relay_thread is not None:
                stopping.join(relay_thread)
            if bus is not None:
                # Handlers in flight finish; the rest is redelivered.
                stopping.part("the bus", bus.stop)
            close_adapters(container)
    echo("scalecore worker: stopped")


def run_scheduler(
    settings: Settings,
    *,
    echo: Callable[[str], None],
    warn: Callable[[str], None],
    metrics_bind: str | None = None,
) -> None:
    """Run the cron jobs, one claim per slot in the ledger, until SIGTERM or SIGINT.

    With ``metrics_bind`` (HOST:PORT), also serve /healthz, /readyz and /metrics there.
    """
    configure_logging(settings)
    _single_process_metrics()
    if settings.read_only:
        _stand_by(settings, "scheduler", echo, metrics_bind)
        return
    container = create_container(settings)
    for problem in apart_warnings(settings, "scheduler"):
        warn(problem)
    stop = threading.Event()
    with stop_on_signals(stop), _traced(settings, "scheduler"):
        try:
            scheduler = _scheduler(container)
            names = ", ".join(f"{job.name} ({job.schedule})" for job in scheduler.jobs)
            with ops_endpoints(container, metrics_bind, echo, cron=lambda: scheduler.stats):
                echo(f"scalecore scheduler: {names or 'no jobs'}")
                scheduler.run_forever(stop, SCHEDULER_POLL)  # a pass in progress finishes
        finally:
            close_adapters(container)
    echo("scalecore scheduler: stopped")


def run_web(
    settings: Settings,
    *,
    bind: str,
    workers: int,
    threads: int,
    warn: Callable[[str], None],
    echo: Callable[[str], None] = print,
    reload_settings: Callable[[], Settings] | None = None,
) -> None:
    """Serve the web app with gunicorn (``gthread`` workers) until SIGTERM or SIGINT.

    The settings are validated here, in the master; each worker process builds its own
    container and app after the fork (gunicorn's default, ``preload_app`` off).

    SIGHUP is a rolling restart: the master reads the config again (``reload_settings``)
    and, if it is valid, starts new workers on it (and on the code now installed) while
    the old ones finish the requests they hold; the listening socket stays open
    throughout, so no request is refused. A config that does not validate is logged and
    the workers keep the previous one. ``bind``, ``workers`` and ``threads`` stay as
    started (TTIN and TTOU add and remove a worker).

    The instance keeps its files (the workers' metrics, gunicorn's control socket) in a
    runtime directory of its own (:mod:`entrypoints.webruntime`), removed at exit.
    """
    try:
        from gunicorn.app.base import BaseApplication
        from gunicorn.glogging import Logger as GunicornLogger
    except ModuleNotFoundError:
        raise ConfigError("`scalecore web` needs gunicorn: install scalecore[server]") from None
    from entrypoints.logs import RequestIdFilter, make_formatter
    from entrypoints.webruntime import WebRuntime

    configure_logging(settings)
    create_container(settings)  # validate everything before forking; connects to nothing
    for problem in apart_warnings(settings, "web", workers=workers):
        warn(problem)
    current = {"settings": settings}

    class _Logger(GunicornLogger):  # type: ignore[misc]
        # gunicorn's own lines (workers booting, exiting) in the format of every other.
        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            log_format = current["settings"].logging["format"]
            for handler in self.error_log.handlers:
                handler.setFormatter(make_formatter(log_format, getattr(handler, "stream", None)))
                handler.addFilter(RequestIdFilter())

    class _Gunicorn(BaseApplication):  # type: ignore[misc]
        # Set in each worker process by load(); the worker_exit hook closes it there.
        container: Container | None = None

        def load_config(self) -> None:
            # Runs in the master at start and again on every SIGHUP.
            if self.container is None and getattr(self, "_started", False):
                self._reload_settings()
            self._started = True
            options = {
                "bind": [bind],
                "workers": workers,
                "threads": threads,
                "worker_class": "gthread",
                "preload_app": False,
                "proc_name": "scalecore-web",
                # Every request is logged by the app (with its request id): no second line.
                "accesslog": None,
                "logger_class": _Logger,
                "loglevel": current["settings"].logging["level"],
                "graceful_timeout": int(STOP_TIMEOUT),
                "timeout": 60,
                "control_socket": str(runtime.control_socket),
                "worker_exit": self._worker_exit,
                "child_exit": runtime.child_exit,
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def _reload_settings(self) -> None:
            if reload_settings is None:
                return
            try:
                fresh = reload_settings()
                create_container(fresh)  # validates; connects to nothing
            except ScalecoreError as exc:
                _log.error("config reload failed, the workers keep the previous one: %s", exc)
                return
            current["settings"] = fresh
            configure_logging(fresh)
            _log.info("config reloaded: new workers start on it")

        def load(self) -> Any:
            # Runs in each worker after the fork: its own container, adapters and pools.
            from entrypoints.tracing import configure_tracing
            from entrypoints.web import create_app
            from scalecore.capabilities import Capability

            configure_logging(current["settings"])
            # After the fork: the span exporter's thread belongs to this worker.
            configure_tracing(current["settings"].tracing, role="web")
            container = create_container(current["settings"])
            app = create_app(container)
            if Capability.SHARED in container.bus().capabilities:
                # Queues exist before any worker consumes. (An in-process bus would only
                # pile up events nobody in this process consumes.)
                declare_topology(container)
            self.container = container
            return app

        def _worker_exit(self, _server: Any, _worker: Any) -> None:
            from entrypoints.tracing import shutdown_tracing

            if self.container is not None:
                close_adapters(self.container)
            shutdown_tracing()

    runtime = WebRuntime.create()
    echo(f"scalecore web: runtime files (worker metrics, control socket) in {runtime.root}")
    try:
        _Gunicorn().run()
    finally:
        runtime.remove()
