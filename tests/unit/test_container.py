"""The composition root: config picks adapters, and bad config is refused before anything runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from dependency_injector import providers

from adapters.blob.localfs import LocalFsBlobStore
from adapters.bus.inprocess import InProcessBus
from adapters.cache.memory import MemoryCache
from adapters.ledger.memory import MemoryJobLedger
from adapters.ledger.sql import SqlJobLedger
from adapters.sessions.sql import SqlSessionStore
from entrypoints import registry
from entrypoints.container import create_container, puppy_settings, validate_settings
from entrypoints.photofeed.config import load_settings
from scalecore import Capability
from scalecore.errors import ConfigError, MissingDriverError


def settings_for(tmp_path: Path, text: str = "", env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "scalecore.toml"
    path.write_text(f'[deployment]\ndata_dir = "{tmp_path / "data"}"\n{text}')
    return load_settings(path, environ=env or {})


def test_embedded_defaults_build_in_process_adapters(tmp_path: Path) -> None:
    container = create_container(settings_for(tmp_path))
    assert isinstance(container.blobs(), LocalFsBlobStore)
    assert isinstance(container.sessions(), SqlSessionStore)
    assert isinstance(container.bus(), InProcessBus)
    assert isinstance(container.cache(), MemoryCache)
    assert isinstance(container.ledger(), SqlJobLedger)
    assert container.cache() is container.cache()  # one adapter per container


def test_embedded_blob_secret_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    first = create_container(settings_for(tmp_path)).blobs()
    second = create_container(settings_for(tmp_path)).blobs()
    secret = tmp_path / "data" / "secret.key"
    assert secret.stat().st_mode & 0o777 == 0o600
    url = first.url_for("a/b.txt")
    _, _, query = url.partition("?")
    params = dict(pair.split("=") for pair in query.split("&"))
    assert second.verify_url("a/b.txt", params["expires"], params["signature"])


def test_options_reach_the_adapter_and_env_overrides_them(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path, '[ledger]\nbackend = "memory"\n', env={"SCALECORE_BUS__MODE": "sync"}
    )
    container = create_container(settings)
    assert isinstance(container.ledger(), MemoryJobLedger)
    assert container.bus().mode == "sync"


def test_tests_override_a_port_with_a_fake(tmp_path: Path) -> None:
    container = create_container(settings_for(tmp_path))
    fake = MemoryCache(max_entries=3)
    container.cache.override(providers.Object(fake))
    assert container.cache() is fake


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[cache]\nbackend = "memcache"\n', "cache.backend: unknown backend 'memcache'; known: "),
        ('[cache]\nbackend = "memroy"\n', "did you mean 'memory'?"),
        ("[cache]\nmax_entry = 3\n", "cache.max_entry: backend 'memory' has no option 'max_entry'"),
        ("[cache]\nclock = 3\n", "cache.clock: backend 'memory' has no option 'clock'"),
        ("[cache]\nbackend = 3\n", "cache.backend: must be a string"),
    ],
)
def test_bad_port_config_is_refused_before_anything_is_built(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        create_container(settings_for(tmp_path, text))
    assert message in str(info.value)


def test_an_option_value_error_names_the_section(tmp_path: Path) -> None:
    container = create_container(settings_for(tmp_path, "[cache]\nmax_entries = 0\n"))
    with pytest.raises(ConfigError, match=r"^cache\.max_entries: "):
        container.cache()


def test_a_missing_capability_is_refused_at_start_up(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, '[blobs]\nbackend = "memory"\n')
    with pytest.raises(
        ConfigError, match=r"blobs\.backend: backend 'memory' lacks the 'direct_url'"
    ):
        create_container(settings, needs={"blobs": [Capability.DIRECT_URL]})
    validate_settings(settings_for(tmp_path), needs={"blobs": [Capability.DIRECT_URL]})


def test_multi_node_refuses_every_puppy_setting_by_name(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "", env={"SCALECORE_DEPLOYMENT__MULTI_NODE": "true"})
    problems = puppy_settings(settings)
    assert any(p.startswith("blobs.backend = 'localfs'") for p in problems)
    assert any(p.startswith("sessions.url is a SQLite file") for p in problems)
    assert any(p.startswith("bus.backend = 'inprocess'") for p in problems)
    assert any(p.startswith("cache.backend = 'memory'") for p in problems)
    assert any(p.startswith("ledger.url is a SQLite file") for p in problems)
    assert any(p.startswith("database.shards[0] is a SQLite file") for p in problems)
    with pytest.raises(ConfigError, match="multi_node is true, but these settings keep state"):
        create_container(settings)


def test_a_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = registry.AdapterEntry("adapters.blob.memory:MemoryBlobStore", extra="s3")
    monkeypatch.setitem(registry.PORTS["blobs"], "fake", entry)  # type: ignore[index]
    monkeypatch.setitem(sys.modules, "adapters.blob.memory", None)

    def import_module(name: str) -> None:
        raise ModuleNotFoundError("No module named 'boto3'", name="boto3")

    monkeypatch.setattr(registry.importlib, "import_module", import_module)
    with pytest.raises(
        MissingDriverError, match=r"needs the 'boto3' package: install scalecore\[s3\]"
    ):
        registry.load_adapter("blobs", "fake")
