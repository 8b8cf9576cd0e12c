"""The one exception tree every scalecore component raises.

::

    ScalecoreError
    ├── ConfigError                 configuration is missing, malformed or inconsistent;
    │   │                           the message names the offending key
    │   └── MissingDriverError      the configured adapter needs an extra that is not installed
    ├── InvalidInput (ValueError)   a caller passed something the port refuses
    │   ├── InvalidKey              a blob, cache or session key breaks the key rules
    │   ├── TooLarge                an upload or payload exceeds its configured limit
    │   └── UnsupportedMediaType    content is not of a kind the service accepts
    ├── AuthenticationFailed        no valid credentials or session were presented
    ├── PermissionDenied            the caller is known but may not do this
    ├── NotFound (LookupError)      the thing asked for does not exist (or has expired)
    ├── Conflict                    a concurrent change won; re-read and retry
    │   └── LeaseLost               a lease or claim is no longer held by its owner
    ├── UnsupportedOperation        the adapter does not declare the capability asked for
    └── BackendUnavailable          a server could not be reached or failed; retryable
        ├── ReadOnly                the deployment refuses writes for now (a data move);
        │                           ``retry_after`` says when to try again
        └── ShardMoved              a logical shard is moving; retry on its new owner

Adapters translate their driver's exceptions into this tree at the edge (``raise ... from
exc``), so no boto3, pika, pymemcache or SQLAlchemy exception reaches a caller.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "BackendUnavailable",
    "ConfigError",
    "Conflict",
    "InvalidInput",
    "InvalidKey",
    "LeaseLost",
    "MissingDriverError",
    "NotFound",
    "PermissionDenied",
    "ReadOnly",
    "ScalecoreError",
    "ShardMoved",
    "TooLarge",
    "UnsupportedMediaType",
    "UnsupportedOperation",
]


class ScalecoreError(Exception):
    """Root of every error scalecore raises on purpose."""


class ConfigError(ScalecoreError):
    """Configuration is missing, malformed or inconsistent.

    ``key`` is the dotted config path at fault (``"cache.ttl"``), when there is one.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


class MissingDriverError(ConfigError):
    """The configured adapter imports a client library that is not installed."""


class InvalidInput(ScalecoreError, ValueError):
    """A caller passed a value the port refuses; nothing was changed."""


class InvalidKey(InvalidInput):
    """A key breaks the key rules shared by every adapter of a port."""


class TooLarge(InvalidInput):
    """An upload or payload is larger than the configured limit; nothing was stored."""


class UnsupportedMediaType(InvalidInput):
    """Content is not of a kind the service accepts (e.g. an upload that is not an image)."""


class AuthenticationFailed(ScalecoreError):
    """Credentials or a session were missing, wrong or expired."""


class PermissionDenied(ScalecoreError):
    """The caller is authenticated but not allowed to do this."""


class NotFound(ScalecoreError, LookupError):
    """The requested object, session, message or record does not exist."""


class Conflict(ScalecoreError):
    """A concurrent writer changed the object first; the caller may re-read and retry."""


class LeaseLost(Conflict):
    """The lease or claim is held by someone else now (it expired and was taken over).

    Work done under a lost lease must not be published: a newer holder, with a higher
    fencing token, owns the resource.
    """


class UnsupportedOperation(ScalecoreError):
    """The adapter does not declare the capability this operation needs."""


class BackendUnavailable(ScalecoreError):
    """A backing server is unreachable or failed mid-request. Retrying may succeed."""


class ReadOnly(BackendUnavailable):
    """The deployment is switched to read-only (``[deployment] read_only``): reads are
    served, this write was refused before anything changed. Retrying after
    ``retry_after`` seconds may succeed, once the switch is off again.
    """

    def __init__(self, message: str, *, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class ShardMoved(BackendUnavailable):
    """A database refused a write (or a read) of a logical shard it no longer owns.

    Raised while a logical shard moves to another database (online resharding). The
    sharded database retries on the new owner by itself; this reaches a caller only when
    the move did not finish within the retry window, so retrying after ``retry_after``
    seconds succeeds. ``moved_to`` is the new owner's identity when the old one said.
    """

    def __init__(
        self, message: str, *, moved_to: str | None = None, retry_after: float = 1.0
    ) -> None:
        super().__init__(message)
        self.moved_to = moved_to
        self.retry_after = retry_after
