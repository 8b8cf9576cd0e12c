"""The ``[photofeed]`` section of the reference service's configuration.

``repositories`` is ``"sql"`` (on ``[database]``) or ``"memory"`` (one process, tests);
``password_hasher`` and ``images`` are tables of the argon2 hasher's and the pillow image
processor's constructor options (checked against the constructors by the container); every
other key is a field of :class:`scalecore.photofeed.settings.PhotoFeedSettings`, validated
by it. The service's logical stores (:data:`scalecore.photofeed.stores.STORE_NAMES`) are the
names ``[database.stores]`` may use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import attrs

from entrypoints.config import Application, Settings, check_keys, load_config
from scalecore.errors import ConfigError
from scalecore.photofeed.settings import PhotoFeedSettings
from scalecore.photofeed.stores import STORE_NAMES

__all__ = [
    "APPLICATION",
    "PHOTOFEED_ADAPTERS",
    "PHOTOFEED_REPOSITORIES",
    "adapter_options",
    "load_settings",
    "repositories",
    "validate_photofeed",
]

#: [photofeed] ``repositories`` values; every other key of the table is a field of
#: :class:`scalecore.photofeed.settings.PhotoFeedSettings` (unset ones take its defaults).
PHOTOFEED_REPOSITORIES = ("sql", "memory")
#: [photofeed] sub-tables: options of the password hasher (argon2) and the image processor
#: (pillow), checked against their constructors by the container.
PHOTOFEED_ADAPTERS = ("password_hasher", "images")


def validate_photofeed(section: Mapping[str, Any]) -> None:
    """Check the ``[photofeed]`` table; raise ``ConfigError`` naming the key at fault."""
    options = dict(section)
    repositories = options.pop("repositories")
    for name in PHOTOFEED_ADAPTERS:
        if not isinstance(options.pop(name, {}), dict):
            raise ConfigError("must be a table of constructor options", key=f"photofeed.{name}")
    if repositories not in PHOTOFEED_REPOSITORIES:
        raise ConfigError(
            f"must be one of {', '.join(PHOTOFEED_REPOSITORIES)}, got {repositories!r}",
            key="photofeed.repositories",
        )
    known = [
        "repositories",
        *PHOTOFEED_ADAPTERS,
        *(field.name for field in attrs.fields(PhotoFeedSettings)),
    ]
    check_keys(options, known, "photofeed")
    try:
        PhotoFeedSettings.from_mapping(options)
    except ConfigError as exc:
        message = str(exc).removeprefix(f"{exc.key}: ") if exc.key else str(exc)
        raise ConfigError(message, key=f"photofeed.{exc.key}" if exc.key else "photofeed") from None
    except TypeError as exc:  # a value of a type the settings class cannot take
        raise ConfigError(f"bad value: {exc}", key="photofeed") from None


#: The reference service as an application of the library.
APPLICATION = Application(
    section="photofeed",
    defaults={"repositories": "sql"},
    validate=validate_photofeed,
    stores=STORE_NAMES,
)


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """The reference service's settings: :func:`entrypoints.config.load_config` with the
    ``[photofeed]`` section (:data:`APPLICATION`)."""
    return load_config(path, environ, application=APPLICATION)


def repositories(settings: Settings) -> tuple[str, dict[str, Any]]:
    """Return (repositories backend, the service settings given in ``[photofeed]``)."""
    section = dict(settings.data["photofeed"])
    for name in PHOTOFEED_ADAPTERS:
        section.pop(name, None)
    return section.pop("repositories"), section


def adapter_options(settings: Settings, name: str) -> dict[str, Any]:
    """Constructor options of ``[photofeed.<name>]`` (``password_hasher``, ``images``)."""
    return dict(settings.data["photofeed"].get(name, {}))
