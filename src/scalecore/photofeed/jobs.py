"""The photo feed's scheduled jobs, for :class:`scalecore.cron.Scheduler`.

Every server runs the scheduler over the same jobs; the JobLedger lets one of them run each
slot. Each job is also idempotent on its own (running a slot twice, after a lost claim,
repeats no visible effect), so the ledger saves work rather than guarding correctness.

- ``photofeed.relay-outbox`` (every 1m): publish the outbox events that the uploads' own
  relay missed (bus down, process died).
- ``photofeed.remove-orphan-blobs`` (every 1h): delete objects under ``photos/`` that have
  no photo row, once older than ``orphan_blob_grace``.
- ``photofeed.repair-follows`` (every 10m): finish follow edges written on one shard only.
- ``photofeed.purge-outbox`` (@daily): forget events sent more than ``outbox_retention`` ago.
- ``photofeed.purge-feed-tombstones`` (@daily): forget feed entries removed more than
  ``feed_tombstone_retention`` ago.
- ``sessions.purge-expired`` and ``ledger.purge``: the library's housekeeping jobs
  (:mod:`scalecore.maintenance`), added when the SessionStore or the JobLedger declares
  ``PURGE``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from scalecore.cron import CronJob, JobContext
from scalecore.errors import ConfigError
from scalecore.maintenance import MAINTENANCE_SCHEDULES, maintenance_jobs
from scalecore.photofeed.service import PhotoFeed
from scalecore.ports.ledger import JobLedger
from scalecore.ports.sessions import SessionStore

__all__ = ["DEFAULT_SCHEDULES", "cron_jobs"]

logger = logging.getLogger(__name__)

#: The library's maintenance jobs the photo feed runs (its outbox jobs are its own).
_GENERIC = ("sessions.purge-expired", "ledger.purge")

#: Job name -> schedule; ``cron_jobs(schedules=...)`` overrides single entries.
DEFAULT_SCHEDULES: Mapping[str, str] = {
    "photofeed.relay-outbox": "every 1m",
    "photofeed.remove-orphan-blobs": "every 1h",
    "photofeed.repair-follows": "every 10m",
    "photofeed.purge-outbox": "@daily",
    "photofeed.purge-feed-tombstones": "@daily",
    **{name: MAINTENANCE_SCHEDULES[name] for name in _GENERIC},
}


def cron_jobs(
    *,
    photofeed: PhotoFeed,
    sessions: SessionStore | None = None,
    ledger: JobLedger | None = None,
    schedules: Mapping[str, str] | None = None,
    ledger_retention: float = 7 * 86400.0,
) -> list[CronJob]:
    """Return the photo feed's cron jobs (see the module docstring for the list).

    ``sessions`` and ``ledger`` get a purge job only when they declare ``PURGE`` (the
    others expire entries themselves). ``schedules`` overrides schedules by job name;
    an unknown name raises ``ConfigError``, a bad schedule ``InvalidInput``.
    """
    chosen = dict(DEFAULT_SCHEDULES)
    for name, schedule in (schedules or {}).items():
        if name not in chosen:
            raise ConfigError(f"unknown job; known: {', '.join(sorted(chosen))}", key=name)
        chosen[name] = schedule
    if not ledger_retention > 0:
        raise ConfigError("must be seconds > 0", key="ledger_retention")

    def relay_outbox(context: JobContext) -> None:
        sent = photofeed.relay.relay_pending()
        if sent:
            logger.info("outbox relay job published %d events", sent)

    jobs = [
        CronJob("photofeed.relay-outbox", chosen["photofeed.relay-outbox"], relay_outbox),
        CronJob(
            "photofeed.remove-orphan-blobs",
            chosen["photofeed.remove-orphan-blobs"],
            lambda context: photofeed.remove_orphan_blobs(),
            claim_ttl=1800.0,
        ),
        CronJob(
            "photofeed.repair-follows",
            chosen["photofeed.repair-follows"],
            lambda context: photofeed.repair_follows(),
        ),
        CronJob(
            "photofeed.purge-outbox",
            chosen["photofeed.purge-outbox"],
            lambda context: photofeed.purge_outbox(),
        ),
        CronJob(
            "photofeed.purge-feed-tombstones",
            chosen["photofeed.purge-feed-tombstones"],
            lambda context: photofeed.purge_feed_tombstones(),
        ),
    ]
    generic = {name: chosen[name] for name in _GENERIC}
    jobs += maintenance_jobs(
        sessions=sessions, ledger=ledger, schedules=generic, ledger_retention=ledger_retention
    )
    return jobs
