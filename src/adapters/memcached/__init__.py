"""Shared pymemcache plumbing for the memcached adapters of every port (cache, sessions).

``adapters.memcached.cluster`` holds what must not differ between them: how servers are
configured and chosen for a key, how connections are pooled, how a failed server is skipped,
how TTLs become memcached expiry times, and the one place where pymemcache and socket
errors become scalecore errors.
"""
