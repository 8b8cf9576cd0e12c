"""Signed, expiring URLs for objects that a web process serves itself (HMAC-SHA256).

A signature binds one key to one expiry time (whole Unix seconds) under a secret, so a
link handed to a browser cannot be pointed at another object or kept alive past its time::

    expires_at = expiry_after(clock, 3600)
    signature = sign(secret, "photos/1.jpg", expires_at)
    ...
    verify(secret, "photos/1.jpg", request_expires, request_signature, clock=clock)

The functions are pure apart from reading the clock. :func:`verify` compares in constant
time and answers ``False`` for every malformed input, so a web layer can feed it raw query
parameters without checking them first.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re

from scalecore.clock import Clock
from scalecore.errors import InvalidInput
from scalecore.validate import is_int

__all__ = ["MIN_SECRET_BYTES", "expiry_after", "parse_expires", "sign", "verify"]

#: A shorter secret could be guessed offline from one signed URL.
MIN_SECRET_BYTES = 16

#: Bound on the digits of an expiry, so no query string can make us parse a huge integer.
_EXPIRES = re.compile(r"[0-9]{1,15}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


def sign(secret: bytes, key: str, expires_at: int) -> str:
    """Return the lowercase hex HMAC-SHA256 signature of ``key`` valid until ``expires_at``.

    Raises ``InvalidInput`` if ``secret`` is not bytes of at least :data:`MIN_SECRET_BYTES`,
    ``key`` is not text, or ``expires_at`` is not a non-negative ``int``.
    """
    _check_secret(secret)
    if not isinstance(key, str):
        raise InvalidInput(f"the signed key must be a string, not {type(key).__name__}")
    if not is_int(expires_at) or expires_at < 0:
        raise InvalidInput(f"expires_at must be a non-negative int, not {expires_at!r}")
    return _digest(secret, key, expires_at)


def verify(
    secret: bytes, key: object, expires_at: object, signature: object, *, clock: Clock
) -> bool:
    """Return whether ``signature`` was made by :func:`sign` for ``key`` and ``expires_at``
    under ``secret`` and the expiry has not passed on ``clock``.

    ``expires_at`` may be an ``int`` or its decimal text as found in a query string. A URL
    is valid while ``clock.now() < expires_at``. Malformed values give ``False``; only a bad
    ``secret`` (a configuration error) raises ``InvalidInput``.
    """
    _check_secret(secret)
    expires = parse_expires(expires_at)
    if expires is None or not isinstance(key, str) or not isinstance(signature, str):
        return False
    if not _SIGNATURE.fullmatch(signature):
        return False
    expected = _digest(secret, key, expires)
    if not hmac.compare_digest(expected, signature):
        return False
    return clock.now() < expires


def expiry_after(clock: Clock, seconds: int) -> int:
    """Return the whole Unix second at least ``seconds`` from now on ``clock``."""
    return math.ceil(clock.now()) + seconds


def parse_expires(value: object) -> int | None:
    """Return ``value`` as a non-negative expiry in Unix seconds, or ``None`` if malformed.

    Accepts an ``int`` or ASCII decimal digits (no sign, space or other numerals).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and _EXPIRES.fullmatch(value):
        return int(value)
    return None


def _digest(secret: bytes, key: str, expires_at: int) -> str:
    # The expiry comes first and holds only digits, so the first newline splits the message
    # unambiguously whatever the key contains. surrogatepass keeps signing total over str.
    message = b"%d\n" % expires_at + key.encode("utf-8", "surrogatepass")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _check_secret(secret: object) -> None:
    if not isinstance(secret, bytes):
        raise InvalidInput(f"the signing secret must be bytes, not {type(secret).__name__}")
    if len(secret) < MIN_SECRET_BYTES:
        raise InvalidInput(f"the signing secret must be at least {MIN_SECRET_BYTES} bytes long")
