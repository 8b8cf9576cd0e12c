"""Fixtures of the e2e suite: the deployment under test and what drives it.

``deployment`` is a running scalecore, started as real processes and stopped (SIGTERM,
then checked for a clean exit) after the session. Which deployments: the names in
``SCALECORE_E2E_TARGETS`` (comma-separated; default ``embedded,distributed``); every e2e test runs
once against each. A name maps to a starter in :data:`e2e_harness.TARGETS`; add one there
to test another topology. A server that does not come up fails the tests, never skips.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from e2e_harness import TARGETS, Client, Deployment, png_bytes, poll, target_names


@pytest.fixture(scope="session", params=target_names())
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """A running scalecore deployment; stopped gracefully (exit status 0) afterwards."""
    name = request.param
    if name not in TARGETS:
        pytest.fail(f"unknown e2e target {name!r}; known: {', '.join(TARGETS)}", pytrace=False)
    running = TARGETS[name](tmp_path_factory.mktemp(f"e2e-{name}"))
    yield running
    codes = running.stop()
    if any(code != 0 for code in codes):
        pytest.fail(
            f"the {name} deployment did not stop cleanly (exit codes {codes}):\n{running.output()}",
            pytrace=False,
        )


@pytest.fixture
def client(deployment: Deployment) -> Callable[[], Client]:
    """Make a fresh client (its own cookies) for the deployment under test."""
    return lambda: Client(deployment.base_url)


@pytest.fixture
def username() -> Callable[[str], str]:
    """Make a username unique to this test run from a short prefix."""
    return lambda prefix: f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def png() -> Callable[..., bytes]:
    """Make a PNG: ``png(width, height, color)``."""
    return png_bytes


@pytest.fixture
def eventually() -> Callable[..., Any]:
    """``eventually(check, timeout=15)``: poll until ``check()`` is truthy (fan-out is async)."""
    return poll
