"""The migration journal: a small table in the target saying whose copy it holds.

``scalecore_migration`` lives beside the ``users`` tables on the target's first shard of
that store. It holds one row per name:

- ``source``: the fingerprint of the deployment copied from (:func:`sides.fingerprint`),
- ``source_name``: that deployment's ``[deployment] name``, for messages,
- ``state``: ``copying`` while a run copies, ``verified`` after a run verified everything,
- ``passes``: how many copy runs have started.

It is written before the first row is copied, so a target holding rows always says where
they came from; a later run from the same source resumes or catches up, and a run from
any other source is refused before it writes (see :func:`foreign_data`).
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from adapters.sql.shards import Databases

__all__ = ["journal_table", "read_journal", "write_journal"]

_METADATA = sa.MetaData()

journal_table = sa.Table(
    "scalecore_migration",
    _METADATA,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)


def read_journal(databases: Databases) -> dict[str, str]:
    """The journal's rows (empty if the table does not exist)."""
    store = databases.store("users")
    with store.read(shard=0) as connection:
        if not sa.inspect(connection).has_table(journal_table.name):
            return {}
        rows = connection.execute(sa.select(journal_table.c.name, journal_table.c.value))
        return {row.name: row.value for row in rows}


def write_journal(databases: Databases, **values: str) -> None:
    """Set the given names (creating the table if needed), in one transaction."""
    store = databases.store("users")
    from adapters.photofeed.schema import upsert

    with store.unit_of_work(shard=0) as connection:
        _METADATA.create_all(connection, checkfirst=True)
        now = time.time()
        for name, value in values.items():
            insert = upsert(connection, journal_table).values(
                name=name, value=value, updated_at=now
            )
            connection.execute(
                insert.on_conflict_do_update(
                    index_elements=[journal_table.c.name],
                    set_={"value": insert.excluded.value, "updated_at": now},
                )
            )
