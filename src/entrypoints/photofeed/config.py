"""The ``[photofeed]`` section of the reference service's configuration.

``repositories`` is ``"sql"`` (on ``[database]``) or ``"memory"`` (one process, tests);
``password_hasher`` and ``images`` are tables of the argon2 hasher's and the pillow image
processor's constructor options (checked against the constructors by the container); every
other key is a field of :class:`scalecore.photofeed.settings.PhotoFeedSettings`, validated
by it. The service's logical stores (:data:`scalecore.photofeed.stores.STORE_NAMES`) are the
names ``[database.stores]`` may use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from entrypoints.config import (
    PHOTOFEED_ADAPTERS,
    PHOTOFEED_REPOSITORIES,
    Application,
    check_keys,
)
from scalecore.errors import ConfigError
from scalecore.photofeed.settings import PhotoFeedSettings
from scalecore.photofeed.stores import STORE_NAMES

__all__ = ["APPLICATION", "validate_photofeed"]


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
