"""Settings: file + environment + defaults, and the exact errors bad config produces."""

from __future__ import annotations

from pathlib import Path

import pytest

from entrypoints.config import mask_secrets
from entrypoints.photofeed.config import load_settings
from scalecore.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scalecore.toml"
    path.write_text(text)
    return path


def test_no_file_means_embedded_defaults() -> None:
    settings = load_settings(None, environ={})
    assert settings.source == "embedded defaults"
    assert settings.port("blobs") == ("localfs", {"root": "var/blobs"})
    assert settings.port("sessions") == ("sql", {"url": "sqlite:///var/sessions.db"})
    assert settings.port("bus") == ("inprocess", {})
    assert settings.port("cache") == ("memory", {})
    assert settings.port("ledger") == ("sql", {"url": "sqlite:///var/ledger.db"})
    assert settings.data["database"]["shards"] == ["sqlite:///var/shard-0.db"]
    assert settings.multi_node is False


def test_file_values_and_data_dir_flow_into_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[deployment]\ndata_dir = "/srv/app"\n[cache]\nbackend = "memory"\nmax_entries = 7\n',
    )
    settings = load_settings(path, environ={})
    assert settings.port("cache") == ("memory", {"max_entries": 7})
    assert settings.port("blobs") == ("localfs", {"root": "/srv/app/blobs"})
    assert settings.data_dir == Path("/srv/app")


def test_environment_overrides_single_keys_with_toml_values(tmp_path: Path) -> None:
    path = write(tmp_path, '[cache]\nbackend = "memory"\nmax_entries = 7\n')
    env = {
        "SCALECORE_CACHE__MAX_ENTRIES": "9",
        "SCALECORE_DEPLOYMENT__MULTI_NODE": "true",
        "SCALECORE_DATABASE__SHARDS": '["postgresql://db1/app", "postgresql://db2/app"]',
        "SCALECORE_BLOBS__URL_SECRET": "not toml at all",
        "SCALECORE_CONFIG": "ignored: names the file, not a key",
        "UNRELATED": "x",
    }
    settings = load_settings(path, environ=env)
    assert settings.port("cache") == ("memory", {"max_entries": 9})
    assert settings.multi_node is True
    assert settings.data["database"]["shards"] == ["postgresql://db1/app", "postgresql://db2/app"]
    assert settings.port("blobs")[1]["url_secret"] == "not toml at all"


def test_a_backend_default_does_not_leak_into_another_backend(tmp_path: Path) -> None:
    path = write(tmp_path, '[blobs]\nbackend = "memory"\n')
    assert load_settings(path, environ={}).port("blobs") == ("memory", {})


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[cahce]\n", {}, "unknown section [cahce] in config; known: "),
        ("[cahce]\n", {}, "did you mean [cache]?"),
        ("cache = 3\n", {}, "cache: must be a table"),
        ("[deployment]\nmulti_node = 'yes'\n", {}, "deployment.multi_node: must be a boolean"),
        ("[deployment]\ndata_dirr = 'x'\n", {}, "did you mean 'data_dir'?"),
        ("[deployment]\ndata_dir = ''\n", {}, "deployment.data_dir: must not be empty"),
        ("[database]\nstrategy = 'round'\n", {}, "database.strategy: unknown strategy 'round'"),
        ("[database]\nshards = []\n", {}, "database.shards: must be a non-empty list"),
        (
            "[database]\nshards = ['mysql://x/y']\n",
            {},
            "database.shards[0]: must be a database URL",
        ),
        (
            "[database]\nshards = ['sqlite:///a.db']\npins = {alice = 0}\n",
            {},
            'database.pins: pins need strategy = "directory"',
        ),
        (
            "[database]\nstrategy = 'directory'\nshards = ['sqlite:///a.db']\npins = {alice = 3}\n",
            {},
            "database.pins.alice: must be a shard index from 0 to 0",
        ),
        (
            "[database.stores.feed]\nshards = [{url = 'sqlite:///f.db', replica = []}]\n",
            {},
            "database.stores.feed.shards[0].replica: unknown key",
        ),
        (
            "[database.stores.outbox]\nshards = ['sqlite:///o.db']\n",
            {},
            "database.stores.outbox: unknown logical store; known: users, photos, follows, feed",
        ),
        ("[database.stores.user]\nshards = ['sqlite:///u.db']\n", {}, "did you mean 'users'?"),
        ("[web]\nworkers = 'many'\n", {}, "web.workers: must be an integer, got 'many'"),
        (
            "[database]\nshards = ['postgresql://app:***@db/app']\n",
            {},
            "database.shards: holds '***', a secret masked by `scalecore config show`: put "
            "the real value in the file or set SCALECORE_DATABASE__SHARDS",
        ),
        ("[blobs]\nurl_secret = '***'\n", {}, "set SCALECORE_BLOBS__URL_SECRET"),
        ("[web]\nbind = 3\n", {}, "web.bind: must be a string, got 3"),
        ("", {"SCALECORE_CACHE": "x"}, "must look like SCALECORE_<SECTION>__<KEY>"),
        ("", {"SCALECORE_CAHCE__BACKEND": "x"}, "unknown section [cahce] in environment variable"),
        ("[cache\n", {}, "is not valid TOML"),
    ],
)
def test_bad_config_names_the_key_and_the_problem(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), environ=env)
    assert message in str(info.value)
    assert "\n" not in str(info.value).strip()


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.toml"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_masking_hides_secrets_and_url_passwords() -> None:
    masked = mask_secrets(
        {
            "blobs": {"url_secret": "s3cr3t", "root": "var"},
            "s3": {"secret_access_key": "abc", "access_key_id": "AKIA"},
            "database": {"shards": ["postgresql://app:hunter2@db/app", "sqlite:///x.db"]},
        }
    )
    assert masked["blobs"] == {"url_secret": "***", "root": "var"}
    assert masked["s3"] == {"secret_access_key": "***", "access_key_id": "***"}
    assert masked["database"]["shards"] == ["postgresql://app:***@db/app", "sqlite:///x.db"]


def test_database_control_is_a_top_level_url(tmp_path: Path) -> None:
    shards = '[database]\nshards = ["sqlite:///a.db"]\n'
    settings = load_settings(
        write(tmp_path, shards + 'control = "sqlite:///control.db"\n'), environ={}
    )
    assert settings.data["database"]["control"] == "sqlite:///control.db"
    with pytest.raises(ConfigError, match=r"^database\.control: must be a database URL"):
        load_settings(write(tmp_path, shards + 'control = "redis://x"\n'), environ={})
    nested = (
        shards + '[database.stores.feed]\nshards = ["sqlite:///f.db"]\ncontrol = "sqlite:///c.db"\n'
    )
    with pytest.raises(ConfigError, match=r"database\.stores\.feed\.control: unknown key"):
        load_settings(write(tmp_path, nested), environ={})


def test_the_logical_store_names_are_the_schemas() -> None:
    from adapters.photofeed.schema import METADATA
    from scalecore.photofeed.stores import STORE_NAMES

    assert set(METADATA) == set(STORE_NAMES)
