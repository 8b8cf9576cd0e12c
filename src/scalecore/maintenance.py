"""Housekeeping cron jobs every deployment needs, whatever the application.

For :class:`scalecore.cron.Scheduler`; each is idempotent, so a slot run twice (after a lost
claim) repeats no visible effect, and each is added only when the adapter needs it:

- ``sessions.purge-expired`` (every 15m): only if the SessionStore declares ``PURGE`` (the
  others expire sessions themselves);
- ``ledger.purge`` (@daily): only if the JobLedger declares ``PURGE``; forgets slots older
  than ``ledger_retention``;
- ``outbox.relay-pending`` (every 1m), with an ``outbox`` relay: publishes the events whose
  writer's own relay missed them (bus down, process died);
- ``outbox.purge-sent`` (@daily), with an ``outbox`` relay: forgets events sent more than
  ``outbox_retention`` ago.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from scalecore.capabilities import Capability
from scalecore.cron import CronJob, JobContext
from scalecore.errors import ConfigError
from scalecore.outbox import OutboxRelay
from scalecore.ports.ledger import JobLedger
from scalecore.ports.sessions import SessionStore

__all__ = ["MAINTENANCE_SCHEDULES", "maintenance_jobs"]

logger = logging.getLogger(__name__)

#: Job name -> schedule; ``maintenance_jobs(schedules=...)`` overrides single entries.
MAINTENANCE_SCHEDULES: Mapping[str, str] = {
    "sessions.purge-expired": "every 15m",
    "ledger.purge": "@daily",
    "outbox.relay-pending": "every 1m",
    "outbox.purge-sent": "@daily",
}


def maintenance_jobs(
    *,
    sessions: SessionStore | None = None,
    ledger: JobLedger | None = None,
    outbox: OutboxRelay | None = None,
    schedules: Mapping[str, str] | None = None,
    ledger_retention: float = 7 * 86400.0,
    outbox_retention: float = 7 * 86400.0,
) -> list[CronJob]:
    """Return the housekeeping jobs the given adapters need (see the module docstring).

    ``schedules`` overrides schedules by job name; an unknown name raises ``ConfigError``,
    a bad schedule ``InvalidInput``.
    """
    chosen = dict(MAINTENANCE_SCHEDULES)
    for name, schedule in (schedules or {}).items():
        if name not in chosen:
            raise ConfigError(f"unknown job; known: {', '.join(sorted(chosen))}", key=name)
        chosen[name] = schedule
    for key, value in (
        ("ledger_retention", ledger_retention),
        ("outbox_retention", outbox_retention),
    ):
        if not value > 0:
            raise ConfigError("must be seconds > 0", key=key)
    jobs: list[CronJob] = []
    if sessions is not None and Capability.PURGE in sessions.capabilities:
        store = sessions
        jobs.append(
            CronJob(
                "sessions.purge-expired",
                chosen["sessions.purge-expired"],
                lambda context: store.purge_expired(),
            )
        )
    if ledger is not None and Capability.PURGE in ledger.capabilities:
        book = ledger
        jobs.append(
            CronJob(
                "ledger.purge",
                chosen["ledger.purge"],
                lambda context: book.purge(context.slot - ledger_retention),
            )
        )
    if outbox is not None:
        relay = outbox

        def relay_pending(context: JobContext) -> None:
            sent = relay.relay_pending()
            if sent:
                logger.info("outbox relay job published %d events", sent)

        jobs.append(CronJob("outbox.relay-pending", chosen["outbox.relay-pending"], relay_pending))
        jobs.append(
            CronJob(
                "outbox.purge-sent",
                chosen["outbox.purge-sent"],
                lambda context: relay.outbox.purge_sent(context.slot - outbox_retention),
            )
        )
    return jobs
