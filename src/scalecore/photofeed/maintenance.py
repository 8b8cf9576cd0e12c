"""Maintenance: the service's cron jobs (orphaned objects, feed tombstones, the outbox).

Part of :class:`~scalecore.photofeed.service.PhotoFeed`; reads the ports it needs from the
shared :class:`~scalecore.photofeed.context.ServiceContext`.
"""

from __future__ import annotations

import logging

from scalecore.photofeed.context import ServiceContext

__all__ = ["Maintenance"]

logger = logging.getLogger("scalecore.photofeed.service")  # one logger for the service


class Maintenance:
    """The service's cron jobs: orphaned objects, feed tombstones, sent outbox events."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def remove_orphan_blobs(self, now: float | None = None) -> int:
        """Delete objects under ``photos/`` older than ``orphan_blob_grace`` that belong to
        no photo row (left by a crash mid-upload or a failed delete); return how many.

        The grace period keeps uploads in progress (objects stored, row not yet
        committed) safe. Idempotent.
        """
        cutoff = (
            self.ctx.clock.now() if now is None else now
        ) - self.ctx.settings.orphan_blob_grace
        removed = 0
        batch: dict[str, list[str]] = {}

        def sweep() -> int:
            existing = self.ctx.photos.existing_ids(list(batch))
            deleted = 0
            for photo_id, keys in batch.items():
                if photo_id in existing:
                    continue
                for key in keys:
                    self.ctx.blobs.delete(key)
                    deleted += 1
            batch.clear()
            return deleted

        for info in self.ctx.blobs.iter_all("photos/"):
            if info.last_modified.timestamp() > cutoff:
                continue
            batch.setdefault(info.key.split("/")[1], []).append(info.key)
            if len(batch) >= 200:
                removed += sweep()
        if batch:
            removed += sweep()
        if removed:
            logger.info("removed %d orphaned photo objects", removed)
        return removed

    def purge_feed_tombstones(self, now: float | None = None) -> int:
        """Forget feed entries removed more than ``feed_tombstone_retention`` ago."""
        at = self.ctx.clock.now() if now is None else now
        return self.ctx.feeds.purge_removed(at - self.ctx.settings.feed_tombstone_retention)

    def purge_outbox(self, now: float | None = None) -> int:
        """Forget outbox events sent more than ``outbox_retention`` ago."""
        at = self.ctx.clock.now() if now is None else now
        return self.ctx.outbox.purge_sent(at - self.ctx.settings.outbox_retention)
