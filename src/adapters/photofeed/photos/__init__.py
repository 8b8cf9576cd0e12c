"""Adapters of the photo feed's PhotoRepository port."""
