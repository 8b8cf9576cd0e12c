"""The composition root's generic half: config to adapters, for any application.

- :mod:`.build`: one adapter of a port from its config section, and the :class:`Closer`
  that closes what was built;
- :mod:`.validation`: every check done before anything connects (backends, options,
  capabilities, multi-node "puppy" settings), with an application's own rules added;
- :mod:`.databases`: the ``[database]`` shards for an application's tables, and resharding;
- :mod:`.defaults`: the effective configuration with every constructor default filled in;
- :mod:`.core`: :class:`CoreContainer`, the dependency-injector container of the ports and
  the databases, which the library entry (:mod:`entrypoints.library`) wraps and the photo
  feed's container (:mod:`entrypoints.photofeed.container`) extends.

Nothing here imports an adapter or SQLAlchemy at import time, nor anything of the photo feed.
"""
