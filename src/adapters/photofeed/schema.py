"""SQL tables of the photo feed, one MetaData per logical store, and helpers they share.

Logical stores (the names ``Databases(metadata=...)`` and the ``[database.stores]`` config
table use) and their tables:

- ``users``: ``photofeed_users``, one row per account, on the shard of its username;
- ``photos``: ``photofeed_photos`` and ``photofeed_outbox``. The outbox is in this store on
  purpose: a photo and its event are written in one transaction, which needs them in the
  same database. (There is no separate "outbox" store for the same reason.)
- ``follows``: ``photofeed_followers`` (the followee's side of each edge, on the followee's
  shard), ``photofeed_following`` (the follower's side, on the follower's shard) and
  ``photofeed_follow_counts`` (per user, on the user's shard);
- ``feed``: ``photofeed_feed``, one row per (follower, photo), on the follower's shard.

Every row lives on the physical shard of a logical shard carried by an id
(:func:`scalecore.ids.shard_of`): rows never move between logical shards, so resharding
moves whole logical shards. All SQL here is portable between SQLite and PostgreSQL; the
two dialect-specific pieces (``INSERT ... ON CONFLICT`` and ``FOR UPDATE SKIP LOCKED``) go
through SQLAlchemy constructs both dialects compile (SQLite drops the locking clause; its
write transactions are serialised by ``BEGIN IMMEDIATE`` anyway).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from adapters.sql.rows import by_logical, logical_of, ping_all, shard_index, shards_of
from adapters.sql.shards import ShardedDatabase
from scalecore.errors import ConfigError
from scalecore.ids import ID_LENGTH
from scalecore.photofeed.models import FeedPosition

__all__ = [
    "FEED",
    "FOLLOWS",
    "METADATA",
    "PHOTOS",
    "USERS",
    "below",
    "by_logical",
    "check_database",
    "feed_table",
    "follow_counts_table",
    "followers_table",
    "following_table",
    "later_of",
    "live",
    "logical_of",
    "outbox_table",
    "photos_table",
    "ping_all",
    "shard_index",
    "shards_of",
    "upsert",
    "users_table",
]

_ID = sa.String(ID_LENGTH)

USERS = sa.MetaData()
PHOTOS = sa.MetaData()
FOLLOWS = sa.MetaData()
FEED = sa.MetaData()
#: Logical store name -> the MetaData of its tables, for ``Databases(metadata=...)``.
METADATA: Mapping[str, sa.MetaData] = {
    "users": USERS,
    "photos": PHOTOS,
    "follows": FOLLOWS,
    "feed": FEED,
}

users_table = sa.Table(
    "photofeed_users",
    USERS,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("username", sa.String(32), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(512), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    # "Recently joined" lists read each shard's newest rows.
    sa.Index("ix_photofeed_users_joined", "created_at", "id"),
)

photos_table = sa.Table(
    "photofeed_photos",
    PHOTOS,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("owner_id", _ID, nullable=False),
    sa.Column("owner_username", sa.String(32), nullable=False),
    sa.Column("caption", sa.String(500), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("blob_key", sa.String(1024), nullable=False),
    sa.Column("thumbnail_key", sa.String(1024), nullable=False),
    sa.Column("content_type", sa.String(100), nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Index("ix_photofeed_photos_owner", "owner_id", "created_at", "id"),
)

outbox_table = sa.Table(
    "photofeed_outbox",
    PHOTOS,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("topic", sa.String(120), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # JSON text
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("claimant", sa.String(64), nullable=True),
    sa.Column("claimed_until", sa.Double, nullable=True),
    sa.Column("sent_at", sa.Double, nullable=True),
    sa.Index("ix_photofeed_outbox_pending", "sent_at", "created_at"),
)

followers_table = sa.Table(
    "photofeed_followers",
    FOLLOWS,
    sa.Column("user_id", _ID, primary_key=True),  # the followee: this row's shard
    sa.Column("follower_id", _ID, primary_key=True),
    sa.Column("followed_at", sa.Double, nullable=True),
    sa.Column("unfollowed_at", sa.Double, nullable=True),
    sa.Column("unsettled", sa.Boolean, nullable=False),
    sa.Column("changed_at", sa.Double, nullable=False),
    sa.Index("ix_photofeed_followers_unsettled", "unsettled", "changed_at"),
)

following_table = sa.Table(
    "photofeed_following",
    FOLLOWS,
    sa.Column("user_id", _ID, primary_key=True),  # the follower: this row's shard
    sa.Column("followee_id", _ID, primary_key=True),
    sa.Column("followed_at", sa.Double, nullable=True),
    sa.Column("unfollowed_at", sa.Double, nullable=True),
    sa.Column("changed_at", sa.Double, nullable=False),
)

follow_counts_table = sa.Table(
    "photofeed_follow_counts",
    FOLLOWS,
    sa.Column("user_id", _ID, primary_key=True),
    sa.Column("followers", sa.BigInteger, nullable=False),
    sa.Column("following", sa.BigInteger, nullable=False),
    sa.Index("ix_photofeed_follow_counts_followers", "followers"),
)

feed_table = sa.Table(
    "photofeed_feed",
    FEED,
    sa.Column("follower_id", _ID, primary_key=True),
    sa.Column("photo_id", _ID, primary_key=True),
    sa.Column("owner_id", _ID, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("added_at", sa.Double, nullable=True),
    sa.Column("removed_at", sa.Double, nullable=True),
    sa.Index("ix_photofeed_feed_page", "follower_id", "created_at", "photo_id"),
    sa.Index("ix_photofeed_feed_owner", "follower_id", "owner_id"),
    sa.Index("ix_photofeed_feed_removed", "removed_at"),
)


def check_database(database: object, store: str) -> ShardedDatabase:
    """Return ``database`` if it is a ShardedDatabase holding ``store``'s tables, else
    raise ``ConfigError`` naming the ``database`` option."""
    if not isinstance(database, ShardedDatabase):
        raise ConfigError(
            f"must be the ShardedDatabase of the {store!r} store, not {type(database).__name__}",
            key="database",
        )
    missing = sorted(set(METADATA[store].tables) - set(database.metadata.tables))
    if missing:
        raise ConfigError(
            f"its metadata lacks {', '.join(missing)}: build it with "
            f"adapters.photofeed.schema.METADATA[{store!r}]",
            key="database",
        )
    return database


def upsert(connection: sa.Connection, table: sa.Table) -> Any:
    """An ``INSERT`` supporting ``on_conflict_do_nothing``/``on_conflict_do_update`` for
    the connection's dialect (PostgreSQL or SQLite)."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    if connection.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise ConfigError(f"unsupported database dialect {connection.dialect.name!r}")


def later_of(current: sa.ColumnElement[Any], incoming: sa.ColumnElement[Any]) -> Any:
    """SQL for the later of two nullable timestamps (NULL is older than any), as in
    :func:`scalecore.photofeed.models.later`."""
    return sa.case(
        (incoming.is_(None), current),
        (current.is_(None), incoming),
        (incoming > current, incoming),
        else_=current,
    )


def live(added: sa.ColumnElement[Any], removed: sa.ColumnElement[Any]) -> Any:
    """SQL for :func:`scalecore.photofeed.models.lww_present`."""
    return sa.and_(added.is_not(None), sa.or_(removed.is_(None), added >= removed))


def below(
    created: sa.ColumnElement[Any], ident: sa.ColumnElement[Any], position: FeedPosition
) -> Any:
    """SQL for "sorts strictly below ``position``" (by created_at, then id)."""
    return sa.or_(
        created < position.created_at,
        sa.and_(created == position.created_at, ident < position.photo_id),
    )
