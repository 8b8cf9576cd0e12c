"""Key rules shared by every adapter of a port, so a key valid on one backend is valid on all.

Blob keys look like relative POSIX paths (``photos/2024/abc.jpg``). They are checked before
any adapter touches storage, so no key can name a file outside a local store's root or an
object a different backend would spell differently.

Cache keys may be any non-empty text; :func:`normalise_cache_key` maps each one to a short,
printable form that every cache backend accepts (memcached forbids spaces, control
characters and keys over 250 bytes), so two different keys never share a slot.
"""

from __future__ import annotations

import hashlib
import re

from scalecore.errors import InvalidKey

__all__ = [
    "MAX_BLOB_KEY_BYTES",
    "MAX_CACHE_KEY_BYTES",
    "normalise_cache_key",
    "validate_blob_key",
    "validate_blob_prefix",
]

#: S3's own limit; a key longer than this could not move to object storage later.
MAX_BLOB_KEY_BYTES = 1024
#: Normalised cache keys never exceed this; memcached's hard limit is 250.
MAX_CACHE_KEY_BYTES = 200

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SAFE_CACHE_KEY = re.compile(r"[!-~]+")  # printable ASCII, no space


def validate_blob_key(key: object) -> str:
    """Return ``key`` unchanged if it is a valid blob key, else raise :class:`InvalidKey`.

    A valid key is a non-empty ``str`` of at most :data:`MAX_BLOB_KEY_BYTES` UTF-8 bytes with
    no control characters and no backslash, that does not start or end with ``/``, and whose
    ``/``-separated segments are neither empty, ``.`` nor ``..``.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"blob key must be a string, not {type(key).__name__}")
    if not key:
        raise InvalidKey("blob key must not be empty")
    if key.endswith("/"):  # before the segment rules, which would call it an empty segment
        raise InvalidKey(f"blob key must not end with '/': {key!r}")
    _check_common(key)
    return key


def validate_blob_prefix(prefix: object) -> str:
    """Return ``prefix`` if it could begin a valid blob key (the empty prefix included).

    Its last segment, unless the prefix ends with ``/``, may be ``.`` or ``..``: it can
    still begin a valid segment such as ``.profile`` or ``..2024``.
    """
    if not isinstance(prefix, str):
        raise InvalidKey(f"blob prefix must be a string, not {type(prefix).__name__}")
    if prefix:
        _check_common(
            prefix.removesuffix("/") if prefix != "/" else prefix,
            what="prefix",
            partial_last=not prefix.endswith("/"),
        )
    return prefix


def _check_common(key: str, what: str = "key", *, partial_last: bool = False) -> None:
    if len(key.encode("utf-8", "surrogatepass")) > MAX_BLOB_KEY_BYTES:
        raise InvalidKey(f"blob {what} is longer than {MAX_BLOB_KEY_BYTES} bytes")
    if _CONTROL.search(key):
        raise InvalidKey(f"blob {what} contains a control character: {key!r}")
    if "\\" in key:
        raise InvalidKey(f"blob {what} contains a backslash: {key!r}")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidKey(f"blob {what} is not valid UTF-8 text: {key!r}") from None
    if key.startswith("/"):
        raise InvalidKey(f"blob {what} must be relative, not start with '/': {key!r}")
    segments = key.split("/")
    for index, segment in enumerate(segments):
        if segment == "" or (
            segment in (".", "..") and not (partial_last and index == len(segments) - 1)
        ):
            raise InvalidKey(f"blob {what} has an empty, '.' or '..' segment: {key!r}")


def normalise_cache_key(key: object, *, namespace: str = "") -> str:
    """Map a cache key to a form every cache backend accepts; raise :class:`InvalidKey` if empty.

    Short printable-ASCII keys are kept readable (``namespace + key``); any other key becomes
    ``namespace + "#" + sha256(key)``. The ``#`` marker cannot start a kept key's hashed
    form, so a readable key and a hashed one never collide.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"cache key must be a string, not {type(key).__name__}")
    if not key:
        raise InvalidKey("cache key must not be empty")
    full = namespace + key
    if (
        len(full) <= MAX_CACHE_KEY_BYTES
        and _SAFE_CACHE_KEY.fullmatch(full)
        and not key.startswith("#")
    ):
        return full
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{namespace}#{digest}"
