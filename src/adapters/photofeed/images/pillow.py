"""Image decoding and thumbnails with Pillow, hardened for untrusted uploads.

Backend: "pillow"
Install extra: none (Pillow is a core dependency)
Options: formats (the accepted formats, Pillow names; default ("JPEG", "PNG", "GIF",
    "WEBP")); jpeg_quality (1-95 for JPEG thumbnails, default 85).
Differs from the port: nothing. Only the listed decoders are tried, so exotic formats
    with a history of decoder bugs are never touched. Animated GIF and WebP are accepted;
    the thumbnail shows the first frame.

Decompression bombs: the pixel count is read from the header and checked against
``max_pixels`` before any pixel is decoded. Pillow's own guard (``Image.MAX_IMAGE_PIXELS``)
raises ``DecompressionBombError`` above twice its limit and warns above it; both are
turned into ``UnsupportedMediaType`` where they surface (the warning surfaces as an
exception only where warnings are errors, as in the tests). The global limit and the
warning filters are deliberately left alone: both are process-wide, and changing them
from a request thread would race with every other thread.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import BinaryIO

from PIL import ExifTags, Image, ImageOps

from scalecore.errors import ConfigError, UnsupportedMediaType
from scalecore.photofeed.ports import ImageProcessor, ProcessedImage, Rendition
from scalecore.validate import check_int

__all__ = ["PillowImageProcessor"]

#: Pillow format -> (content type, file extension).
_KNOWN = {
    "JPEG": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "GIF": ("image/gif", "gif"),
    "WEBP": ("image/webp", "webp"),
}
#: EXIF orientations that turn the picture a quarter turn: width and height swap.
_QUARTER_TURNS = frozenset({5, 6, 7, 8})


class PillowImageProcessor(ImageProcessor):
    """Decodes JPEG, PNG, GIF and WebP; thumbnails are JPEG, or PNG when transparent."""

    def __init__(
        self,
        *,
        formats: Sequence[str] = ("JPEG", "PNG", "GIF", "WEBP"),
        jpeg_quality: int = 85,
    ) -> None:
        if isinstance(formats, str) or not formats or any(f not in _KNOWN for f in formats):
            raise ConfigError(
                f"must be a non-empty list of {', '.join(_KNOWN)}, got {formats!r}",
                key="formats",
            )
        check_int(jpeg_quality, "jpeg_quality", minimum=1, maximum=95, error=ConfigError)
        self.formats = tuple(formats)
        self.jpeg_quality = jpeg_quality

    def process(self, source: BinaryIO, *, thumbnail_size: int, max_pixels: int) -> ProcessedImage:
        try:
            return self._process(source, thumbnail_size, max_pixels)
        except (UnsupportedMediaType, MemoryError):
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise UnsupportedMediaType("the image has too many pixels") from exc
        except Exception as exc:
            # Decoders of untrusted bytes fail in many ways (OSError, SyntaxError,
            # ValueError, struct.error, EOFError ...): each means "not an image we take".
            raise UnsupportedMediaType("the upload is not a supported image") from exc

    def _process(self, source: BinaryIO, size: int, max_pixels: int) -> ProcessedImage:
        with Image.open(source, formats=list(self.formats)) as image:
            if image.format not in _KNOWN:
                raise UnsupportedMediaType("the upload is not a supported image")
            content_type, extension = _KNOWN[image.format]
            width, height = image.size
            if width < 1 or height < 1 or width * height > max_pixels:
                raise UnsupportedMediaType(
                    f"the image has {width}x{height} pixels; at most {max_pixels} are accepted"
                )
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
            if orientation in _QUARTER_TURNS:
                width, height = height, width
            if image.format == "JPEG":
                # Decode at 1/2, 1/4 or 1/8 scale when that still covers the thumbnail:
                # the full data is still read (so truncation is caught), in less memory.
                image.draft("RGB", (size, size))
            image.load()
            thumbnail = self._thumbnail(image, size)
        return ProcessedImage(
            content_type=content_type,
            extension=extension,
            width=width,
            height=height,
            thumbnail=thumbnail,
        )

    def _thumbnail(self, image: Image.Image, size: int) -> Rendition:
        picture = ImageOps.exif_transpose(image)
        transparent = picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info
        # Palette images with a transparent colour must become RGBA before anything else,
        # or Pillow drops the transparency (and warns).
        picture = picture.convert("RGBA" if transparent else "RGB")
        picture.thumbnail((size, size), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        if transparent:
            picture.save(out, format="PNG", optimize=True)
            content_type, extension = "image/png", "png"
        else:
            picture.save(out, format="JPEG", quality=self.jpeg_quality, optimize=True)
            content_type, extension = "image/jpeg", "jpg"
        return Rendition(
            data=out.getvalue(),
            content_type=content_type,
            extension=extension,
            width=picture.width,
            height=picture.height,
        )
