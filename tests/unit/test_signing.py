"""HMAC URL signing: a signature binds one key to one expiry under one secret."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalecore.clock import ManualClock
from scalecore.errors import InvalidInput
from scalecore.signing import MIN_SECRET_BYTES, expiry_after, parse_expires, sign, verify

SECRET = b"s" * 32
START = 1_700_000_000.0


@pytest.fixture
def clock() -> ManualClock:
    """A clock standing at ``START`` until a test advances it."""
    return ManualClock(START)


def test_the_signature_is_hmac_sha256_of_expiry_newline_key() -> None:
    # The format is part of the contract: another process (or language) can check links.
    expected = hmac.new(SECRET, b"1700003600\nphotos/\xc3\xa9.jpg", hashlib.sha256).hexdigest()
    assert sign(SECRET, "photos/é.jpg", 1_700_003_600) == expected


def test_a_fresh_signature_verifies(clock: ManualClock) -> None:
    expires = expiry_after(clock, 60)
    signature = sign(SECRET, "a/b.jpg", expires)
    assert verify(SECRET, "a/b.jpg", expires, signature, clock=clock)
    assert verify(SECRET, "a/b.jpg", str(expires), signature, clock=clock)


def test_a_link_is_valid_until_its_expiry_second(clock: ManualClock) -> None:
    expires = expiry_after(clock, 60)
    signature = sign(SECRET, "k", expires)
    clock.advance(59.999)
    assert verify(SECRET, "k", expires, signature, clock=clock)
    clock.advance(0.001)  # now == expires: expired
    assert not verify(SECRET, "k", expires, signature, clock=clock)
    clock.advance(3600)
    assert not verify(SECRET, "k", expires, signature, clock=clock)


def test_expiry_after_rounds_up_so_a_link_lasts_at_least_the_time_asked() -> None:
    assert expiry_after(ManualClock(100.2), 60) == 161
    assert expiry_after(ManualClock(100.0), 60) == 160


@pytest.mark.parametrize(
    ("key", "expires_delta", "mutate"),
    [
        ("a/other.jpg", 0, None),  # another key
        ("a/b.jpg", 1, None),  # a later expiry
        ("a/b.jpg", -1, None),  # an earlier expiry
        ("A/B.JPG", 0, None),  # keys are case-sensitive
        ("a/b.jpg", 0, "flip"),  # one hex digit changed
        ("a/b.jpg", 0, "upper"),  # not the canonical lowercase form
        ("a/b.jpg", 0, "short"),  # truncated
        ("a/b.jpg", 0, "empty"),
    ],
)
def test_tampered_links_do_not_verify(
    clock: ManualClock, key: str, expires_delta: int, mutate: str | None
) -> None:
    expires = expiry_after(clock, 600)
    signature = sign(SECRET, "a/b.jpg", expires)
    if mutate == "flip":
        signature = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    elif mutate == "upper":
        signature = signature.upper()
    elif mutate == "short":
        signature = signature[:32]
    elif mutate == "empty":
        signature = ""
    assert not verify(SECRET, key, expires + expires_delta, signature, clock=clock)


def test_another_secret_does_not_verify(clock: ManualClock) -> None:
    expires = expiry_after(clock, 60)
    signature = sign(SECRET, "k", expires)
    assert not verify(b"t" * 32, "k", expires, signature, clock=clock)


@pytest.mark.parametrize(
    "expires",
    ["", "-5", "+5", " 5", "5 ", "1e9", "0x10", "5.0", "١٢٣", "9" * 16, None, True, 1.5, -1, [5]],
)
def test_malformed_expiries_never_verify_and_never_raise(
    clock: ManualClock, expires: object
) -> None:
    assert not verify(SECRET, "k", expires, "0" * 64, clock=clock)


@pytest.mark.parametrize("signature", [None, 5, b"0" * 64, "g" * 64, "0" * 63 + "é"])
def test_malformed_signatures_never_verify_and_never_raise(
    clock: ManualClock, signature: object
) -> None:
    assert not verify(SECRET, "k", 1_800_000_000, signature, clock=clock)


def test_a_non_string_key_never_verifies(clock: ManualClock) -> None:
    assert not verify(SECRET, b"k", 1_800_000_000, sign(SECRET, "k", 1_800_000_000), clock=clock)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [(0, 0), (17, 17), ("17", 17), ("0017", 17), ("999999999999999", 999_999_999_999_999)],
)
def test_parse_expires_accepts_ints_and_ascii_digits(value: object, parsed: int) -> None:
    assert parse_expires(value) == parsed


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (b"short", f"the signing secret must be at least {MIN_SECRET_BYTES} bytes long"),
        (b"x" * (MIN_SECRET_BYTES - 1), "the signing secret must be at least 16 bytes long"),
        ("a string secret!", "the signing secret must be bytes, not str"),
    ],
)
def test_a_weak_or_mistyped_secret_is_refused(
    clock: ManualClock, secret: object, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        sign(secret, "k", 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=message):
        verify(secret, "k", 1, "0" * 64, clock=clock)  # type: ignore[arg-type]


@pytest.mark.parametrize("expires_at", [-1, True, 1.5, "17"])
def test_sign_refuses_a_bad_expiry(expires_at: object) -> None:
    with pytest.raises(InvalidInput, match="expires_at must be a non-negative int"):
        sign(SECRET, "k", expires_at)  # type: ignore[arg-type]


def test_sign_refuses_a_non_string_key() -> None:
    with pytest.raises(InvalidInput, match="the signed key must be a string, not bytes"):
        sign(SECRET, b"k", 1)  # type: ignore[arg-type]


@given(
    secret=st.binary(min_size=MIN_SECRET_BYTES, max_size=64),
    key=st.text(max_size=50),
    lifetime=st.integers(min_value=1, max_value=7 * 24 * 3600),
    position=st.integers(min_value=0, max_value=63),
)
def test_any_link_verifies_and_any_one_digit_change_breaks_it(
    secret: bytes, key: str, lifetime: int, position: int
) -> None:
    clock = ManualClock(START)
    expires = expiry_after(clock, lifetime)
    signature = sign(secret, key, expires)
    assert len(signature) == 64
    assert verify(secret, key, expires, signature, clock=clock)
    replacement = "0" if signature[position] != "0" else "1"
    forged = signature[:position] + replacement + signature[position + 1 :]
    assert not verify(secret, key, expires, forged, clock=clock)


@given(first=st.text(max_size=20), second=st.text(max_size=20))
def test_different_keys_get_different_signatures(first: str, second: str) -> None:
    if first != second:
        assert sign(SECRET, first, 10) != sign(SECRET, second, 10)
