"""Developer tasks. ``scripts/test`` runs lint, typecheck, imports and tests in the project venv.

Run a single one with ``.venv/bin/nox --no-venv -s lint`` (after ``scripts/test`` has
installed the venv once), or let nox build its own venvs with plain ``nox -s tests``.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "imports", "tests"]
nox.options.reuse_existing_virtualenvs = True


def _install(session: nox.Session) -> None:
    if not isinstance(session.virtualenv, nox.virtualenv.PassthroughEnv):
        session.install("-e", ".[dev]")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    _install(session)
    session.run("ruff", "check", "src", "tests", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "bench", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the core, the adapters and the entrypoints."""
    _install(session)
    session.run("mypy")


@nox.session
def imports(session: nox.Session) -> None:
    """import-linter: the core depends on nothing; entrypoints sit on top."""
    _install(session)
    session.run("lint-imports")


@nox.session
def tests(session: nox.Session) -> None:
    """Every test tier; servers must be up (scripts/services up)."""
    _install(session)
    session.run("pytest", "-p", "no:cacheprovider", *session.posargs)
