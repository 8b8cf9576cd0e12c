"""The photo feed's tunables, validated once, with the defaults a laptop and a fleet share."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import attrs

from scalecore.errors import ConfigError
from scalecore.validate import check_int, check_seconds

__all__ = ["MAX_CAPTION_LENGTH", "PhotoFeedSettings"]

#: Longest caption, in characters.
MAX_CAPTION_LENGTH = 500


def _positive_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_int(value, attribute.name, minimum=1, error=ConfigError)


def _non_negative_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_int(value, attribute.name, minimum=0, error=ConfigError)


def _seconds(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_seconds(value, attribute.name, error=ConfigError)


def _text(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value or any(ord(c) < 32 for c in value):
        raise ConfigError(f"must be non-empty printable text, got {value!r}", key=attribute.name)


def _optional_dir(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"must be a directory path or unset, got {value!r}", key=attribute.name)


@attrs.frozen(kw_only=True)
class PhotoFeedSettings:
    """Settings of :class:`~scalecore.photofeed.service.PhotoFeed` (the ``[photofeed]`` table).

    Every field is validated on construction; a bad value raises ``ConfigError`` naming
    the field. Times are in seconds.

    Uploads: ``max_upload_bytes`` (original's size limit, 10 MiB), ``max_image_pixels``
    (width x height limit, against decompression bombs; 40 million), ``thumbnail_size``
    (longest side of a thumbnail, 320), ``upload_memory_bytes`` (an upload up to this size
    is spooled in memory, a larger one to a temporary file; 1 MiB), ``upload_tmp_dir``
    (where those files go; the system's temporary directory when unset),
    ``media_cache_control`` (Cache-Control stored with both objects; photos never change
    under a key, so "immutable").

    Feeds: ``fanout_threshold`` (an account with more followers than this is not fanned
    out; its photos are merged into feeds at read time; 1000), ``feed_default_limit`` (5),
    ``feed_max_limit`` (50), ``recent_photos_for_backfill`` (photos copied into a feed on
    follow; 20), ``popular_cache_ttl`` (how long the set of such accounts and each one's
    recent photo list are cached; 60), ``feed_cache_ttl`` (the first page of a feed at the
    default limit is cached this long; fan-out, follows and unfollows invalidate it, so
    only photos of accounts above ``fanout_threshold`` can show up to this late; 30).

    Profiles: ``profile_cache_ttl`` (hard TTL, 60), ``profile_soft_ttl`` (served fresh this
    long, then stale while one caller refreshes; 30), ``profile_photo_count`` (30).

    Finding people: ``people_cache_ttl`` (how long a page of a username search or of the
    recently joined accounts is cached; 30), ``people_default_limit`` (20) and
    ``people_max_limit`` (50), the page sizes.

    Background work: ``outbox_lease`` (how long a relay's claim on outbox rows lasts before
    another relay may publish them; 60), ``outbox_batch`` (rows per claim; 100),
    ``outbox_retention`` (sent rows are kept this long; 1 day), ``follow_repair_grace``
    (a follow edge whose two sides still disagree after this long is repaired; 600),
    ``orphan_blob_grace`` (an object under ``photos/`` without a photo row is deleted once
    this old; 3600), ``feed_tombstone_retention`` (removed feed entries are kept this long,
    so a late duplicate "uploaded" cannot resurrect them; 7 days).
    """

    max_upload_bytes: int = attrs.field(default=10 * 1024 * 1024, validator=_positive_int)
    max_image_pixels: int = attrs.field(default=40_000_000, validator=_positive_int)
    thumbnail_size: int = attrs.field(default=320, validator=_positive_int)
    upload_memory_bytes: int = attrs.field(default=1024 * 1024, validator=_positive_int)
    upload_tmp_dir: str | None = attrs.field(default=None, validator=_optional_dir)
    media_cache_control: str = attrs.field(
        default="public, max-age=31536000, immutable", validator=_text
    )
    fanout_threshold: int = attrs.field(default=1000, validator=_non_negative_int)
    feed_default_limit: int = attrs.field(default=5, validator=_positive_int)
    feed_max_limit: int = attrs.field(default=50, validator=_positive_int)
    recent_photos_for_backfill: int = attrs.field(default=20, validator=_non_negative_int)
    popular_cache_ttl: float = attrs.field(default=60.0, validator=_seconds)
    feed_cache_ttl: float = attrs.field(default=30.0, validator=_seconds)
    profile_cache_ttl: float = attrs.field(default=60.0, validator=_seconds)
    profile_soft_ttl: float = attrs.field(default=30.0, validator=_seconds)
    profile_photo_count: int = attrs.field(default=30, validator=_positive_int)
    people_cache_ttl: float = attrs.field(default=30.0, validator=_seconds)
    people_default_limit: int = attrs.field(default=20, validator=_positive_int)
    people_max_limit: int = attrs.field(default=50, validator=_positive_int)
    outbox_lease: float = attrs.field(default=60.0, validator=_seconds)
    outbox_batch: int = attrs.field(default=100, validator=_positive_int)
    outbox_retention: float = attrs.field(default=86400.0, validator=_seconds)
    follow_repair_grace: float = attrs.field(default=600.0, validator=_seconds)
    orphan_blob_grace: float = attrs.field(default=3600.0, validator=_seconds)
    feed_tombstone_retention: float = attrs.field(default=7 * 86400.0, validator=_seconds)

    def __attrs_post_init__(self) -> None:
        if self.feed_default_limit > self.feed_max_limit:
            raise ConfigError(
                f"must not exceed feed_max_limit ({self.feed_max_limit})",
                key="feed_default_limit",
            )
        if self.people_default_limit > self.people_max_limit:
            raise ConfigError(
                f"must not exceed people_max_limit ({self.people_max_limit})",
                key="people_default_limit",
            )
        if self.profile_soft_ttl > self.profile_cache_ttl:
            raise ConfigError(
                f"must not exceed profile_cache_ttl ({self.profile_cache_ttl})",
                key="profile_soft_ttl",
            )

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> PhotoFeedSettings:
        """Build settings from a config table; unknown keys raise ``ConfigError``."""
        known = [field.name for field in attrs.fields(cls)]
        for key in options:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown setting{hint}", key=str(key))
        return cls(**dict(options))
