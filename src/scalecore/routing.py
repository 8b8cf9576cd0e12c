"""Shard routers: modulo, jump consistent hash and a directory of pinned keys.

Every router is a pure function of the key and its configuration, so the same key lands
on the same shard in every process, on every host, after every restart. Hashing goes
through :func:`stable_hash` (BLAKE2b), never Python's ``hash()``, which is salted per
process (``PYTHONHASHSEED``) and would scatter keys differently on every server.

Choosing a strategy::

    ModuloRouter(n)     key % n for integers: simple and perfectly even for dense ids, but
                        going from n to n + 1 shards moves about n / (n + 1) of all keys.
    JumpHashRouter(n)   Lamping & Veach jump consistent hash: as even, no state, and going
                        from n to n + 1 moves only about 1 / (n + 1) of keys, all of them to
                        the new shard.
    DirectoryRouter     explicit pins for hot or relocated keys, everything else delegated
                        to a fallback router.

:func:`moved_fraction` measures how much data a change of router would move.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Final

from scalecore.errors import ConfigError, InvalidInput
from scalecore.ports.sharding import ShardKey, ShardRouter
from scalecore.validate import check_int, is_int

__all__ = [
    "STRATEGIES",
    "DirectoryRouter",
    "JumpHashRouter",
    "ModuloRouter",
    "jump_hash",
    "make_router",
    "moved_fraction",
    "stable_hash",
]

#: Strategy names as they appear in config (``database.strategy``).
STRATEGIES: Final = ("modulo", "jump", "directory")

_MASK64: Final = (1 << 64) - 1
# One tag byte per key type, so the int 42 and the text "42" hash differently: a router
# never silently treats a user number and a username that happen to look alike as one key.
_INT_TAG: Final = b"i"
_STR_TAG: Final = b"s"
_BYTES_TAG: Final = b"b"


def stable_hash(key: int | str | bytes) -> int:
    """Return a 64-bit unsigned hash of ``key`` that is the same in every process.

    The hash is BLAKE2b (8-byte digest, big-endian) over a type tag and the key's bytes:
    integers as their decimal text, text as UTF-8 (lone surrogates kept), bytes as they
    are. So ``42``, ``"42"`` and ``b"42"`` hash to three different values. The function
    is frozen: changing it would move every stored row, and a test pins known values.
    Raises :class:`InvalidInput` for any other type (``bool`` included).
    """
    if not (is_int(key) or isinstance(key, str | bytes)):
        raise InvalidInput(f"cannot hash a {type(key).__name__}; expected int, str or bytes")
    if isinstance(key, int):
        data = _INT_TAG + str(key).encode("ascii")
    elif isinstance(key, str):
        data = _STR_TAG + key.encode("utf-8", "surrogatepass")
    else:
        data = _BYTES_TAG + key
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _check_key(key: object) -> ShardKey:
    if not (is_int(key) or isinstance(key, str)):
        raise InvalidInput(f"a shard key must be an int or a str, not {type(key).__name__}")
    return key


def _check_shard_count(shards: object) -> int:
    return check_int(shards, "shards", minimum=1, error=ConfigError)


def jump_hash(key: int, buckets: int) -> int:
    """Lamping & Veach's jump consistent hash of a 64-bit ``key`` into ``buckets`` buckets.

    Growing ``buckets`` by one moves a key only to the new bucket, and only with
    probability ``1 / (buckets + 1)``.
    """
    key &= _MASK64
    bucket, candidate = -1, 0
    while candidate < buckets:
        bucket = candidate
        key = (key * 2862933555777941757 + 1) & _MASK64
        candidate = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


class ModuloRouter(ShardRouter):
    """The classic ``user_id % n``: integers route as ``key % n``, text as ``stable_hash % n``.

    Even for dense integer ids and trivially explainable, but resharding from ``n`` to
    ``n + 1`` shards moves about ``n / (n + 1)`` of all keys. Negative integers route by
    Python's ``%`` (always ``0 .. n - 1``).
    """

    def __init__(self, shards: int) -> None:
        self._shards = _check_shard_count(shards)

    @property
    def shard_count(self) -> int:
        return self._shards

    def shard_for(self, key: ShardKey) -> int:
        key = _check_key(key)
        if isinstance(key, int):
            return key % self._shards
        return stable_hash(key) % self._shards

    def __repr__(self) -> str:
        return f"ModuloRouter({self._shards})"


class JumpHashRouter(ShardRouter):
    """Jump consistent hash over :func:`stable_hash`; stateless and minimal-movement.

    Going from ``n`` to ``n + 1`` shards moves about ``1 / (n + 1)`` of keys, every one of
    them to the new shard ``n``; no key moves between old shards. Shards can only be added
    or removed at the end of the list.
    """

    def __init__(self, shards: int) -> None:
        self._shards = _check_shard_count(shards)

    @property
    def shard_count(self) -> int:
        return self._shards

    def shard_for(self, key: ShardKey) -> int:
        return jump_hash(stable_hash(_check_key(key)), self._shards)

    def __repr__(self) -> str:
        return f"JumpHashRouter({self._shards})"


class DirectoryRouter(ShardRouter):
    """Pinned keys go to their pinned shard; every other key goes where ``fallback`` says.

    Use it to move a hot key (or logical shard) to a shard of its own without moving
    anything else. Keys match exactly and by type: a pin for ``"42"`` does not catch the
    integer ``42``. ``shard_count`` is the fallback's. Raises :class:`ConfigError` if a pin
    names a shard outside ``0 .. shard_count - 1`` or a pin key is not an int or a str.
    """

    def __init__(self, fallback: ShardRouter, pins: Mapping[ShardKey, int] | None = None) -> None:
        if not isinstance(fallback, ShardRouter):
            raise ConfigError(
                f"must be a ShardRouter, not {type(fallback).__name__}", key="fallback"
            )
        self._fallback = fallback
        count = fallback.shard_count
        checked: dict[ShardKey, int] = {}
        for key, shard in (pins or {}).items():
            if not (is_int(key) or isinstance(key, str)):
                raise ConfigError(f"pin keys must be int or str, got {key!r}", key="pins")
            check_int(shard, f"pins.{key}", minimum=0, maximum=count - 1, error=ConfigError)
            checked[key] = shard
        self._pins = checked

    @property
    def shard_count(self) -> int:
        return self._fallback.shard_count

    @property
    def pins(self) -> Mapping[ShardKey, int]:
        """A copy of the pinned keys and their shards."""
        return dict(self._pins)

    def shard_for(self, key: ShardKey) -> int:
        key = _check_key(key)
        # Keys are int or str only (bool refused), and an int never equals a str, so a
        # dict lookup is an exact, type-sensitive match.
        pinned = self._pins.get(key)
        if pinned is not None:
            return pinned
        return self._fallback.shard_for(key)

    def __repr__(self) -> str:
        return f"DirectoryRouter({self._fallback!r}, pins={len(self._pins)})"


def make_router(
    strategy: str, shards: int, pins: Mapping[ShardKey, int] | None = None
) -> ShardRouter:
    """Build the router a config names: ``"modulo"``, ``"jump"`` or ``"directory"``.

    ``"directory"`` pins ``pins`` over a :class:`JumpHashRouter`. Pins with any other
    strategy, or an unknown strategy, raise :class:`ConfigError`.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}", key="strategy"
        )
    if pins and strategy != "directory":
        raise ConfigError('pins need strategy = "directory"', key="pins")
    if strategy == "modulo":
        return ModuloRouter(shards)
    if strategy == "jump":
        return JumpHashRouter(shards)
    return DirectoryRouter(JumpHashRouter(shards), pins or {})


def moved_fraction(old: ShardRouter, new: ShardRouter, keys: Iterable[ShardKey]) -> float:
    """Return the fraction of ``keys`` that ``new`` routes to a different shard than ``old``.

    This is the share of rows a reshard from ``old`` to ``new`` would have to copy. An
    empty ``keys`` gives ``0.0``.
    """
    total = moved = 0
    for key in keys:
        total += 1
        if old.shard_for(key) != new.shard_for(key):
            moved += 1
    return moved / total if total else 0.0
