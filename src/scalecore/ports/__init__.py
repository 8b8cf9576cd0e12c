"""The ports: what the application needs from the outside world, and what each promises.

One module per port. Each port is an abstract class whose method docstrings are the
contract every adapter keeps; ``tests/contract`` holds the executable form of the same
promises, run against every adapter.
"""

from scalecore.ports.blobstore import BlobInfo, BlobPage, BlobStore, BlobStream
from scalecore.ports.bus import Bus, Handler, Message, Subscription
from scalecore.ports.cache import NO_VALUE, Cache, CacheStats, NoValue
from scalecore.ports.ledger import Claim, JobLedger
from scalecore.ports.sessions import Session, SessionStore
from scalecore.ports.sharding import ShardRouter

__all__ = [
    "NO_VALUE",
    "BlobInfo",
    "BlobPage",
    "BlobStore",
    "BlobStream",
    "Bus",
    "Cache",
    "CacheStats",
    "Claim",
    "Handler",
    "JobLedger",
    "Message",
    "NoValue",
    "Session",
    "SessionStore",
    "ShardRouter",
    "Subscription",
]
