"""Adapters of the photo feed's FollowRepository port."""
