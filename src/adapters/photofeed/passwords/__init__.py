"""Adapters of the photo feed's PasswordHasher port."""
