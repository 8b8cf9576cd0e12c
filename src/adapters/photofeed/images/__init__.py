"""Adapters of the photo feed's ImageProcessor port."""
