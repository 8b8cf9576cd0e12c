"""Which sites the load test may load: loopback, unless told otherwise."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from scalecore.errors import ConfigError

__all__ = ["check_target"]


def check_target(target: str, *, allow_remote: bool = False) -> str:
    """The target URL without a trailing slash; ``ConfigError`` unless it is an http(s)
    URL on a loopback address (``allow_remote`` lifts that rule)."""
    split = urlsplit(target)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise ConfigError(f"--target must be an http:// or https:// URL, not {target!r}")
    if not allow_remote:
        host = split.hostname
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConfigError(
                f"--target {host} is not a loopback address; a load test sends real traffic, "
                "so a remote target needs --allow-remote"
            )
    return target.rstrip("/")
