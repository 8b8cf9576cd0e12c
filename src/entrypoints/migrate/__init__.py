"""``scalecore migrate``: move every durable part of one deployment into another.

The parts: :mod:`.sides` (the two configs, read as written), :mod:`.sqlsync` (SQL tables,
placed by the target's router, checked per logical shard), :mod:`.blobs` (objects with
their headers, streamed), :mod:`.sessions` (logged-in users), :mod:`.journal` (whose copy
a target holds), :mod:`.progress` (bars or lines) and :mod:`.run` (the order of it all).
"""

from entrypoints.migrate.run import Options, Report, migrate

__all__ = ["Options", "Report", "migrate"]
