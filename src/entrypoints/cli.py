"""The ``scalecore`` command line.

Every command takes ``--config FILE`` (or ``SCALECORE_CONFIG``); without either it runs on
the embedded defaults. A bad argument or bad config prints one line ``error: ...`` to
stderr and exits non-zero (2); no command prints a traceback for an error it can name.

::

    scalecore run [--host H] [--port P]        web + worker + relay + scheduler, one process
    scalecore web [--bind H:P] [--workers N]   gunicorn web processes
    scalecore worker                           bus consumers and the outbox relay
    scalecore scheduler                        cron jobs, once per slot across the fleet
    scalecore check                            ping every backend (and flag puppies)
    scalecore config show                      the effective config, secrets masked
    scalecore db init                          create every table on every shard and store
    scalecore bus replay TOPIC [--group G]     move dead letters back to their queue
    scalecore migrate --from OLD --to NEW      copy every durable store, verified
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from entrypoints.config import PORT_SECTIONS, Settings, load_settings
from entrypoints.container import (
    Container,
    PhotoFeedRepositories,
    close_adapters,
    create_container,
    create_tables,
    puppy_settings,
    readiness_checks,
    service_topology,
    validate_settings,
)
from scalecore.errors import ConfigError, ScalecoreError

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _fail(message: str, status: int = 2) -> None:
    click.echo(f"error: {_one_line(message)}", err=True)
    sys.exit(status)


def _warn(message: str) -> None:
    click.echo(_one_line(message), err=True)


def _one_line_errors(command: F) -> F:
    """Turn a ScalecoreError escaping ``command`` into ``error: ...`` and exit status 2.

    An ``OSError`` (a data directory that cannot be created, a file that cannot be read)
    is a problem of the environment, not a bug: it gets one line too.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ScalecoreError as exc:
            _fail(str(exc))
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            _fail(f"{exc.strerror or type(exc).__name__}{where}")

    return wrapper  # type: ignore[return-value]


class _Cli(click.Group):
    """A group whose usage errors are one line too: ``error: No such option: --x``."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            _fail("aborted", 1)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except ScalecoreError as exc:
            _fail(str(exc))
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


config_option = click.option(
    "--config",
    "config_path",
    envvar="SCALECORE_CONFIG",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML config file (default: $SCALECORE_CONFIG, else the embedded defaults).",
)


def _settings(config_path: str | None) -> Settings:
    return load_settings(config_path)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="scalecore")
def main() -> None:
    """scalecore: start on one box, scale out by changing a config file."""


# --------------------------------------------------------------------------- processes


@main.command("run")
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port."
)
@_one_line_errors
def run(config_path: str | None, host: str, port: int) -> None:
    """Run the whole service in this process: web, feed worker, outbox relay, scheduler.

    Creates missing tables first. For one box; `web`, `worker` and `scheduler` are the
    same parts run apart, for a fleet.
    """
    from entrypoints.runner import run_all

    run_all(_settings(config_path), host, port, echo=click.echo)


def _parse_bind(value: str) -> str:
    host, colon, port = value.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"must look like HOST:PORT, e.g. 127.0.0.1:8000, not {value!r}")
    return value


@main.command("web")
@config_option
@click.option("--bind", default=None, help="HOST:PORT to listen on [default: web.bind].")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes [default: web.workers].",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Threads per worker [default: web.threads].",
)
@_one_line_errors
def web(
    config_path: str | None, bind: str | None, workers: int | None, threads: int | None
) -> None:
    """Run the web app under gunicorn; every worker builds its own connections.

    SIGHUP restarts the workers one generation at a time, on the config file read again
    and the code installed now, without refusing a request.
    """
    from entrypoints.runner import run_web

    settings = _settings(config_path)
    run_web(
        settings,
        bind=_parse_bind(bind) if bind is not None else str(settings.web["bind"]),
        workers=workers or int(settings.web["workers"]),
        threads=threads or int(settings.web["threads"]),
        warn=_warn,
        echo=click.echo,
        reload_settings=lambda: _settings(config_path),
    )


metrics_option = click.option(
    "--metrics-bind",
    default=None,
    metavar="HOST:PORT",
    help="Also serve /healthz, /readyz and /metrics of this process there.",
)


@main.command("worker")
@config_option
@metrics_option
@_one_line_errors
def worker(config_path: str | None, metrics_bind: str | None) -> None:
    """Consume the bus (feed fan-out) and relay the outbox until SIGTERM or SIGINT."""
    from entrypoints.runner import run_worker

    bind = _parse_bind(metrics_bind) if metrics_bind is not None else None
    run_worker(_settings(config_path), echo=click.echo, warn=_warn, metrics_bind=bind)


@main.command("scheduler")
@config_option
@metrics_option
@_one_line_errors
def scheduler(config_path: str | None, metrics_bind: str | None) -> None:
    """Run the cron jobs until SIGTERM or SIGINT (run one on every server)."""
    from entrypoints.runner import run_scheduler

    bind = _parse_bind(metrics_bind) if metrics_bind is not None else None
    run_scheduler(_settings(config_path), echo=click.echo, warn=_warn, metrics_bind=bind)


# --------------------------------------------------------------------------- operations


@main.group("config")
def config_group() -> None:
    """Inspect configuration."""


@config_group.command("show")
@config_option
@_one_line_errors
def config_show(config_path: str | None) -> None:
    """Print the effective config (file + environment + defaults), secrets masked."""
    settings = _settings(config_path)
    validate_settings(settings, forbid_puppies=False)
    click.echo(f"# source: {settings.source}")
    click.echo(json.dumps(settings.masked(), indent=2, sort_keys=True))


@main.command("check")
@config_option
@_one_line_errors
def check(config_path: str | None) -> None:
    """Connect to every configured backend and report; exit 1 if any fails.

    In a deployment declared multi-node, also name every setting that keeps state on one
    server, and fail if there is any. A read-only deployment is noted (not a failure).
    """
    settings = _settings(config_path)
    validate_settings(settings, forbid_puppies=False)
    failures = 0
    if settings.read_only:  # on purpose, so no failure: a note, and /readyz stays 200
        click.echo(
            "note  read-only: deployment.read_only is true; the web app answers writes with "
            "503 and Retry-After, the worker, relay and scheduler stand by"
        )
    if settings.multi_node:
        for problem in puppy_settings(settings):
            click.echo(f"FAIL  multi-node: {problem}")
            failures += 1
    container = Container(settings=settings)
    backends = {port: settings.port(port)[0] for port in PORT_SECTIONS}
    backends.update(
        (f"photofeed.{name}", settings.photofeed()[0]) for name in PhotoFeedRepositories.NAMES
    )
    for name, ping in readiness_checks(container).items():
        label = f"{name} ({backends[name]})" if name in backends else name
        try:
            ping()
        except ScalecoreError as exc:
            click.echo(f"FAIL  {label}: {_one_line(str(exc))}")
            failures += 1
        except Exception as exc:  # an adapter that leaked a driver error: still a report
            click.echo(f"FAIL  {label}: {type(exc).__name__}: {_one_line(str(exc))}")
            failures += 1
        else:
            click.echo(f"ok    {label}")
    close_adapters(container)
    if failures:
        click.echo(f"{failures} problem(s) found", err=True)
        sys.exit(1)


@main.group("db")
def db_group() -> None:
    """Database housekeeping."""


@db_group.command("init")
@config_option
@_one_line_errors
def db_init(config_path: str | None) -> None:
    """Create the tables of every SQL-backed port and the service's stores (idempotent)."""
    container = create_container(_settings(config_path))
    try:
        for name in create_tables(container):
            click.echo(f"created tables for {name}")
    finally:
        close_adapters(container)


@main.group("bus")
def bus_group() -> None:
    """Message bus operations."""


@bus_group.command("replay")
@config_option
@click.argument("topic")
@click.option(
    "--group",
    "groups",
    multiple=True,
    help="Consumer group (repeatable) [default: every group of the service on TOPIC].",
)
@_one_line_errors
def bus_replay(config_path: str | None, topic: str, groups: tuple[str, ...]) -> None:
    """Move the dead letters of TOPIC back to their queue for another try."""
    from scalecore.capabilities import Capability
    from scalecore.ports.bus import validate_name

    validate_name(topic, "topic")
    for group in groups:
        validate_name(group, "group")
    topology = service_topology()
    if not groups:
        groups = tuple(group for known, group in topology if known == topic)
        if not groups:
            topics = sorted({known for known, _ in topology})
            raise ConfigError(
                f"the service has no consumer group on topic {topic!r}; "
                f"its topics: {', '.join(topics)} (or name one with --group)"
            )
    settings = _settings(config_path)
    container = create_container(settings)
    try:
        bus = container.bus()
        if Capability.SHARED not in bus.capabilities:
            backend = settings.port("bus")[0]
            click.echo(
                f"note: bus backend {backend!r} keeps dead letters inside the process that "
                "holds them; this command only reaches those of a shared bus",
                err=True,
            )
        for group in groups:
            replayed = bus.replay_dead_letters(topic, group)
            click.echo(f"replayed {replayed} message(s) of {topic} for group {group}")
    finally:
        close_adapters(container)


# --------------------------------------------------------------------------- migration


@main.command("migrate")
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(dir_okay=False),
    help="Config of the deployment to copy from.",
)
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Path(dir_okay=False),
    help="Config of the deployment to copy into.",
)
@click.option("--dry-run", is_flag=True, help="Count what would move and estimate; write nothing.")
@click.option("--verify", "verify_only", is_flag=True, help="Only compare an earlier copy.")
@click.option(
    "--skip",
    multiple=True,
    metavar="STORE",
    help="Leave a store out (users, photos, follows, feed, database, blobs, sessions, "
    "ledger); repeatable.",
)
@click.option(
    "--full",
    is_flag=True,
    help="Walk every row, not only what changed since the last verified run.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@_one_line_errors
def migrate(
    source: str,
    target: str,
    dry_run: bool,
    verify_only: bool,
    skip: tuple[str, ...],
    full: bool,
    quiet: bool,
) -> None:
    """Copy every durable store of the deployment --from describes into the one --to
    describes, verify it by reading it back, and print a table.

    Exits 0 only when everything verified. Run it again to resume after an interruption or
    to catch up with what changed since the last run. Both files are read as written:
    SCALECORE_* environment overrides are not applied.
    """
    from entrypoints.migrate import Options
    from entrypoints.migrate import migrate as run_migration
    from entrypoints.migrate.progress import Progress
    from entrypoints.migrate.sides import env_overrides

    if dry_run and verify_only:
        raise click.UsageError("--dry-run and --verify cannot be combined")
    overrides = env_overrides()
    if overrides:
        _warn(f"note: {', '.join(overrides)} not applied: migrate reads --from and --to as written")
    mode = "dry-run" if dry_run else "verify" if verify_only else "copy"
    progress = Progress.choose(quiet, _warn)
    report = run_migration(Options(source, target, mode, frozenset(skip), full), progress)
    for note in report.notes:
        click.echo(note)
    click.echo(report.table())
    if report.estimate is not None:
        click.echo(f"estimated copy time: about {report.estimate:,.0f} s")
    for difference in report.differences:
        click.echo(difference)
    if not report.ok:
        problem = "differences found" if mode == "verify" else "not everything verified"
        click.echo(f"error: {problem}: {len(report.differences)} line(s) above", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
