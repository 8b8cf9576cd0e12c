"""Argon2id password hashes through argon2-cffi.

Backend: "argon2"
Install extra: none (argon2-cffi is a core dependency)
Options: time_cost (iterations, default 3), memory_cost (KiB, default 65536 = 64 MiB),
    parallelism (lanes, default 4), hash_len (bytes, default 32), salt_len (bytes, default
    16). The defaults are RFC 9106's second recommendation ("low memory"); tests pass tiny
    values to stay fast.
Differs from the port: nothing. Hashes are PHC strings (``$argon2id$v=19$m=...``) that
    carry their parameters and salt, so raising the costs later only makes
    ``needs_rehash`` true for old hashes; they still verify.
"""

from __future__ import annotations

import argon2
from argon2.exceptions import HashingError, InvalidHashError, VerificationError

from scalecore.errors import BackendUnavailable, ConfigError, InvalidInput
from scalecore.photofeed.ports import PasswordHasher
from scalecore.validate import check_int

__all__ = ["Argon2PasswordHasher"]


def _option(name: str, value: object, minimum: int) -> int:
    return check_int(value, name, minimum=minimum, error=ConfigError)


class Argon2PasswordHasher(PasswordHasher):
    """Salted Argon2id; thread-safe (argon2-cffi releases the GIL while hashing)."""

    def __init__(
        self,
        *,
        time_cost: int = 3,
        memory_cost: int = 65536,
        parallelism: int = 4,
        hash_len: int = 32,
        salt_len: int = 16,
    ) -> None:
        parallelism = _option("parallelism", parallelism, 1)
        memory_cost = _option("memory_cost", memory_cost, 8 * parallelism)
        self._hasher = argon2.PasswordHasher(
            time_cost=_option("time_cost", time_cost, 1),
            memory_cost=memory_cost,
            parallelism=parallelism,
            hash_len=_option("hash_len", hash_len, 16),
            salt_len=_option("salt_len", salt_len, 16),
            type=argon2.Type.ID,
        )

    def __repr__(self) -> str:
        p = self._hasher
        return (
            f"Argon2PasswordHasher(time_cost={p.time_cost}, memory_cost={p.memory_cost}, "
            f"parallelism={p.parallelism})"
        )

    def hash(self, password: str) -> str:
        value: object = password
        if not isinstance(value, str):
            raise InvalidInput("a password must be text")
        try:
            return self._hasher.hash(password)
        except HashingError as exc:  # e.g. the memory cost cannot be allocated
            raise BackendUnavailable(f"cannot hash the password: {exc}") from None

    def verify(self, password_hash: str, password: str) -> bool:
        values: tuple[object, object] = (password_hash, password)
        if not all(isinstance(value, str) for value in values):
            return False
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            # VerifyMismatchError (a wrong password) is a VerificationError.
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            return True
