"""Adapters of the photo feed's UserRepository port."""
