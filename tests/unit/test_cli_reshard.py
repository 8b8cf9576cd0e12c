"""``scalecore db reshard`` on SQLite files: the plan, one-line errors, the status."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from click.testing import CliRunner

from entrypoints.cli import main


def config(tmp_path: Path, name: str, count: int) -> Path:
    shards = ", ".join(f'"sqlite:///{tmp_path}/shard-{i}.db"' for i in range(count))
    path = tmp_path / name
    path.write_text(
        f'[deployment]\ndata_dir = "{tmp_path}/data"\n[database]\nshards = [{shards}]\n'
    )
    return path


def test_the_plan_names_the_moves_and_changes_nothing(tmp_path: Path) -> None:
    three, four = config(tmp_path, "three.toml", 3), config(tmp_path, "four.toml", 4)
    runner = CliRunner()
    assert runner.invoke(main, ["db", "init", "--config", str(three)]).exit_code == 0
    plan = runner.invoke(main, ["db", "reshard", "--config", str(four), "--from", str(three)])
    assert plan.exit_code == 0, plan.output
    assert "logical shards move" in plan.output
    assert "-> sqlite:///" in plan.output
    assert "run again with --yes" in plan.output
    status = runner.invoke(main, ["db", "reshard", "--config", str(four), "--status"])
    assert status.exit_code == 0
    assert "no reshard has run" in status.output
    assert not (tmp_path / "shard-3.db").exists()  # the plan created nothing
    control = sqlite3.connect(tmp_path / "shard-0.db")
    try:
        query = "SELECT name FROM sqlite_master WHERE name LIKE 'scalecore_%'"
        assert control.execute(query).fetchall() == []
    finally:
        control.close()


def test_the_first_reshard_without_the_current_config_is_a_one_line_error(
    tmp_path: Path,
) -> None:
    three = config(tmp_path, "three.toml", 3)
    runner = CliRunner()
    assert runner.invoke(main, ["db", "init", "--config", str(three)]).exit_code == 0
    result = runner.invoke(main, ["db", "reshard", "--config", str(config(tmp_path, "f.toml", 4))])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert "--from CURRENT.toml" in lines[0]
