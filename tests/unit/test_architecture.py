"""The package layout keeps its promises: light imports, and our own top-level packages."""

from __future__ import annotations

import re
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


# --------------------------------------------------------------------------- the diagram

ARCHITECTURE_DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def _diagram() -> str:
    text = ARCHITECTURE_DOC.read_text()
    start = text.index("```\n") + 4
    return text[start : text.index("```", start)]


def _diagram_adapters() -> dict[str, set[str]]:
    """Adapter package -> the backends the diagram's adapters box names for it."""
    named: dict[str, set[str]] = {}
    for line in _diagram().splitlines():
        match = re.match(r"│ ([a-z]+)/\s+(.*?)\s+│", line)
        if match and match.group(1) in {"blob", "sessions", "bus", "cache", "ledger"}:
            named[match.group(1)] = {name.strip() for name in match.group(2).split(",")}
    return named


def test_the_architecture_diagram_names_every_registered_adapter() -> None:
    from entrypoints.registry import PORTS

    registered: dict[str, set[str]] = {}
    for backends in PORTS.values():
        for backend, entry in backends.items():
            package, _, module = entry.target.partition(":")[0].rpartition(".")
            assert module == backend, entry.target
            registered.setdefault(package.removeprefix("adapters."), set()).add(backend)
    assert _diagram_adapters() == registered


def test_the_architecture_diagram_names_every_cli_command() -> None:
    import click

    from entrypoints.cli import main

    commands = set()
    for name, command in main.commands.items():
        if isinstance(command, click.Group):
            commands.update(f"{name} {sub}" for sub in command.commands)
        else:
            commands.add(name)
    listed = re.search(r"scalecore (.*?)│\n│\s+(.*?)│", _diagram())
    assert listed is not None
    named = {part.strip() for part in (listed.group(1) + listed.group(2)).split("|")}
    assert named - {""} == commands


def test_the_architecture_diagram_boxes_are_drawn_straight() -> None:
    lines = _diagram().splitlines()
    entrypoints_box = [line for line in lines if line.startswith(("┌──", "│ ", "└──"))][:12]
    assert len({len(line) for line in entrypoints_box}) == 1, entrypoints_box


def test_the_catalog_is_the_one_list_of_ports() -> None:
    """A port added to the catalog gets its config section, embedded default, provider and
    library accessor without another list to edit (docs/architecture.md, "Adding a port")."""
    from entrypoints.catalog import PORTS
    from entrypoints.config import PORT_SECTIONS, load_config
    from entrypoints.library import Deployment
    from entrypoints.wiring.core import CoreContainer

    assert list(PORT_SECTIONS) == list(PORTS)
    defaults = load_config(None, {}).data
    for port, backends in PORTS.items():
        assert backends[PORT_SECTIONS[port]].default
        assert defaults[port]["backend"] == PORT_SECTIONS[port]
        assert port in CoreContainer.providers
        assert isinstance(getattr(Deployment, port), property)
