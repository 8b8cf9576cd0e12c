"""Engines from URLs: errors that name the option, never the URL (it may hold a password)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from adapters.ledger.sql import SqlJobLedger
from adapters.sessions.sql import SqlSessionStore
from adapters.sql.engine import create_tables, make_engine
from scalecore.errors import BackendUnavailable, ConfigError


@pytest.mark.parametrize("url", ["not a url", "postgresql://app:hunter2@[::1:5432/x"])
def test_a_malformed_url_is_a_config_error_that_does_not_repeat_it(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_engine(url)
    assert str(info.value).startswith("url: is not a database URL")
    assert "hunter2" not in str(info.value)


def test_a_sqlite_folder_that_cannot_exist_is_backend_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    url = f"sqlite:///{blocker}/db.sqlite"
    with pytest.raises(BackendUnavailable, match="cannot create the SQLite database's folder"):
        make_engine(url)
    for adapter in (SqlSessionStore, SqlJobLedger):
        with pytest.raises(BackendUnavailable):
            adapter(url=url)


def test_create_tables_is_idempotent(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/x.db")
    metadata = sa.MetaData()
    sa.Table("t", metadata, sa.Column("id", sa.Integer, primary_key=True))
    create_tables(engine, metadata)
    create_tables(engine, metadata)
    assert sa.inspect(engine).get_table_names() == ["t"]
    engine.dispose()
