"""deploy/distributed.toml: a multi-node deployment with no puppy setting, every backend up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "distributed.toml"


def scalecore(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "SCALECORE_DEPLOYMENT__DATA_DIR": str(tmp_path / "data"),
    }
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *args, "--config", str(CONFIG)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_check_connects_to_every_backend_and_finds_no_puppy(
    tmp_path: Path, memcached_servers: list[str], s3_endpoint: str, amqp_url: str, postgres_url: str
) -> None:
    result = scalecore("check", tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for port, backend in [
        ("blobs", "s3"),
        ("sessions", "memcached"),
        ("bus", "rabbitmq"),
        ("cache", "twotier"),
        ("ledger", "sql"),
    ]:
        assert f"ok    {port} ({backend})" in result.stdout
    assert "FAIL" not in result.stdout
    assert "multi-node" not in result.stdout


def test_the_same_file_with_one_puppy_is_refused_by_name(tmp_path: Path) -> None:
    env_config = tmp_path / "puppy.toml"
    text = CONFIG.read_text()
    start = text.index("[sessions]")
    end = text.index("[cache]")
    env_config.write_text(text[:start] + '[sessions]\nbackend = "memory"\n\n' + text[end:])
    result = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "check", "--config", str(env_config)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "SCALECORE_DEPLOYMENT__DATA_DIR": str(tmp_path / "d")},
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "FAIL  multi-node: sessions.backend = 'memory' keeps sessions on one server" in (
        result.stdout
    )
    assert "Traceback" not in result.stdout + result.stderr
