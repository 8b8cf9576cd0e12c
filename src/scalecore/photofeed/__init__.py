"""The reference photo-feed service: its domain, built only on scalecore's ports.

``PhotoFeed`` is the application service (sign up, log in, follow, upload, feed, profile);
``FeedWorker`` fans photo events out to feeds; ``OutboxRelay`` publishes the outbox;
``cron_jobs`` lists the scheduled maintenance. The repositories, password hasher and image
processor are ports (:mod:`scalecore.photofeed.ports`) with adapters in
``adapters.photofeed``. ``docs/photofeed.md`` explains the design.
"""

from scalecore.photofeed.events import (
    FEED_GROUP,
    TOPIC_PHOTO_DELETED,
    TOPIC_PHOTO_UPLOADED,
    TOPOLOGY,
    PhotoEvent,
)
from scalecore.photofeed.jobs import cron_jobs
from scalecore.photofeed.models import (
    Account,
    FeedEntry,
    FeedPage,
    FeedPosition,
    FollowCounts,
    FollowEdge,
    OutboxEvent,
    Photo,
    Profile,
    User,
)
from scalecore.photofeed.outbox import OutboxRelay
from scalecore.photofeed.ports import (
    FeedRepository,
    FollowRepository,
    ImageProcessor,
    OutboxRepository,
    PasswordHasher,
    PhotoRepository,
    ProcessedImage,
    Rendition,
    UserRepository,
)
from scalecore.photofeed.service import PhotoFeed
from scalecore.photofeed.settings import PhotoFeedSettings
from scalecore.photofeed.workers import FeedWorker

__all__ = [
    "FEED_GROUP",
    "TOPIC_PHOTO_DELETED",
    "TOPIC_PHOTO_UPLOADED",
    "TOPOLOGY",
    "Account",
    "FeedEntry",
    "FeedPage",
    "FeedPosition",
    "FeedRepository",
    "FeedWorker",
    "FollowCounts",
    "FollowEdge",
    "FollowRepository",
    "ImageProcessor",
    "OutboxEvent",
    "OutboxRelay",
    "OutboxRepository",
    "PasswordHasher",
    "Photo",
    "PhotoEvent",
    "PhotoFeed",
    "PhotoFeedSettings",
    "PhotoRepository",
    "ProcessedImage",
    "Profile",
    "Rendition",
    "User",
    "UserRepository",
    "cron_jobs",
]
