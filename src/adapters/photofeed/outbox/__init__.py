"""Adapters of the photo feed's OutboxRepository port."""
