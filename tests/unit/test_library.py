"""The library entry: the ports and the core algorithms for an application of one's own,
validated like the reference service, and free of the photo feed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from adapters.blob.localfs import LocalFsBlobStore
from adapters.bus.inprocess import InProcessBus
from adapters.cache.memory import MemoryCache
from adapters.ledger.sql import SqlJobLedger
from adapters.sessions.sql import SqlSessionStore
from entrypoints.container import create_container
from entrypoints.library import open_deployment
from entrypoints.photofeed.config import load_settings
from scalecore import Capability
from scalecore.cron import CronJob
from scalecore.errors import ConfigError
from scalecore.ids import logical_shard_for

ROOT = Path(__file__).resolve().parents[2]


def config(tmp_path: Path, **sections: dict[str, object]) -> dict[str, object]:
    return {"deployment": {"data_dir": str(tmp_path / "data")}, **sections}


def test_the_embedded_defaults_give_every_port(tmp_path: Path) -> None:
    with open_deployment(config(tmp_path)) as deployment:
        assert isinstance(deployment.blobs, LocalFsBlobStore)
        assert isinstance(deployment.sessions, SqlSessionStore)
        assert isinstance(deployment.bus, InProcessBus)
        assert isinstance(deployment.cache, MemoryCache)
        assert isinstance(deployment.ledger, SqlJobLedger)
        assert deployment.cache is deployment.cache
        assert deployment.databases.names == ("main",)
        assert deployment.check() == dict.fromkeys(
            ["blobs", "sessions", "bus", "cache", "ledger", "database.main"]
        )


def test_importing_and_using_it_loads_nothing_of_the_photo_feed(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from entrypoints.library import open_deployment
        from scalecore.cron import CronJob

        heavy = ("sqlalchemy", "boto3", "pika", "pymemcache", "psycopg", "flask")
        print([name for name in heavy if name in sys.modules])
        with open_deployment({"deployment": {"data_dir": sys.argv[1]}}) as deployment:
            deployment.blobs.put("a/b.txt", b"x", content_type="text/plain")
            deployment.loader(ttl=5).get_or_compute("k", lambda: 1)
            deployment.sessions.create({"n": 1})
            deployment.relay.relay_pending()
            deployment.scheduler([CronJob("j", "every 1m", lambda context: None)]).run_due()
            deployment.check()
        loaded = sorted(
            name for name in sys.modules
            if "photofeed" in name or name.split(".")[0] in ("PIL", "argon2")
            or name == "entrypoints.container"
        )
        print(loaded)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "data")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # Importing loads no driver, not even SQLAlchemy; using it loads nothing of the photo feed.
    assert result.stdout.split() == ["[]", "[]"]


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"cache": {"backend": "memroy"}}, "did you mean 'memory'?"),
        ({"cache": {"max_entry": 3}}, "cache.max_entry: backend 'memory' has no option"),
        ({"ledger": {"backend": "sql"}}, None),
    ],
)
def test_validation_is_the_reference_services(
    tmp_path: Path, sections: dict[str, dict[str, object]], message: str | None
) -> None:
    """The same settings pass or fail with the same message in both entries."""
    data = config(tmp_path, **sections)
    toml = tmp_path / "same.toml"
    lines = []
    for name, section in data.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {value!r}".replace("'", '"') for key, value in section.items()]
    toml.write_text("\n".join(lines) + "\n")
    errors = []
    for attempt in (
        lambda: open_deployment(data).close(),
        lambda: create_container(load_settings(toml, environ={})),
    ):
        try:
            attempt()
        except ConfigError as exc:
            errors.append(str(exc))
        else:
            errors.append(None)
    assert errors[0] == errors[1]
    if message is None:
        assert errors[0] is None
    else:
        assert errors[0] is not None
        assert message in errors[0]


def test_multi_node_refuses_puppies_and_capabilities_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="multi_node is true, but these settings keep state"):
        open_deployment(config(tmp_path, deployment={"multi_node": True}))
    with pytest.raises(ConfigError, match=r"blobs\.backend: backend 'localfs' lacks"):
        open_deployment(config(tmp_path), needs={"blobs": [Capability.REQUEST_REPLY]})
    with pytest.raises(ConfigError, match=r"unknown section \[photofeed\]"):
        open_deployment(config(tmp_path, photofeed={"repositories": "sql"}))


def test_database_stores_are_checked_against_the_applications_tables(tmp_path: Path) -> None:
    tables = {"orders": sa.MetaData(), "audit": sa.MetaData()}
    store = {"shards": [f"sqlite:///{tmp_path}/audit.db"]}
    with open_deployment(
        config(tmp_path, database={"stores": {"audit": store}}), tables=tables
    ) as deployment:
        assert deployment.databases.names == ("audit", "orders")
        assert deployment.database("audit") is not deployment.database("orders")
        assert "scalecore_outbox" in deployment.database("orders").metadata.tables
    with pytest.raises(ConfigError, match=r"database\.stores\.audti: unknown logical store; "
                       r"known: audit, orders; did you mean 'audit'\?"):  # fmt: skip
        open_deployment(
            config(tmp_path / "b", database={"stores": {"audti": store}}), tables=tables
        )
    assert not (tmp_path / "b" / "data" / "sessions.db").exists()  # refused before connecting


def test_the_environment_counts_only_when_asked(tmp_path: Path) -> None:
    file = tmp_path / "app.toml"
    file.write_text(f'[deployment]\ndata_dir = "{tmp_path / "d"}"\n[ledger]\nbackend = "memory"\n')
    environ = {"SCALECORE_CONFIG": str(file), "SCALECORE_BUS__MODE": "sync"}
    with open_deployment(environ=environ, create_schema=False) as deployment:
        assert deployment.settings.source == str(file)
        assert type(deployment.ledger).__name__ == "MemoryJobLedger"
        assert deployment.bus.mode == "sync"  # type: ignore[attr-defined]
    with open_deployment(config(tmp_path), create_schema=False) as deployment:
        assert deployment.settings.source == "a mapping"
        assert deployment.bus.mode == "threaded"  # type: ignore[attr-defined]


def test_an_event_commits_with_its_change_and_the_relay_publishes_it(tmp_path: Path) -> None:
    metadata = sa.MetaData()
    orders = sa.Table(
        "orders",
        metadata,
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("total", sa.Integer, nullable=False),
    )
    received: list[object] = []
    with open_deployment(config(tmp_path, bus={"mode": "sync"}), tables=metadata) as deployment:
        deployment.bus.subscribe("orders.placed", "mailer", lambda m: received.append(m.payload))
        deployment.bus.start()
        shard = logical_shard_for("ada")
        database = deployment.database()

        def place(connection: sa.Connection) -> None:
            connection.execute(orders.insert().values(id="o1", total=3))
            deployment.outbox.add(connection, "orders.placed", {"id": "o1"}, shard=shard)

        database.write(shard, place)

        def fail(connection: sa.Connection) -> None:
            connection.execute(orders.insert().values(id="o2", total=4))
            deployment.outbox.add(connection, "orders.placed", {"id": "o2"}, shard=shard)
            raise RuntimeError("the order is refused")

        with pytest.raises(RuntimeError):
            database.write(shard, fail)
        assert deployment.outbox.pending_count() == 1
        assert deployment.relay.relay_pending() == 1
        assert deployment.outbox.pending_count() == 0
    assert received == [{"id": "o1"}]
    assert "scalecore_outbox" not in metadata.tables  # the application's MetaData is its own


def test_a_cron_job_runs_once_per_slot_across_schedulers(tmp_path: Path) -> None:
    runs: list[int] = []
    job = CronJob("report", "every 1m", lambda context: runs.append(context.slot))
    with open_deployment(config(tmp_path)) as one, open_deployment(config(tmp_path)) as two:
        first, second = one.scheduler([job], owner="one"), two.scheduler([job], owner="two")
        names = [job.name for job in first.jobs]
        assert names == ["report", "sessions.purge-expired", "ledger.purge",
                         "outbox.relay-pending", "outbox.purge-sent"]  # fmt: skip
        first.run_due(now=120.0)
        second.run_due(now=130.0)
        second.run_due(now=185.0)
    assert runs == [120, 180]


def test_leaving_the_block_closes_what_was_built(tmp_path: Path) -> None:
    with open_deployment(config(tmp_path)) as deployment:
        deployment.cache.set("k", 1)
        closer = deployment.container.closer()
        assert len(closer) >= 3  # the SQL ports and databases made by create_schema, the cache
    assert len(closer) == 0


def test_loaders_share_one_flight_and_count(tmp_path: Path) -> None:
    calls: list[int] = []
    with open_deployment(config(tmp_path), create_schema=False) as deployment:
        loader = deployment.loader(ttl=60)
        for _ in range(3):
            assert loader.get_or_compute("slow", lambda: calls.append(1) or 7) == 7
        assert calls == [1]
        assert loader.stats.snapshot()["hits"] == 2
