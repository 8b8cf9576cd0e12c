"""Settings: a TOML file, environment overrides of single keys, and the embedded defaults.

The file has one table per port plus ``[deployment]``, ``[database]``, ``[web]``,
``[logging]`` and ``[photofeed]``::

    [deployment]
    name = "laptop"
    multi_node = false          # true: every port must be SHARED (no puppy servers)
    data_dir = "var"            # where embedded backends keep their files
    read_only = false           # true: the web app serves reads and answers writes with 503;
                                # the worker, relay and scheduler stand by (a data move)

    [cache]
    backend = "memory"          # the adapter's name in the registry
    max_entries = 50000         # everything else goes to the adapter's constructor

    [web]
    secure_cookies = false      # true behind HTTPS: the session cookie gets Secure
    media_redirect = false      # true: /media/<key> redirects to a signed URL when the
                                # blob store offers them (DIRECT_URL)
    media_url_expires = 3600    # lifetime of those signed URLs, seconds
    bind = "127.0.0.1:8000"     # `scalecore web` listens here ...
    workers = 2                 # ... with this many gunicorn worker processes
    threads = 4                 # ... of this many threads each

    [logging]
    format = "text"             # "json": one JSON object per line (see entrypoints.logs)
    level = "info"              # debug, info, warning or error

    [tracing]                   # OpenTelemetry (extra "tracing"; see entrypoints.tracing)
    exporter = "none"           # "otlp" or "console" to send spans

    [photofeed]
    repositories = "sql"        # "sql" (on [database]) or "memory" (one process, tests)
    max_upload_bytes = 10485760 # any other key is a field of PhotoFeedSettings
    fanout_threshold = 1000     # (scalecore.photofeed.settings), validated by it

    [photofeed.password_hasher] # options of the argon2 hasher (time_cost, memory_cost, ...)
    [photofeed.images]          # options of the pillow image processor (formats, ...)

Any key can be overridden by an environment variable ``SCALECORE_<SECTION>__<KEY>``
(``SCALECORE_CACHE__BACKEND=memcached``); the value is read as a TOML value when it parses
as one (``3``, ``true``, ``["a", "b"]``) and as a plain string otherwise. A missing file
means the embedded defaults: SQLite files under ``data_dir`` (the data, the cron ledger and
the sessions, so a restart logs nobody out), a local blob folder, an in-process bus and
cache.

Loading validates shape and types and names the key at fault; it never connects anywhere.
:func:`load_config` is the library's loader: the sections above but ``[photofeed]``, plus
the section of an :class:`Application` built on the library. The reference service's
loader, with its ``[photofeed]`` section, is
:func:`entrypoints.photofeed.config.load_settings`.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from entrypoints.catalog import default_backends, embedded_options
from scalecore.errors import ConfigError
from scalecore.validate import is_instance

__all__ = [
    "ENV_PREFIX",
    "LOGGING_DEFAULTS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MASK",
    "PORT_SECTIONS",
    "TRACING_DEFAULTS",
    "WEB_DEFAULTS",
    "Application",
    "Settings",
    "check_keys",
    "env_name",
    "load_config",
    "mask_secrets",
    "masked_keys",
]

ENV_PREFIX = "SCALECORE_"
#: Variables with the prefix that are not key overrides.
_NOT_OVERRIDES = frozenset({"SCALECORE_CONFIG"})

#: Sections that pick an adapter of a port, with the embedded default backend (from the
#: registry, the one list of the ports).
PORT_SECTIONS: Mapping[str, str] = default_backends()

_DEPLOYMENT_KEYS: Mapping[str, type | tuple[type, ...]] = {
    "name": str,
    "multi_node": bool,
    "data_dir": str,
    "read_only": bool,
}
#: [web] keys, their types and defaults.
WEB_DEFAULTS: Mapping[str, Any] = {
    "secure_cookies": False,
    "media_redirect": False,
    "media_url_expires": 3600,
    "bind": "127.0.0.1:8000",
    "workers": 2,
    "threads": 4,
}
#: [logging] keys and their defaults; the values each may take.
LOGGING_DEFAULTS: Mapping[str, str] = {"format": "text", "level": "info"}
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
#: [tracing] keys and their defaults (see entrypoints.tracing); the exporters known.
TRACING_DEFAULTS: Mapping[str, str] = {
    "exporter": "none",
    "endpoint": "",
    "service_name": "scalecore",
}
TRACE_EXPORTERS = ("none", "otlp", "console")
#: The longest signed media URL lifetime (a week, as S3 allows).
MAX_MEDIA_URL_EXPIRES = 7 * 24 * 3600

_DATABASE_KEYS = frozenset({"strategy", "shards", "pins", "create_databases", "stores"})
#: Keys only the top-level [database] table takes.
_DATABASE_TOP_KEYS = frozenset({"control"})
_STRATEGIES = ("modulo", "jump", "directory")
#: The sections every deployment has; an :class:`Application` adds its own.
_SECTIONS = frozenset({"deployment", "database", "web", "logging", "tracing", *PORT_SECTIONS})


@attrs.frozen
class Application:
    """What an application built on the library adds to the configuration.

    ``section`` names its own table (``[photofeed]``), filled with ``defaults`` and checked
    by ``validate`` (which raises ``ConfigError`` naming the key); ``stores`` are the
    logical store names ``[database.stores]`` may give databases of their own (``None``:
    any lower-case name, checked against the application's tables when the databases are
    built).
    """

    section: str | None = None
    defaults: Mapping[str, Any] = attrs.field(factory=dict)
    validate: Callable[[Mapping[str, Any]], None] | None = None
    stores: tuple[str, ...] | None = None

    @property
    def sections(self) -> frozenset[str]:
        """Every section a config of this application may have."""
        return _SECTIONS | {self.section} if self.section else _SECTIONS


#: The library alone: the ports, the databases and the deployment's own sections.
LIBRARY = Application()


@attrs.frozen
class Settings:
    """Validated settings. ``data`` is the effective config: file + environment + defaults."""

    data: Mapping[str, Any]
    source: str

    @property
    def data_dir(self) -> Path:
        return Path(self.data["deployment"]["data_dir"])

    @property
    def multi_node(self) -> bool:
        return bool(self.data["deployment"]["multi_node"])

    @property
    def read_only(self) -> bool:
        """Whether the deployment is switched to read-only (``[deployment] read_only``)."""
        return bool(self.data["deployment"]["read_only"])

    def port(self, name: str) -> tuple[str, dict[str, Any]]:
        """Return (backend, adapter options) of a port section."""
        section = dict(self.data[name])
        backend = section.pop("backend")
        return backend, section

    @property
    def logging(self) -> Mapping[str, Any]:
        """The validated ``[logging]`` table, defaults filled in."""
        section: Mapping[str, Any] = self.data["logging"]
        return section

    @property
    def tracing(self) -> Mapping[str, Any]:
        """The validated ``[tracing]`` table, defaults filled in."""
        section: Mapping[str, Any] = self.data["tracing"]
        return section

    @property
    def web(self) -> Mapping[str, Any]:
        """The validated ``[web]`` table, defaults filled in."""
        web: Mapping[str, Any] = self.data["web"]
        return web

    def masked(self) -> dict[str, Any]:
        """The effective config with secrets masked, safe to print or log."""
        masked: dict[str, Any] = mask_secrets(self.data)
        return masked


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    application: Application = LIBRARY,
) -> Settings:
    """Read, merge and validate settings; raise ``ConfigError`` naming the key at fault.

    ``source`` is a TOML file's path, a mapping of the same shape, or ``None`` for the
    embedded defaults. ``environ`` (``os.environ`` when ``None``) supplies the
    ``SCALECORE_<SECTION>__<KEY>`` overrides; pass ``{}`` to read no environment.
    """
    environ = os.environ if environ is None else environ
    if source is None:
        raw: dict[str, Any] = {}
        where = "embedded defaults"
    elif isinstance(source, Mapping):
        raw = copy.deepcopy(dict(source))
        where = "a mapping"
    else:
        raw = _read_toml(Path(source))
        where = str(source)
    _apply_env(raw, environ, application)
    data = _with_defaults(raw, application)
    _validate(data, application)
    return Settings(data=data, source=where)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path is a directory, not a file: {path}") from None
    except PermissionError:
        raise ConfigError(f"config file is not readable: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str], application: Application) -> None:
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in _NOT_OVERRIDES:
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) < 2 or not all(parts):
            raise ConfigError(
                f"environment variable {name} must look like "
                f"{ENV_PREFIX}<SECTION>__<KEY>, e.g. SCALECORE_CACHE__BACKEND"
            )
        _check_section(parts[0], application, where=f"environment variable {name}")
        target = raw
        for part in parts[:-1]:
            node = target.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"is not a table; cannot set {name}", key=".".join(parts[:-1]))
            target = node
        target[parts[-1]] = _parse_env_value(environ[name])


def _parse_env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _check_section(name: str, application: Application, where: str) -> None:
    known = application.sections
    if name not in known:
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f"; did you mean [{close[0]}]?" if close else ""
        raise ConfigError(
            f"unknown section [{name}] in {where}; known: {', '.join(sorted(known))}{hint}"
        )


def _with_defaults(raw: Mapping[str, Any], application: Application) -> dict[str, Any]:
    for name, value in raw.items():
        _check_section(name, application, where="config")
        if not isinstance(value, dict):
            raise ConfigError("must be a table", key=name)
    data = copy.deepcopy(dict(raw))
    deployment = data.setdefault("deployment", {})
    deployment.setdefault("name", "default")
    deployment.setdefault("multi_node", False)
    deployment.setdefault("data_dir", "var")
    deployment.setdefault("read_only", False)
    data_dir = deployment["data_dir"]
    for port, backend in PORT_SECTIONS.items():
        section = data.setdefault(port, {})
        section.setdefault("backend", backend)
        if isinstance(data_dir, str):
            for key, value in embedded_options(port, section["backend"], data_dir).items():
                section.setdefault(key, value)
    database = data.setdefault("database", {})
    database.setdefault("strategy", "jump")
    if isinstance(data_dir, str):
        database.setdefault("shards", [f"sqlite:///{data_dir}/shard-0.db"])
    database.setdefault("create_databases", False)
    web = data.setdefault("web", {})
    for key, value in WEB_DEFAULTS.items():
        web.setdefault(key, value)
    logging_section = data.setdefault("logging", {})
    for key, value in LOGGING_DEFAULTS.items():
        logging_section.setdefault(key, value)
    tracing_section = data.setdefault("tracing", {})
    for key, value in TRACING_DEFAULTS.items():
        tracing_section.setdefault(key, value)
    if application.section:
        section = data.setdefault(application.section, {})
        for key, value in application.defaults.items():
            section.setdefault(key, copy.deepcopy(value))
    return data


def _validate(data: Mapping[str, Any], application: Application) -> None:
    deployment = data["deployment"]
    check_keys(deployment, _DEPLOYMENT_KEYS.keys(), "deployment")
    for key, kind in _DEPLOYMENT_KEYS.items():
        if not isinstance(deployment[key], kind):
            raise ConfigError(
                f"must be {_type_name(kind)}, got {deployment[key]!r}", key=f"deployment.{key}"
            )
    if not deployment["data_dir"]:
        raise ConfigError("must not be empty", key="deployment.data_dir")
    _refuse_masks(data)
    _validate_database(data["database"], "database", application.stores)
    _validate_web(data["web"])
    _validate_logging(data["logging"])
    _validate_tracing(data["tracing"])
    if application.section and application.validate is not None:
        application.validate(data[application.section])


def _validate_web(web: Mapping[str, Any]) -> None:
    check_keys(web, WEB_DEFAULTS.keys(), "web")
    for key, default in WEB_DEFAULTS.items():
        value = web[key]
        kind = type(default)
        if not is_instance(value, kind):
            raise ConfigError(f"must be {_type_name(kind)}, got {value!r}", key=f"web.{key}")
    for key in ("workers", "threads"):
        if web[key] < 1:
            raise ConfigError(f"must be at least 1, got {web[key]!r}", key=f"web.{key}")
    if not 1 <= web["media_url_expires"] <= MAX_MEDIA_URL_EXPIRES:
        raise ConfigError(
            f"must be 1 to {MAX_MEDIA_URL_EXPIRES} seconds, got {web['media_url_expires']!r}",
            key="web.media_url_expires",
        )
    host, colon, port = web["bind"].rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(
            f"must look like HOST:PORT, e.g. 127.0.0.1:8000, got {web['bind']!r}", key="web.bind"
        )


def _validate_logging(section: Mapping[str, Any]) -> None:
    check_keys(section, LOGGING_DEFAULTS.keys(), "logging")
    for key, allowed in (("format", LOG_FORMATS), ("level", LOG_LEVELS)):
        if section[key] not in allowed:
            raise ConfigError(
                f"must be one of {', '.join(allowed)}, got {section[key]!r}", key=f"logging.{key}"
            )


def _validate_tracing(section: Mapping[str, Any]) -> None:
    check_keys(section, TRACING_DEFAULTS.keys(), "tracing")
    for key in TRACING_DEFAULTS:
        if not isinstance(section[key], str):
            raise ConfigError(f"must be a string, got {section[key]!r}", key=f"tracing.{key}")
    if section["exporter"] not in TRACE_EXPORTERS:
        raise ConfigError(
            f"must be one of {', '.join(TRACE_EXPORTERS)}, got {section['exporter']!r}",
            key="tracing.exporter",
        )
    if not section["service_name"]:
        raise ConfigError("must not be empty", key="tracing.service_name")
    endpoint = section["endpoint"]
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise ConfigError(
            f"must be an http(s) URL or empty, got {endpoint!r}", key="tracing.endpoint"
        )


def _validate_database(
    section: Mapping[str, Any], where: str, store_names: tuple[str, ...] | None = None
) -> None:
    top = where == "database"
    check_keys(section, _DATABASE_KEYS | _DATABASE_TOP_KEYS if top else _DATABASE_KEYS, where)
    if top and "control" in section:
        control = section["control"]
        if not isinstance(control, str) or not _DB_URL.match(control):
            raise ConfigError("must be a database URL", key=f"{where}.control")
    strategy = section.get("strategy", "jump")
    if strategy not in _STRATEGIES:
        raise ConfigError(
            f"unknown strategy {strategy!r}; known: {', '.join(_STRATEGIES)}",
            key=f"{where}.strategy",
        )
    shards = section.get("shards")
    if not isinstance(shards, list) or not shards:
        raise ConfigError("must be a non-empty list of database URLs", key=f"{where}.shards")
    for index, shard in enumerate(shards):
        _validate_shard(shard, f"{where}.shards[{index}]")
    pins = section.get("pins", {})
    if not isinstance(pins, dict):
        raise ConfigError("must be a table of key = shard index", key=f"{where}.pins")
    if pins and strategy != "directory":
        raise ConfigError('pins need strategy = "directory"', key=f"{where}.pins")
    for key, shard_index in pins.items():
        if not isinstance(shard_index, int) or not 0 <= shard_index < len(shards):
            raise ConfigError(
                f"must be a shard index from 0 to {len(shards) - 1}, got {shard_index!r}",
                key=f"{where}.pins.{key}",
            )
    if not isinstance(section.get("create_databases", False), bool):
        raise ConfigError("must be true or false", key=f"{where}.create_databases")
    stores = section.get("stores", {})
    if not isinstance(stores, dict):
        raise ConfigError("must be a table of logical stores", key=f"{where}.stores")
    if where == "database":
        for name, store in stores.items():
            if store_names is not None and name not in store_names:
                close = difflib.get_close_matches(str(name), store_names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"unknown logical store; known: {', '.join(store_names)}{hint}",
                    key=f"{where}.stores.{name}",
                )
            if not isinstance(name, str) or not _STORE_NAME.match(name):
                raise ConfigError(
                    "a logical store name is a lower-case identifier", key=f"{where}.stores.{name}"
                )
            if not isinstance(store, dict):
                raise ConfigError("must be a table", key=f"{where}.stores.{name}")
            _validate_database(store, f"{where}.stores.{name}")
    elif stores:
        raise ConfigError("logical stores cannot nest", key=f"{where}.stores")


def _validate_shard(shard: object, key: str) -> None:
    url: object
    if isinstance(shard, str):
        url = shard
    elif isinstance(shard, dict):
        check_keys(shard, {"url", "replicas"}, key)
        url = shard.get("url")
        replicas = shard.get("replicas", [])
        if not isinstance(replicas, list) or not all(isinstance(r, str) and r for r in replicas):
            raise ConfigError("must be a list of database URLs", key=f"{key}.replicas")
    else:
        raise ConfigError("must be a database URL or a table {url, replicas}", key=key)
    if not isinstance(url, str) or not _DB_URL.match(url):
        raise ConfigError(
            "must be a database URL like sqlite:///var/db.sqlite or postgresql://host/db", key=key
        )


_STORE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_DB_URL = re.compile(r"^(sqlite|postgresql)(\+\w+)?://")


def check_keys(section: Mapping[str, Any], known: Any, where: str) -> None:
    known = set(known)
    for key in section:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown key; known: {', '.join(sorted(known))}{hint}", key=f"{where}.{key}"
            )


def _type_name(kind: type | tuple[type, ...]) -> str:
    """The type(s) with their article: "a boolean", "an integer", "a string or a number"."""
    names = {bool: "a boolean", str: "a string", int: "an integer", float: "a number"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, f"a {k.__name__}") for k in kinds)


#: What ``mask_secrets`` puts in place of a secret.
MASK = "***"
_SECRET_KEY = re.compile(r"(secret|password|passwd|token|credential|access_key)", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>://[^:/@\s]*:)(?P<password>[^@\s]+)(?P<tail>@)")


def masked_keys(data: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The paths of the values :func:`mask_secrets` would mask (a list's path for a URL
    inside a list)."""
    found: list[tuple[str, ...]] = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            found += masked_keys(value, (*path, str(key)))
    elif isinstance(data, list):
        if any(masked_keys(item, path) for item in data):
            found.append(path)
    elif mask_secrets(data, path[-1] if path else "") != data:
        found.append(path)
    return found


def env_name(path: tuple[str, ...]) -> str:
    """The environment variable that overrides the key at ``path``."""
    return ENV_PREFIX + "__".join(part.upper() for part in path)


def _refuse_masks(data: Any, path: tuple[str, ...] = ()) -> None:
    """A value masked by ``config show`` is no secret: refuse it, naming where the real
    one goes (the file, or the environment, which overrides the file)."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            _refuse_masks(value, (*path, str(key)))
        return
    values = data if isinstance(data, list) else [data]
    for value in values:
        if isinstance(value, str) and (
            (value == MASK and path and _SECRET_KEY.search(path[-1])) or f":{MASK}@" in value
        ):
            raise ConfigError(
                f"holds {MASK!r}, a secret masked by `scalecore config show`: put the real "
                f"value in the file or set {env_name(path)}",
                key=".".join(path),
            )


def mask_secrets(value: Any, key: str = "") -> Any:
    """Return a copy of ``value`` with secret-looking keys and URL passwords replaced."""
    if isinstance(value, Mapping):
        return {k: mask_secrets(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, key) for v in value]
    if key and _SECRET_KEY.search(key) and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\g<head>***\g<tail>", value)
    return value
