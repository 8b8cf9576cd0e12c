"""ShardRouter: which shard holds a key."""

from __future__ import annotations

import abc

__all__ = ["ShardKey", "ShardRouter"]

#: What can be routed: an integer (a logical shard, a user number) or text (a username).
ShardKey = int | str


class ShardRouter(abc.ABC):
    """Maps keys to shard indexes ``0 .. shard_count - 1``.

    The mapping is a pure function of the key and the router's configuration: the same key
    gives the same shard in every process, on every host, after every restart.
    """

    @property
    @abc.abstractmethod
    def shard_count(self) -> int:
        """How many shards there are."""

    @abc.abstractmethod
    def shard_for(self, key: ShardKey) -> int:
        """Return the shard index that holds ``key``."""
