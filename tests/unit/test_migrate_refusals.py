"""Refusals ``scalecore migrate`` makes from the two configs alone, before connecting."""

from __future__ import annotations

from pathlib import Path

import pytest

from entrypoints.migrate import Options, migrate
from entrypoints.migrate.progress import Progress
from entrypoints.migrate.run import Refused


def test_memcached_sessions_as_the_source_are_refused_in_one_line(tmp_path: Path) -> None:
    source = tmp_path / "fleet.toml"
    # Nothing listens on this port: the refusal comes before any connection.
    source.write_text(
        f'[deployment]\ndata_dir = "{tmp_path / "fleet"}"\nmulti_node = true\n'
        '[sessions]\nbackend = "memcached"\nservers = ["127.0.0.1:9"]\n'
    )
    target = tmp_path / "box.toml"
    target.write_text(f'[deployment]\ndata_dir = "{tmp_path / "box"}"\n')
    with pytest.raises(Refused) as refused:
        migrate(Options(str(source), str(target)), Progress.choose(True, print))
    message = str(refused.value)
    assert "\n" not in message
    assert "cannot enumerate keys" in message
    assert "pass --skip sessions" in message
    assert "log in again" in message
    assert not (tmp_path / "box").exists()
