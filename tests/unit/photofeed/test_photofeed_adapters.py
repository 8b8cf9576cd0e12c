"""The photo feed's non-repository adapters: Argon2PasswordHasher and PillowImageProcessor."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import pytest
from photofeed_world import image_bytes
from PIL import Image

from adapters.photofeed.images.pillow import PillowImageProcessor
from adapters.photofeed.passwords.argon2 import Argon2PasswordHasher
from scalecore.errors import ConfigError, UnsupportedMediaType

# -- Argon2PasswordHasher --------------------------------------------------------------


@pytest.fixture
def hasher() -> Argon2PasswordHasher:
    return Argon2PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def test_hashes_are_salted_argon2id_and_verify(hasher: Argon2PasswordHasher) -> None:
    first, second = hasher.hash("correct horse"), hasher.hash("correct horse")
    assert first.startswith("$argon2id$")
    assert first != second  # a fresh salt each time
    assert hasher.verify(first, "correct horse")
    assert hasher.verify(second, "correct horse")
    assert not hasher.verify(first, "correct horse!")
    assert not hasher.needs_rehash(first)


@pytest.mark.parametrize("bad_hash", ["", "plain", "$argon2id$v=19$garbage", "$2b$12$bcrypt"])
def test_malformed_hashes_never_verify_and_need_a_rehash(
    hasher: Argon2PasswordHasher, bad_hash: str
) -> None:
    assert not hasher.verify(bad_hash, "anything")
    assert hasher.needs_rehash(bad_hash)


def test_hashes_of_other_parameters_need_a_rehash_but_still_verify(
    hasher: Argon2PasswordHasher,
) -> None:
    stronger = Argon2PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    old = hasher.hash("password")
    assert stronger.needs_rehash(old)
    assert stronger.verify(old, "password")


def test_unicode_passwords_work(hasher: Argon2PasswordHasher) -> None:
    assert hasher.verify(hasher.hash("pässwörd 🔑"), "pässwörd 🔑")


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"time_cost": 0}, "time_cost"),
        ({"parallelism": 0}, "parallelism"),
        ({"memory_cost": 7, "parallelism": 1}, "memory_cost"),
        ({"memory_cost": 16, "parallelism": 4}, "memory_cost"),
        ({"hash_len": 8}, "hash_len"),
        ({"salt_len": True}, "salt_len"),
    ],
)
def test_bad_hasher_options_name_the_option(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Argon2PasswordHasher(**options)
    assert caught.value.key == key


def test_the_default_costs_are_rfc_9106_low_memory() -> None:
    assert "time_cost=3, memory_cost=65536, parallelism=4" in repr(Argon2PasswordHasher())


# -- PillowImageProcessor --------------------------------------------------------------


@pytest.fixture
def images() -> PillowImageProcessor:
    return PillowImageProcessor()


def process(images: PillowImageProcessor, data: bytes, **kwargs: Any) -> Any:
    options = {"thumbnail_size": 32, "max_pixels": 10_000_000, **kwargs}
    return images.process(io.BytesIO(data), **options)


@pytest.mark.parametrize(
    ("fmt", "content_type", "extension"),
    [
        ("JPEG", "image/jpeg", "jpg"),
        ("PNG", "image/png", "png"),
        ("GIF", "image/gif", "gif"),
        ("WEBP", "image/webp", "webp"),
    ],
)
def test_accepted_formats_are_recognised_from_their_bytes(
    images: PillowImageProcessor, fmt: str, content_type: str, extension: str
) -> None:
    result = process(images, image_bytes(fmt, (100, 50)))
    assert (result.content_type, result.extension) == (content_type, extension)
    assert (result.width, result.height) == (100, 50)
    thumb = Image.open(io.BytesIO(result.thumbnail.data))
    assert thumb.size == (32, 16) == (result.thumbnail.width, result.thumbnail.height)
    assert thumb.format == "JPEG"
    assert result.thumbnail.content_type == "image/jpeg"


def test_small_images_are_not_enlarged(images: PillowImageProcessor) -> None:
    result = process(images, image_bytes("PNG", (10, 6)))
    assert (result.thumbnail.width, result.thumbnail.height) == (10, 6)


@pytest.mark.parametrize(
    ("mode", "color", "transparency"),
    [("RGBA", (1, 2, 3, 0), None), ("LA", (10, 0), None), ("P", 0, 0)],
)
def test_transparent_images_get_png_thumbnails(
    images: PillowImageProcessor, mode: str, color: Any, transparency: int | None
) -> None:
    out = io.BytesIO()
    kwargs = {} if transparency is None else {"transparency": transparency}
    Image.new(mode, (40, 40), color).save(out, format="PNG", **kwargs)
    result = process(images, out.getvalue())
    assert result.thumbnail.content_type == "image/png"
    assert result.thumbnail.extension == "png"
    assert Image.open(io.BytesIO(result.thumbnail.data)).mode == "RGBA"


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_is_applied(images: PillowImageProcessor, orientation: int) -> None:
    result = process(images, image_bytes("JPEG", (64, 32), orientation=orientation))
    rotated = orientation in (6, 8)
    assert (result.width, result.height) == ((32, 64) if rotated else (64, 32))
    expected = (16, 32) if rotated else (32, 16)
    assert (result.thumbnail.width, result.thumbnail.height) == expected


def test_a_large_jpeg_is_decoded_at_reduced_scale(images: PillowImageProcessor) -> None:
    result = process(images, image_bytes("JPEG", (2000, 1000)), thumbnail_size=100)
    assert (result.width, result.height) == (2000, 1000)
    assert (result.thumbnail.width, result.thumbnail.height) == (100, 50)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def test_images_over_max_pixels_are_refused_before_decoding(images: PillowImageProcessor) -> None:
    with pytest.raises(UnsupportedMediaType, match="pixels"):
        process(images, png_header_only(5000, 5000), max_pixels=1_000_000)


@pytest.mark.parametrize("side", [10_000, 20_000], ids=["bomb-warning", "bomb-error"])
def test_decompression_bombs_are_unsupported_media(images: PillowImageProcessor, side: int) -> None:
    # 100 M pixels makes Pillow warn (an error here, as warnings are errors in tests);
    # 400 M makes it raise. Either way: refused, nothing decoded.
    with pytest.raises(UnsupportedMediaType):
        process(images, png_header_only(side, side), max_pixels=10**10)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GIF89a",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        image_bytes("PNG", (50, 50))[:-30],
        image_bytes("JPEG", (200, 200))[:300],
        b"%PDF-1.4 not an image",
        image_bytes("BMP", (4, 4)),
        image_bytes("TIFF", (4, 4)),
    ],
    ids=[
        "empty",
        "gif-magic",
        "png-magic",
        "truncated-png",
        "truncated-jpeg",
        "pdf",
        "bmp",
        "tiff",
    ],
)
def test_what_is_not_a_supported_image_is_refused(
    images: PillowImageProcessor, data: bytes
) -> None:
    with pytest.raises(UnsupportedMediaType):
        process(images, data)


def test_formats_can_be_narrowed(images: PillowImageProcessor) -> None:
    only_png = PillowImageProcessor(formats=["PNG"])
    process(only_png, image_bytes("PNG"))
    with pytest.raises(UnsupportedMediaType):
        process(only_png, image_bytes("JPEG"))


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"formats": []}, "formats"),
        ({"formats": "JPEG"}, "formats"),
        ({"formats": ["BMP"]}, "formats"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
        ({"jpeg_quality": 100}, "jpeg_quality"),
    ],
)
def test_bad_processor_options_name_the_option(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PillowImageProcessor(**options)
    assert caught.value.key == key
