"""Type aliases shared by the ports."""

from __future__ import annotations

from typing import TypeAlias

__all__ = ["JSONObject", "JSONValue"]

#: A value that survives ``json.dumps``/``json.loads`` unchanged. Ports carry only these:
#: sessions, cache entries and messages are JSON, never pickle.
JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None
JSONObject: TypeAlias = dict[str, JSONValue]
