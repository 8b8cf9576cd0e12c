"""The composition root and the processes: config to adapters, the library entry, the
reference service's web app and command line.

For an application of one's own, start at :mod:`entrypoints.library`
(``open_deployment``); importing this package imports nothing else.
"""
