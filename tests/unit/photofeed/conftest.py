"""Fixtures for the photo feed's unit tests: ``world`` and ``make_world`` (see photofeed_world)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from photofeed_world import MakeWorld, World, build_world

from adapters.blob.memory import MemoryBlobStore


@pytest.fixture
def make_world(tmp_path: Path) -> Iterator[MakeWorld]:
    """Build Worlds; keyword arguments are PhotoFeedSettings fields (plus ``blobs=``)."""
    made: list[World] = []

    def make(*, blobs: MemoryBlobStore | None = None, **settings: Any) -> World:
        spool_dir = tmp_path / f"spool-{len(made)}"
        spool_dir.mkdir()
        world = build_world(spool_dir, blobs=blobs, **settings)
        made.append(world)
        return world

    yield make
    for world in made:
        world.bus.close()


@pytest.fixture
def world(make_world: MakeWorld) -> World:
    """A World with default settings."""
    return make_world()
