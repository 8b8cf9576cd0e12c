"""The ``scalecore`` command line.

Every command takes ``--config FILE`` (or ``SCALECORE_CONFIG``); without either it runs on
the embedded defaults. A bad argument or bad config prints one line to stderr and exits
non-zero; no command prints a traceback for an error it can name.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from entrypoints.config import PORT_SECTIONS, Settings, load_settings
from entrypoints.container import Container, create_container, puppy_settings, validate_settings
from scalecore.errors import ScalecoreError

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])


def _one_line_errors(command: F) -> F:
    """Turn a ScalecoreError escaping ``command`` into ``error: ...`` and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ScalecoreError as exc:
            message = " ".join(str(exc).split())
            click.echo(f"error: {message}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="scalecore")
def main() -> None:
    """scalecore: start on one box, scale out by changing a config file."""


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
    server, and fail if there is any.
    """
    settings = _settings(config_path)
    validate_settings(settings, forbid_puppies=False)
    failures = 0
    if settings.multi_node:
        for problem in puppy_settings(settings):
            click.echo(f"FAIL  multi-node: {problem}")
            failures += 1
    container = Container(settings=settings)
    for port in PORT_SECTIONS:
        backend, _ = settings.port(port)
        try:
            adapter = getattr(container, port)()
            adapter.ping()
        except ScalecoreError as exc:
            click.echo(f"FAIL  {port} ({backend}): {' '.join(str(exc).split())}")
            failures += 1
        else:
            click.echo(f"ok    {port} ({backend})")
    container.shutdown_resources()
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
    """Create the tables of every SQL-backed port (idempotent)."""
    container = create_container(_settings(config_path))
    for port in PORT_SECTIONS:
        adapter = getattr(container, port)()
        create_schema = getattr(adapter, "create_schema", None)
        if create_schema is not None:
            create_schema()
            click.echo(f"created tables for {port}")


if __name__ == "__main__":  # pragma: no cover
    main()
