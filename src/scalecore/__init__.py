"""scalecore: ports and scaling algorithms for a web back end that grows by config.

The core is pure: it defines the ports (what the application needs from storage, messaging
and caching), the models that cross them, and the algorithms that make scaling out safe.
Adapters live in the separate ``adapters`` package; the ``entrypoints`` package picks them
from a config file.
"""

from scalecore.capabilities import Capability
from scalecore.clock import Clock, ManualClock, SystemClock
from scalecore.errors import (
    AuthenticationFailed,
    BackendUnavailable,
    ConfigError,
    Conflict,
    InvalidInput,
    InvalidKey,
    LeaseLost,
    MissingDriverError,
    NotFound,
    PermissionDenied,
    ReadOnly,
    ScalecoreError,
    TooLarge,
    UnsupportedMediaType,
    UnsupportedOperation,
)
from scalecore.ports import (
    NO_VALUE,
    BlobInfo,
    BlobPage,
    BlobStore,
    BlobStream,
    Bus,
    Cache,
    CacheStats,
    Claim,
    JobLedger,
    Message,
    NoValue,
    Session,
    SessionStore,
    ShardRouter,
    Subscription,
)

__all__ = [
    "NO_VALUE",
    "AuthenticationFailed",
    "BackendUnavailable",
    "BlobInfo",
    "BlobPage",
    "BlobStore",
    "BlobStream",
    "Bus",
    "Cache",
    "CacheStats",
    "Capability",
    "Claim",
    "Clock",
    "ConfigError",
    "Conflict",
    "InvalidInput",
    "InvalidKey",
    "JobLedger",
    "LeaseLost",
    "ManualClock",
    "Message",
    "MissingDriverError",
    "NoValue",
    "NotFound",
    "PermissionDenied",
    "ReadOnly",
    "ScalecoreError",
    "Session",
    "SessionStore",
    "ShardRouter",
    "Subscription",
    "SystemClock",
    "TooLarge",
    "UnsupportedMediaType",
    "UnsupportedOperation",
]

__version__ = "0.1.0"
