"""Adapters of the photo feed's own ports (:mod:`scalecore.photofeed.ports`).

One adapter of one port per module, grouped by port:

- ``users``, ``photos``, ``outbox``, ``follows``, ``feed``: ``memory`` (one process) and
  ``sql`` (sharded SQL over :mod:`adapters.sql.shards`; tables in :mod:`.schema`);
- ``passwords.argon2``: :class:`Argon2PasswordHasher` (argon2-cffi);
- ``images.pillow``: :class:`PillowImageProcessor` (Pillow).

The photos and outbox repositories of one flavour share a store: the memory outbox is
passed to the memory photo repository, and both SQL ones are built on the same
``ShardedDatabase`` (the ``photos`` logical store), so a photo and its event are written
in one transaction. Nothing here is imported by ``scalecore``; the composition root wires
it.
"""
