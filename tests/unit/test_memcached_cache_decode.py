"""The memcached cache reads an item's bytes exactly as ``json.loads`` would."""

from __future__ import annotations

import json

import pytest

from adapters.cache.memcached import _decode
from scalecore.ports.cache import NO_VALUE

SAME_AS_JSON_LOADS = [
    b'{"a":[1,2.5,"x",null,true]}',
    b"0",
    b'"text \\u00e9"',
    '"caf\u00e9"'.encode(),
    b' {"a": 1} ',  # blanks around: json.loads accepts them
    b"[1]\n",
    '\ufeff{"a":1}'.encode("utf-8"),  # a UTF-8 BOM
    '{"a":1}'.encode("utf-16"),
    '"x"'.encode("utf-16-le"),
    b"NaN",
]
NOT_JSON = [b"", b"not json", b"[1] [2]", b"\xff\xfe\xfd", b'{"a":1', b"[" * 100_000]


@pytest.mark.parametrize("data", SAME_AS_JSON_LOADS)
def test_reads_what_json_loads_reads(data: bytes) -> None:
    expected = json.loads(data)
    got = _decode(data)
    if expected != expected:  # NaN
        assert isinstance(got, float)
        assert got != got
    else:
        assert got == expected
        assert type(got) is type(expected)


@pytest.mark.parametrize("data", NOT_JSON)
def test_anything_else_is_no_value(data: bytes) -> None:
    assert _decode(data) is NO_VALUE
