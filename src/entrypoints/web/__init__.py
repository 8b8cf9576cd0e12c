"""The web entrypoint: a thin Flask app over the PhotoFeed service.

``create_app(container)`` builds the site; ``create_ops_app(container)`` only the health and
metrics endpoints (for worker and scheduler processes). Importing this package builds
nothing.
Views live in small modules: ``api`` (JSON under /api), ``pages`` (HTML), ``media`` (blobs
with ETags), ``health`` (/healthz, /readyz), ``metrics`` (/metrics), with ``sessions`` (the
session cookie and CSRF) and ``errors`` (the one error-to-status map) around them.
"""

from entrypoints.web.app import create_app, create_ops_app

__all__ = ["create_app", "create_ops_app"]
