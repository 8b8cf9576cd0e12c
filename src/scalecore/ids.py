"""Time-sortable ids that carry their logical shard, so an id alone says where its row lives.

Layout (128 bits, most significant first)::

    | 48 bits: Unix time in ms | 16 bits: logical shard | 64 bits: random |

encoded as 26 characters of Crockford base32 (``0-9A-Z`` without ``I L O U``), most
significant first. The encoding is fixed-width and the alphabet is in ASCII order, so
comparing two ids as strings compares them as numbers, which orders them by creation
time (to the millisecond), then by logical shard.

The sharding scheme. Data is spread over :data:`LOGICAL_SHARDS` (4096) *logical* shards,
many more than there will ever be servers, and each logical shard lives on one *physical*
shard: ``physical = router.shard_for(logical_shard)``.

- A user gets ``logical_shard_for(username)``; everything the user owns (photos, follows,
  feed entries) gets the *owner's* logical shard in its id. A user's rows live together,
  and any id (``shard_of(photo_id)``) finds its shard without a lookup table.
- Growing from ``n`` to ``m`` physical shards changes only which physical shard holds each
  logical shard. Rows never change id or logical shard; whole logical shards move.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from typing import Final

import attrs

from scalecore.clock import Clock, SystemClock
from scalecore.errors import InvalidInput
from scalecore.routing import stable_hash
from scalecore.validate import check_int, is_int

__all__ = [
    "ID_LENGTH",
    "LOGICAL_SHARDS",
    "IdGenerator",
    "IdParts",
    "logical_shard_for",
    "make_id",
    "parse_id",
    "shard_of",
]

#: How many logical shards exist. Fixed for the life of the data: changing it would change
#: every user's logical shard.
LOGICAL_SHARDS: Final = 4096
#: Every id is this many characters long.
ID_LENGTH: Final = 26

_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE: Final = {char: value for value, char in enumerate(_ALPHABET)}
_TIME_BITS: Final = 48
_SHARD_BITS: Final = 16
_RANDOM_BITS: Final = 64
_MAX_TIME: Final = (1 << _TIME_BITS) - 1
_MAX_RANDOM: Final = (1 << _RANDOM_BITS) - 1


@attrs.frozen
class IdParts:
    """The fields of an id: ``timestamp_ms`` (Unix ms), ``logical_shard``, ``random``."""

    timestamp_ms: int
    logical_shard: int
    random: int


def logical_shard_for(key: int | str) -> int:
    """Return the logical shard (``0 .. LOGICAL_SHARDS - 1``) that owns ``key``.

    ``stable_hash(key) % LOGICAL_SHARDS``: the same in every process. ``42`` and ``"42"``
    are different keys. Raises :class:`InvalidInput` for other types.
    """
    if not (is_int(key) or isinstance(key, str)):
        raise InvalidInput(f"a shard key must be an int or a str, not {type(key).__name__}")
    return stable_hash(key) % LOGICAL_SHARDS


def make_id(timestamp_ms: int, logical_shard: int, random: int) -> str:
    """Encode the three fields as an id; raise :class:`InvalidInput` if one is out of range.

    Useful for bounds: ``make_id(t, 0, 0)`` sorts before every id made at or after ``t``.
    """
    _check_field("timestamp_ms", timestamp_ms, _MAX_TIME)
    _check_field("logical_shard", logical_shard, LOGICAL_SHARDS - 1)
    _check_field("random", random, _MAX_RANDOM)
    value = (timestamp_ms << (_SHARD_BITS + _RANDOM_BITS)) | (logical_shard << _RANDOM_BITS)
    value |= random
    return "".join(_ALPHABET[(value >> (5 * (ID_LENGTH - 1 - i))) & 31] for i in range(ID_LENGTH))


def parse_id(value: object) -> IdParts:
    """Split an id into its fields.

    Only the canonical form is accepted (what :func:`make_id` produces: 26 upper-case
    Crockford characters), so one id has exactly one spelling and can be used as a
    database key. Raises :class:`InvalidInput` for anything else: not a string, wrong
    length, a character outside the alphabet (lower case included), a value over 128 bits,
    or a logical shard of :data:`LOGICAL_SHARDS` or more.
    """
    if not isinstance(value, str):
        raise InvalidInput(f"an id must be a string, not {type(value).__name__}")
    if len(value) != ID_LENGTH:
        raise InvalidInput(f"an id is {ID_LENGTH} characters long, got {len(value)}")
    number = 0
    for char in value:
        digit = _DECODE.get(char)
        if digit is None:
            raise InvalidInput(f"an id holds only {_ALPHABET}; got {char!r}")
        number = (number << 5) | digit
    if number >> 128:
        raise InvalidInput("an id must fit in 128 bits; its first character is at most '7'")
    shard = (number >> _RANDOM_BITS) & ((1 << _SHARD_BITS) - 1)
    if shard >= LOGICAL_SHARDS:
        raise InvalidInput(f"an id's logical shard must be below {LOGICAL_SHARDS}, got {shard}")
    return IdParts(
        timestamp_ms=number >> (_SHARD_BITS + _RANDOM_BITS),
        logical_shard=shard,
        random=number & _MAX_RANDOM,
    )


def shard_of(value: object) -> int:
    """Return the logical shard an id carries; raise :class:`InvalidInput` if malformed."""
    return parse_id(value).logical_shard


class IdGenerator:
    """Makes ids from a clock and a secure random source; safe to share between threads.

    Ordering promise, for the ids of one generator:

    - timestamps never go backwards, even if the clock does (a step back reuses the last
      timestamp until the clock catches up);
    - ids of the same logical shard strictly increase: within one millisecond (or while
      the clock is behind) the next id is the previous one's random part plus one, as
      ULID's monotonic mode does; if that would overflow 64 bits, the timestamp moves on
      by one millisecond.

    Ids of *different* logical shards made in the same millisecond sort by shard, not by
    call order: the shard field sits above the random part, and forcing a global order
    would have to push timestamps ahead of the clock under load.

    ``randbits`` (default :func:`secrets.randbits`) is injectable for tests only.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        randbits: Callable[[int], int] = secrets.randbits,
    ) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._randbits = randbits
        self._lock = threading.Lock()
        self._last_ms = -1
        # logical shard -> (timestamp_ms, random) of the last id made for it
        self._last: dict[int, tuple[int, int]] = {}

    def new(self, logical_shard: int) -> str:
        """Return a new id for ``logical_shard``; raise :class:`InvalidInput` if out of range."""
        _check_field("logical_shard", logical_shard, LOGICAL_SHARDS - 1)
        now_ms = int(self._clock.now() * 1000)
        if not 0 <= now_ms <= _MAX_TIME:
            raise InvalidInput(f"the clock reads {now_ms} ms, outside the 48-bit id range")
        with self._lock:
            timestamp = max(now_ms, self._last_ms)
            previous = self._last.get(logical_shard)
            if previous is not None and previous[0] == timestamp and previous[1] < _MAX_RANDOM:
                random = previous[1] + 1
            else:
                if previous is not None and previous[0] == timestamp:
                    timestamp += 1  # the random part is exhausted for this millisecond
                random = self._randbits(_RANDOM_BITS) & _MAX_RANDOM
            if timestamp > _MAX_TIME:
                raise InvalidInput("the 48-bit id timestamp range is exhausted")
            self._last_ms = timestamp
            self._last[logical_shard] = (timestamp, random)
        return make_id(timestamp, logical_shard, random)

    def new_for(self, key: int | str) -> str:
        """Return a new id in the logical shard of ``key`` (``logical_shard_for(key)``)."""
        return self.new(logical_shard_for(key))


def _check_field(name: str, value: object, maximum: int) -> None:
    check_int(value, name, minimum=0, maximum=maximum)
