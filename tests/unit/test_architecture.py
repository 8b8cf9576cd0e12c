"""The package layout keeps its promises: light imports, and our own top-level packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import adapters
import entrypoints
import scalecore

SRC = Path(__file__).resolve().parents[2] / "src"
HEAVY = ("boto3", "botocore", "pika", "pymemcache", "psycopg")


def test_adapters_and_entrypoints_are_this_projects_packages() -> None:
    # Both names also exist as unrelated distributions on the package index; an
    # installed one must never shadow ours.
    for package in (scalecore, adapters, entrypoints):
        assert Path(package.__file__ or "").resolve().parent.parent == SRC


def test_importing_the_core_and_the_container_loads_no_driver() -> None:
    code = (
        "import sys, scalecore, entrypoints.container, entrypoints.config\n"
        f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "assert 'sqlalchemy' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
