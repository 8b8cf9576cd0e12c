"""``[deployment] read_only``: the key, its validation, and how ``scalecore check`` reports it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from entrypoints.cli import main
from entrypoints.photofeed.config import load_settings
from scalecore.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scalecore.toml"
    path.write_text(f'[deployment]\ndata_dir = "{tmp_path / "data"}"\n{text}')
    return path


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    clean = {k: None for k in os.environ if k.startswith("SCALECORE_")}
    return CliRunner().invoke(main, list(args), env={**clean, **(env or {})})


def test_read_only_defaults_to_false() -> None:
    settings = load_settings(None, environ={})
    assert settings.read_only is False
    assert settings.data["deployment"]["read_only"] is False


def test_read_only_from_the_file_and_from_the_environment(tmp_path: Path) -> None:
    on = write(tmp_path, "read_only = true\n")
    assert load_settings(on, environ={}).read_only is True
    assert (
        load_settings(on, environ={"SCALECORE_DEPLOYMENT__READ_ONLY": "false"}).read_only is False
    )
    off = write(tmp_path, "")
    assert load_settings(off, environ={"SCALECORE_DEPLOYMENT__READ_ONLY": "true"}).read_only is True


@pytest.mark.parametrize(
    ("text", "env", "shown"),
    [
        ('read_only = "yes"\n', {}, "'yes'"),
        ("read_only = 1\n", {}, "1"),
        ("", {"SCALECORE_DEPLOYMENT__READ_ONLY": "yes"}, "'yes'"),
        ("", {"SCALECORE_DEPLOYMENT__READ_ONLY": "1"}, "1"),
        ("", {"SCALECORE_DEPLOYMENT__READ_ONLY": "True"}, "'True'"),
    ],
)
def test_a_non_boolean_is_one_line_naming_the_key(
    tmp_path: Path, text: str, env: dict[str, str], shown: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), environ=env)
    assert str(info.value) == f"deployment.read_only: must be a boolean, got {shown}"
    assert info.value.key == "deployment.read_only"


def test_the_cli_refuses_a_non_boolean_in_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[photofeed]\nrepositories = "memory"\n')
    result = invoke("check", "--config", str(path), env={"SCALECORE_DEPLOYMENT__READ_ONLY": "on"})
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == "error: deployment.read_only: must be a boolean, got 'on'\n"


def test_check_notes_a_read_only_deployment_and_passes(tmp_path: Path) -> None:
    path = write(tmp_path, '[photofeed]\nrepositories = "memory"\n')
    writable = invoke("check", "--config", str(path))
    assert writable.exit_code == 0, writable.output
    assert "read-only" not in writable.stdout
    result = invoke("check", "--config", str(path), env={"SCALECORE_DEPLOYMENT__READ_ONLY": "true"})
    assert result.exit_code == 0, (result.stdout, result.stderr)
    first = result.stdout.splitlines()[0]
    assert first.startswith("note  read-only: deployment.read_only is true;"), first
    assert "503" in first
    assert "ok    cache (memory)" in result.stdout
