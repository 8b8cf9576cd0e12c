"""Adapters of the photo feed's FeedRepository port."""
