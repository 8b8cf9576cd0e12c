"""The ``scalecore`` command line.

Every command takes ``--config FILE`` (or ``SCALECORE_CONFIG``); without either it runs on
the embedded defaults. A bad argument or bad config prints one line ``error: ...`` to
stderr and exits non-zero (2); no command prints a traceback for an error it can name.

::

    scalecore run [--host H] [--port P]        web (waitress) + worker + relay + scheduler
    scalecore web [--bind H:P] [--workers N]   gunicorn web processes
    scalecore worker                           bus consumers and the outbox relay
    scalecore scheduler                        cron jobs, once per slot across the fleet
    scalecore check                            ping every backend (and flag puppies)
    scalecore config show                      the effective config, secrets masked
    scalecore db init                          create every table on every shard and store
    scalecore db reshard [--from F] [--yes]    move logical shards to the config's databases
    scalecore bus replay TOPIC [--group G]     move dead letters back to their queue
    scalecore migrate --from OLD --to NEW      copy every durable store, verified
    scalecore loadtest --target URL ...        seed, load and report (extra scalecore[load])
    scalecore capacity --viewers N --report D  a capacity plan from a load-test report
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
import tomli_w

from entrypoints.config import (
    MASK,
    PORT_SECTIONS,
    Settings,
    env_name,
    mask_secrets,
    masked_keys,
)
from entrypoints.container import (
    Container,
    PhotoFeedRepositories,
    close_adapters,
    create_container,
    create_tables,
    effective_config,
    puppy_settings,
    readiness_checks,
    reshard_statuses,
    resharders,
    service_topology,
    validate_settings,
)
from entrypoints.photofeed.config import load_settings, repositories
from entrypoints.readiness import CHECK_TIMEOUT, ReadinessProbe
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

    def main(
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
@click.option(
    "--server",
    type=click.Choice(["waitress", "werkzeug"]),
    default="waitress",
    show_default=True,
    help="WSGI server: waitress, or werkzeug's development server (debugging only).",
)
@_one_line_errors
def run(config_path: str | None, host: str, port: int, server: str) -> None:
    """Run the whole service in this process: web, feed worker, outbox relay, scheduler.

    Creates missing tables first. For one box; `web`, `worker` and `scheduler` are the
    same parts run apart, for a fleet.
    """
    from entrypoints.runner import run_all

    run_all(_settings(config_path), host, port, echo=click.echo, server_name=server)


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
    """Print the effective config (file + environment + every default) as TOML, secrets
    masked. Saved to a file it loads back as the same configuration."""
    settings = _settings(config_path)
    validate_settings(settings, forbid_puppies=False)
    effective = effective_config(settings)
    click.echo(f"# source: {settings.source}")
    click.echo("# The effective configuration, every default included: saved to a file, it")
    click.echo("# loads back as the same configuration.")
    masked = masked_keys(effective)
    if masked:
        click.echo(f"# Secrets are masked ({MASK}); a file holding a mask is refused. Put the")
        click.echo("# real values back, or set them in the environment, which overrides the file:")
        for path in masked:
            click.echo(f"#   {env_name(path)}")
    click.echo(tomli_w.dumps(mask_secrets(effective)), nl=False)


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
    if repositories(settings)[0] == "sql":
        # Built once here (it connects to nothing), so a problem of [database] is one
        # error line rather than a failure of each repository built on it.
        container.databases()
    backends = {port: settings.port(port)[0] for port in PORT_SECTIONS}
    backends.update(
        (f"photofeed.{name}", repositories(settings)[0]) for name in PhotoFeedRepositories.NAMES
    )
    results = ReadinessProbe(readiness_checks(container), timeout=CHECK_TIMEOUT).run()
    for name, error in results.items():
        label = f"{name} ({backends[name]})" if name in backends else name
        if error is None:
            click.echo(f"ok    {label}")
        else:
            click.echo(f"FAIL  {label}: {error}")
            failures += 1
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


@db_group.command("reshard")
@config_option
@click.option(
    "--from",
    "from_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="The config the deployment runs with now (only needed before the first reshard).",
)
@click.option("--yes", is_flag=True, help="Execute the plan (without: print it only).")
@click.option("--status", "show_status", is_flag=True, help="Show the last reshard's progress.")
@click.option(
    "--batch",
    type=click.IntRange(1, 256),
    default=16,
    show_default=True,
    help="Logical shards fenced together (smaller: shorter write pauses).",
)
@_one_line_errors
def db_reshard(
    config_path: str | None, from_path: str | None, yes: bool, show_status: bool, batch: int
) -> None:
    """Move logical shards online from the live layout to the databases of --config.

    Prints the plan (logical shards, rows and bytes per pair of databases); --yes runs
    it while the site keeps writing; running it again after an interruption finishes it.
    """
    settings = _settings(config_path)
    if show_status:
        for name, status in reshard_statuses(settings):
            if status is None:
                click.echo(f"{name}: no reshard has run")
                continue
            phases = ", ".join(f"{k} {v}" for k, v in sorted(status["phases"].items()))
            pause = status["pause_p99_ms"]
            click.echo(
                f"{name}: {status['status']}, {status['moves']} logical shards ({phases}), "
                f"{status['rows']} rows, {_size(status['bytes'])}"
                + (f", fence pause p99 {pause:.0f} ms" if pause is not None else "")
            )
        return
    previous = _settings(from_path) if from_path else None
    progress = _Progress()
    groups = resharders(settings, previous, batch=batch, progress=progress)
    try:
        planned = [
            (name, stores, resharder, resharder.plan()) for name, stores, resharder in groups
        ]
        # First the layouts where nothing moves (at most a first live layout is written),
        # then stores' own layouts, then the groups': a store leaving its group takes
        # the group's layout as it is before the group changes.
        planned.sort(key=lambda item: (bool(item[3].moves), item[0] not in item[1]))
        plans = []
        for name, stores, resharder, plan in planned:
            plans.append((name, resharder, plan))
            moved = len({move.logical for move in plan.moves})
            state = " (resuming an interrupted reshard)" if plan.resuming else ""
            click.echo(
                f"{name} ({', '.join(stores)}): {moved} of 4096 logical shards move "
                f"({moved / 4096:.1%}){state}"
            )
            for source, target, count, rows, size in plan.routes():
                click.echo(
                    f"  {source} -> {target}: {count} logical shards, {rows} rows, {_size(size)}"
                )
        if not yes:
            click.echo("nothing changed; run again with --yes to move them")
            return
        for name, resharder, plan in plans:
            if not plan.moves and not plan.bootstrap:
                continue
            progress.start(name, len(plan.moves))
            report = resharder.execute(plan)
            progress.stop()
            pauses = sorted(report.pauses_ms)
            p99 = pauses[min(len(pauses) - 1, int(0.99 * len(pauses)))] if pauses else 0.0
            click.echo(
                f"{name}: moved {report.moved} logical shards, {report.rows} rows "
                f"({_size(report.bytes)}) in {report.seconds:.1f} s, verified; "
                f"fence pause p99 {p99:.0f} ms"
            )
    finally:
        for _name, _stores, resharder in groups:
            resharder.dispose()


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


class _Progress:
    """A bar on a terminal, else a plain line every few seconds."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._name = ""
        self._last = 0.0
        self._done = 0

    def start(self, name: str, total: int) -> None:
        self._name, self._done = name, 0
        if sys.stdout.isatty() and total:
            self._bar = click.progressbar(length=total, label=f"{name}: moving")
            self._bar.__enter__()

    def __call__(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(done - self._done)
        else:
            import time

            now = time.monotonic()
            if now - self._last >= 2 or done == total:
                click.echo(f"{self._name}: moved {done}/{total} logical shards")
                self._last = now
        self._done = done

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


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
@click.option(
    "--drop-change-log",
    is_flag=True,
    help="Only remove the change log earlier runs installed on the source (after the move).",
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
    drop_change_log: bool,
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

    if sum((dry_run, verify_only, drop_change_log)) > 1:
        raise click.UsageError("--dry-run, --verify and --drop-change-log cannot be combined")
    overrides = env_overrides()
    if overrides:
        _warn(f"note: {', '.join(overrides)} not applied: migrate reads --from and --to as written")
    mode = (
        "dry-run"
        if dry_run
        else "verify"
        if verify_only
        else "drop-change-log"
        if drop_change_log
        else "copy"
    )
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


# --------------------------------------------------------------------------- load


#: The longest load test the command runs (a bound, so no run is ever open-ended).
MAX_DURATION = 3600.0


def _parse_duration(value: str) -> float:
    """``90``, ``90s``, ``2m``, ``1h`` -> seconds (more than 0, at most ``MAX_DURATION``)."""
    text = value.strip().lower()
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(text[-1:])
    number = text[:-1] if scale is not None else text
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        raise click.BadParameter(f"must look like 60s, 2m or 90, not {value!r}") from None
    if not 0 < seconds <= MAX_DURATION:
        raise click.BadParameter(f"must be more than 0 and at most {MAX_DURATION:.0f}s")
    return seconds


@main.command("loadtest")
@click.option("--target", required=True, help="Base URL of the site, e.g. http://127.0.0.1:8000.")
@click.option("--users", type=click.IntRange(1, 5000), default=50, show_default=True)
@click.option(
    "--spawn-rate", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
    help="Virtual users started per second.",
)  # fmt: skip
@click.option("--duration", default="60s", show_default=True, help="How long to load (60s, 2m).")
@click.option(
    "--report", "report_dir", required=True, type=click.Path(file_okay=False),
    help="Directory for index.html, report.json and the CSVs.",
)  # fmt: skip
@click.option("--seed-users", type=click.IntRange(2, 100_000), default=200, show_default=True)
@click.option(
    "--follows", type=click.IntRange(0, 1000), default=20, show_default=True,
    help="Accounts each seeded account follows (Pareto by popularity).",
)  # fmt: skip
@click.option("--photos", type=click.IntRange(0, 100_000), default=100, show_default=True)
@click.option(
    "--think-time", type=click.FloatRange(min=0), default=1.0, show_default=True,
    help="Mean seconds between a user's actions (+-50%); 0 for as fast as possible.",
)  # fmt: skip
@click.option(
    "--fanout-threshold", type=click.IntRange(min=0), default=1000, show_default=True,
    help="The target's [photofeed] fanout_threshold (to report accounts above it).",
)  # fmt: skip
@click.option("--seed", "rng_seed", type=int, default=None, help="Random seed of the graph.")
@click.option(
    "--max-error-rate", type=click.FloatRange(0, 1), default=0.01, show_default=True,
    help="Exit 1 when more than this share of requests failed.",
)  # fmt: skip
@click.option("--allow-remote", is_flag=True, help="Allow a target that is not on loopback.")
@_one_line_errors
def loadtest(
    target: str,
    users: int,
    spawn_rate: float,
    duration: str,
    report_dir: str,
    seed_users: int,
    follows: int,
    photos: int,
    think_time: float,
    fanout_threshold: int,
    rng_seed: int | None,
    max_error_rate: float,
    allow_remote: bool,
) -> None:
    """Seed a site over HTTP and load it with locust for a bounded time; write a report.

    The mix: feed views (most), profile views (80% on the 20% most-followed accounts), an
    upload per ~100 views, follows, unfollows and log-ins; fan-out lag is probed. The
    report (DIR/index.html, report.json, CSVs) also holds cache hit rates and database
    queries per request read from the target's /metrics.
    """
    from entrypoints.loadtest.target import check_target

    seconds = _parse_duration(duration)
    base = check_target(target, allow_remote=allow_remote)
    try:
        import locust  # noqa: F401  (patches the standard library for gevent first)
    except ModuleNotFoundError:
        raise ConfigError("`scalecore loadtest` needs locust: install scalecore[load]") from None
    from pathlib import Path

    from entrypoints.loadtest.headless import run_loadtest

    report = run_loadtest(
        target=base,
        users=users,
        spawn_rate=spawn_rate,
        duration=seconds,
        report_dir=Path(report_dir),
        seed_users=seed_users,
        follows=follows,
        photos=photos,
        think_time=think_time,
        fanout_threshold=fanout_threshold,
        echo=click.echo,
        rng_seed=rng_seed,
    )
    total = report["endpoints"][-1]
    lag = report["fanout_lag"]
    click.echo(
        f"{total['requests']} requests, {total['failures']} failed, {total['rps']} req/s, "
        f"p50 {total['p50_ms']} ms, p99 {total['p99_ms']} ms; fan-out lag p50 "
        f"{lag['p50_s']} s, p99 {lag['p99_s']} s ({lag['samples']} samples)"
    )
    click.echo(f"report: {Path(report_dir) / 'index.html'}")
    if total["requests"] and total["failures"] / total["requests"] > max_error_rate:
        click.echo(
            f"error: {total['failures']} of {total['requests']} requests failed "
            f"(more than --max-error-rate {max_error_rate})",
            err=True,
        )
        sys.exit(1)


@main.command("capacity")
@click.option("--viewers", type=click.IntRange(1, 10**9), required=True, help="Concurrent viewers.")
@click.option(
    "--report", "report_dir", required=True, type=click.Path(file_okay=False),
    help="A `scalecore loadtest` report directory (its report.json).",
)  # fmt: skip
@click.option(
    "--think-time", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
    help="Mean seconds between one viewer's requests.",
)  # fmt: skip
@click.option(
    "--utilisation", type=click.FloatRange(0.05, 1.0), default=0.6, show_default=True,
    help="Target CPU utilisation of the web tier (headroom for spikes and p99).",
)  # fmt: skip
@click.option(
    "--site-cores", type=click.FloatRange(min=0.1), default=1.5, show_default=True,
    help="Cores the site had in the load test (used when the report has no CPU figure).",
)  # fmt: skip
@click.option("--cores-per-server", type=click.IntRange(1, 512), default=8, show_default=True)
@click.option(
    "--fanout-entries-per-worker-s", type=click.FloatRange(min=1.0), default=5000.0,
    show_default=True,
    help="Feed entries one feed worker writes per second (bench.feed_postgres measures it).",
)  # fmt: skip
@click.option(
    "--queries-per-shard-s", type=click.FloatRange(min=1.0), default=10000.0,
    show_default=True,
    help="Statements/s one PostgreSQL shard answers (bench.feed_postgres measures it).",
)  # fmt: skip
@_one_line_errors
def capacity(
    viewers: int,
    report_dir: str,
    think_time: float,
    utilisation: float,
    site_cores: float,
    cores_per_server: int,
    fanout_entries_per_worker_s: float,
    queries_per_shard_s: float,
) -> None:
    """Print a capacity plan (Markdown) for VIEWERS concurrent feed viewers, from the
    figures a load test measured: web cores and processes, feed workers, memcached memory,
    PostgreSQL shards and connections, per stage of docs/scaling.md, formulas shown."""
    import json
    from pathlib import Path

    from entrypoints.loadtest.capacity import Assumptions, render_plan

    path = Path(report_dir) / "report.json"
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: pass a `scalecore loadtest` report") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not JSON: {exc}") from None
    assumptions = Assumptions(
        think_time=think_time,
        utilisation=utilisation,
        site_cores=site_cores,
        cores_per_server=cores_per_server,
        fanout_entries_per_worker_s=fanout_entries_per_worker_s,
        queries_per_shard_s=queries_per_shard_s,
    )
    try:
        text = render_plan(report, viewers, assumptions, source=str(report_dir))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path} is not a load-test report (missing {exc})") from None
    click.echo(text, nl=False)


if __name__ == "__main__":  # pragma: no cover
    main()
