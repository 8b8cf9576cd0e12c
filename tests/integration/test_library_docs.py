"""docs/library.md: its ```python blocks, run in order as one script, are the example
application; it runs to completion against the embedded defaults and against
deploy/distributed.toml on real servers, on fresh deployments with no ``db init``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LIBRARY_MD = ROOT / "docs" / "library.md"
DISTRIBUTED = ROOT / "deploy" / "distributed.toml"


def example() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```$", LIBRARY_MD.read_text(), re.M | re.S)
    assert len(blocks) >= 5
    return "\n".join(blocks)


def run(script: Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SCALECORE_")}
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=base | env,
        timeout=180,
        check=False,
    )


def check_output(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "slow_price ran 1 time(s) for 9 callers" in out
    assert "stored uploads/price-list.csv: 22 bytes" in out
    assert re.search(r"worker confirmed order-[0-9a-f]{12}", out)
    assert "shop.count-orders ran 1 time(s) in this slot on two schedulers" in out
    assert out.rstrip().endswith("shop closed")
    assert "Traceback" not in result.stderr


def test_the_example_runs_on_the_embedded_defaults(tmp_path: Path) -> None:
    script = tmp_path / "shop.py"
    script.write_text(example())
    result = run(script, tmp_path, {})
    check_output(result)
    assert "from embedded defaults" in result.stdout
    assert (tmp_path / "var" / "shard-0.db").exists()  # created without db init


def test_the_example_runs_on_the_distributed_config(
    tmp_path: Path,
    unique: str,
    scratch_database: Callable[[str], str],
    memcached_servers: list[str],
    s3_endpoint: str,
    amqp_url: str,
) -> None:
    script = tmp_path / "shop.py"
    script.write_text(example())
    shards = [scratch_database("lib11_shop"), scratch_database("lib11_shop")]
    env = {
        "SCALECORE_CONFIG": str(DISTRIBUTED),
        "SCALECORE_DEPLOYMENT__DATA_DIR": str(tmp_path / "data"),
        "SCALECORE_BLOBS__BUCKET": f"scalecore-lib11-{unique}",
        "SCALECORE_BUS__EXCHANGE": f"scalecore-lib11-{unique}",
        "SCALECORE_CACHE__NAMESPACE": f"lib11-{unique}-cache:",
        "SCALECORE_SESSIONS__NAMESPACE": f"lib11-{unique}-sess:",
        "SCALECORE_LEDGER__URL": scratch_database("lib11_ledger"),
        "SCALECORE_DATABASE__SHARDS": "[" + ", ".join(f'"{url}"' for url in shards) + "]",
    }
    try:
        result = run(script, tmp_path, env)
    finally:
        _delete_queues(amqp_url, env["SCALECORE_BUS__EXCHANGE"])
    check_output(result)
    assert f"from {DISTRIBUTED}" in result.stdout
    assert "download link: http://127.0.0.1:25000/" in result.stdout


def _delete_queues(url: str, exchange: str) -> None:
    # Durable queues outlive the run: delete the example's, or a shared broker collects them.
    from adapters.bus.rabbitmq import RabbitMqBus

    bus = RabbitMqBus(url=url, exchange=exchange)
    try:
        bus.delete_group("shop.order-placed", "mailer")
    finally:
        bus.close()


def test_servers_starting_at_once_on_a_fresh_deployment_all_create_the_schema(
    tmp_path: Path, scratch_database: Callable[[str], str]
) -> None:
    """Every server opens the deployment at start-up; the CREATE races between them are
    lost quietly, never a failed start."""
    shards = [scratch_database("lib11_race"), scratch_database("lib11_race")]
    config = {
        "deployment": {"data_dir": str(tmp_path / "data")},
        "ledger": {"url": scratch_database("lib11_race_ledger"), "create_database": True},
        "database": {"shards": shards, "create_databases": True},
    }
    script = tmp_path / "start.py"
    script.write_text(
        "import json, sys\n"
        "import sqlalchemy as sa\n"
        "from entrypoints.library import open_deployment\n"
        "tables = sa.MetaData()\n"
        "sa.Table('shop_items', tables, sa.Column('id', sa.String(40), primary_key=True))\n"
        "with open_deployment(json.loads(sys.argv[1]), tables=tables) as deployment:\n"
        "    print(deployment.create_schema())\n"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("SCALECORE_")}
    starts = [
        subprocess.Popen(
            [sys.executable, str(script), json.dumps(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=base,
        )
        for _ in range(4)
    ]
    results = [(start, *start.communicate(timeout=120)) for start in starts]
    for start, out, err in results:
        assert start.returncode == 0, err
        assert "database (main)" in out
