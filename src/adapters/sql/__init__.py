"""Shared SQLAlchemy plumbing for the SQL adapters: engines, error translation, sharding."""
