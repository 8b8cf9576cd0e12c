"""The key rules every adapter applies: what passes, what fails, and what the error says."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalecore.errors import InvalidInput, InvalidKey
from scalecore.keys import (
    MAX_BLOB_KEY_BYTES,
    MAX_CACHE_KEY_BYTES,
    normalise_cache_key,
    validate_blob_key,
    validate_blob_prefix,
)

# -- blob keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "photos/2024/abc.jpg",
        "a/b",
        "a-b",
        ".hidden",
        "..dots",
        "a/.well-known/x",
        "with space.txt",
        "фото/猫.jpg",
        "emoji/😀",
        "e\u0301",  # decomposed é: kept as given, not normalised
        "x" * MAX_BLOB_KEY_BYTES,
        "é" * (MAX_BLOB_KEY_BYTES // 2),  # exactly the limit in UTF-8 bytes
        "~/tilde",
        "percent%2e%2e/x",  # escapes are plain characters, never decoded
    ],
)
def test_valid_blob_keys_are_returned_unchanged(key: str) -> None:
    assert validate_blob_key(key) is key


# Each bad key with the exact message a caller sees.
BAD_BLOB_KEYS = [
    ("", "blob key must not be empty"),
    ("..", "blob key has an empty, '.' or '..' segment: '..'"),
    ("../etc/passwd", "blob key has an empty, '.' or '..' segment: '../etc/passwd'"),
    ("a/../../b", "blob key has an empty, '.' or '..' segment: 'a/../../b'"),
    ("a/..", "blob key has an empty, '.' or '..' segment: 'a/..'"),
    (".", "blob key has an empty, '.' or '..' segment: '.'"),
    ("./a", "blob key has an empty, '.' or '..' segment: './a'"),
    ("a//b", "blob key has an empty, '.' or '..' segment: 'a//b'"),
    ("/etc/passwd", "blob key must be relative, not start with '/': '/etc/passwd'"),
    ("//server/share", "blob key must be relative, not start with '/': '//server/share'"),
    ("a/", "blob key must not end with '/': 'a/'"),
    ("a\\b", "blob key contains a backslash: 'a\\\\b'"),
    ("..\\..\\windows", "blob key contains a backslash: '..\\\\..\\\\windows'"),
    ("C:\\boot.ini", "blob key contains a backslash: 'C:\\\\boot.ini'"),
    ("a\x00b", "blob key contains a control character: 'a\\x00b'"),
    ("line\nbreak", "blob key contains a control character: 'line\\nbreak'"),
    ("tab\there", "blob key contains a control character: 'tab\\there'"),
    ("del\x7f", "blob key contains a control character: 'del\\x7f'"),
    ("esc\x1b[31m", "blob key contains a control character: 'esc\\x1b[31m'"),
    ("x" * (MAX_BLOB_KEY_BYTES + 1), "blob key is longer than 1024 bytes"),
    ("é" * (MAX_BLOB_KEY_BYTES // 2 + 1), "blob key is longer than 1024 bytes"),
    ("lone\ud800", "blob key is not valid UTF-8 text: 'lone\\ud800'"),
]


@pytest.mark.parametrize(
    ("key", "message"), BAD_BLOB_KEYS, ids=[repr(k)[:24] for k, _ in BAD_BLOB_KEYS]
)
def test_bad_blob_keys_raise_invalid_key_with_a_clear_message(key: str, message: str) -> None:
    with pytest.raises(InvalidKey) as caught:
        validate_blob_key(key)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (None, "blob key must be a string, not NoneType"),
        (b"photos/a.jpg", "blob key must be a string, not bytes"),
        (42, "blob key must be a string, not int"),
    ],
)
def test_non_string_blob_keys_are_refused(key: object, message: str) -> None:
    with pytest.raises(InvalidKey, match=f"^{re.escape(message)}$"):
        validate_blob_key(key)


def test_invalid_key_is_an_invalid_input_and_a_value_error() -> None:
    # The web layer maps InvalidInput to 400; plain ValueError handlers catch it too.
    with pytest.raises(InvalidInput):
        validate_blob_key("../x")
    with pytest.raises(ValueError):
        validate_blob_key("../x")


@given(st.text(min_size=1, max_size=40))
def test_a_valid_key_never_climbs_or_starts_at_the_root(key: str) -> None:
    try:
        validate_blob_key(key)
    except InvalidKey:
        return
    segments = key.split("/")
    assert not key.startswith("/")
    assert all(segment not in ("", ".", "..") for segment in segments)
    assert "\\" not in key
    assert not any(ord(char) < 0x20 or ord(char) == 0x7F for char in key)


# -- blob prefixes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prefix",
    ["", "a", "a/", "photos/2024/", "photos/20", ".", "..", "a/.", "a/..", "é", "x" * 1024],
)
def test_valid_prefixes_are_returned_unchanged(prefix: str) -> None:
    # A prefix may end mid-segment: "a/.." begins the valid key "a/..2024".
    assert validate_blob_prefix(prefix) is prefix


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("/", "blob prefix must be relative, not start with '/': '/'"),
        ("/a", "blob prefix must be relative, not start with '/': '/a'"),
        ("a//", "blob prefix has an empty, '.' or '..' segment: 'a/'"),
        ("../", "blob prefix has an empty, '.' or '..' segment: '..'"),
        ("../x", "blob prefix has an empty, '.' or '..' segment: '../x'"),
        ("a/./", "blob prefix has an empty, '.' or '..' segment: 'a/.'"),
        ("a\\", "blob prefix contains a backslash: 'a\\\\'"),
        ("a\x00", "blob prefix contains a control character: 'a\\x00'"),
        ("x" * 1025, "blob prefix is longer than 1024 bytes"),
        (None, "blob prefix must be a string, not NoneType"),
    ],
)
def test_bad_prefixes_raise_invalid_key(prefix: object, message: str) -> None:
    with pytest.raises(InvalidKey) as caught:
        validate_blob_prefix(prefix)
    assert str(caught.value) == message


@given(st.text(alphabet="ab./é", min_size=1, max_size=12))
def test_every_beginning_of_a_valid_key_is_a_valid_prefix(key: str) -> None:
    try:
        validate_blob_key(key)
    except InvalidKey:
        return
    for end in range(len(key) + 1):
        assert validate_blob_prefix(key[:end]) == key[:end]


# -- cache keys -----------------------------------------------------------------------------

_HASHED = re.compile(r"#[0-9a-f]{64}")


@pytest.mark.parametrize("key", ["user:42", "feed:v2:7", "a", "~!@$", "x" * 196])
def test_short_printable_cache_keys_stay_readable(key: str) -> None:
    assert normalise_cache_key(key) == key
    assert normalise_cache_key(key, namespace="app:") == "app:" + key


def test_a_printable_key_of_exactly_the_limit_stays_readable() -> None:
    key = "x" * MAX_CACHE_KEY_BYTES
    assert normalise_cache_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "has space",
        "tab\there",
        "new\nline",
        "nul\x00",
        "ünïcödé",
        "😀",
        "x" * (MAX_CACHE_KEY_BYTES + 1),
        "#looks-hashed",
        "lone\ud800",
    ],
)
def test_other_cache_keys_become_a_hash(key: str) -> None:
    normalised = normalise_cache_key(key)
    assert _HASHED.fullmatch(normalised), normalised
    assert normalise_cache_key(key, namespace="ns:") == "ns:" + normalised


def test_a_namespace_that_makes_the_key_too_long_hashes_it() -> None:
    key = "k" * (MAX_CACHE_KEY_BYTES - 2)
    assert normalise_cache_key(key) == key
    assert _HASHED.fullmatch(normalise_cache_key(key, namespace="ns:").removeprefix("ns:"))


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "cache key must not be empty"),
        (None, "cache key must be a string, not NoneType"),
        (b"k", "cache key must be a string, not bytes"),
    ],
)
def test_empty_or_non_string_cache_keys_are_refused(key: object, message: str) -> None:
    with pytest.raises(InvalidKey, match=f"^{re.escape(message)}$"):
        normalise_cache_key(key)


@given(st.text(min_size=1, max_size=300), st.sampled_from(["", "app:", "v2/"]))
def test_normalised_cache_keys_fit_memcached(key: str, namespace: str) -> None:
    normalised = normalise_cache_key(key, namespace=namespace)
    assert re.fullmatch(r"[!-~]+", normalised)
    assert len(normalised.encode()) <= max(MAX_CACHE_KEY_BYTES, len(namespace) + 65)
    assert normalise_cache_key(key, namespace=namespace) == normalised  # deterministic


@given(st.text(min_size=1, max_size=60), st.text(min_size=1, max_size=60))
def test_different_cache_keys_never_share_a_slot(first: str, second: str) -> None:
    if first != second:
        assert normalise_cache_key(first) != normalise_cache_key(second)


def test_a_readable_key_cannot_collide_with_a_hashed_one() -> None:
    hashed = normalise_cache_key("has space")
    # The hashed form itself, used as a key, starts with "#" and is hashed again.
    assert normalise_cache_key(hashed) != hashed
