"""The reference photo-feed service's wiring, built on the library entry's container.

:mod:`.config` is its ``[photofeed]`` section; :mod:`.container` its providers (the
repositories, the password hasher, the image processor, the service, its worker, relay
and cron jobs) on top of :class:`entrypoints.wiring.core.CoreContainer`; :mod:`.operations`
what the CLI and the runners do with them (tables, readiness, topology, effective config).
"""
