"""The photo feed's logical stores: the names ``[database.stores]`` may give databases of
their own (vertical partitioning).

- ``users``: accounts;
- ``photos``: photo rows and their outbox events (one store, because a photo and its event
  are written in one transaction; there is no separate "outbox" store);
- ``follows``: both sides of every follow edge and the follow counts;
- ``feed``: the fanned-out feed entries.
"""

from __future__ import annotations

__all__ = ["STORE_NAMES"]

STORE_NAMES: tuple[str, ...] = ("users", "photos", "follows", "feed")
