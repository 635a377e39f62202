"""Pictures users upload to draw from (image-to-image): checked, normalised and kept in Redis by key.

An upload is checked by its content (never its name): PNG, JPEG or WebP only, at most
:data:`MAX_UPLOAD_BYTES`, at most :data:`MAX_UPLOAD_PIXELS` pixels (read from the header before any
pixel is decoded, so a decompression bomb is refused unopened), and complete. Its EXIF orientation is
applied and it is re-encoded as an RGB PNG, so the worker sees one format and no metadata. It is stored
under ``ib:upload:<32 hex>`` with the jobs' TTL and travels by that key, never as a path and never
through the broker.
"""

from __future__ import annotations

import io
import re
import uuid
import warnings

import redis
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import InputError

#: The formats an upload may have, by what Pillow reads in its header.
ALLOWED_FORMATS: dict[str, str] = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}
#: Largest upload in bytes.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: Largest upload in pixels (width × height): a 10 MB file can otherwise unpack to gigabytes.
MAX_UPLOAD_PIXELS = 4096 * 4096
#: How much of the picture image-to-image redraws when the user does not say (0: none, 1: all).
DEFAULT_STRENGTH = 0.6
UPLOAD_PREFIX = "ib:upload:"
_UPLOAD_KEY = re.compile(r"ib:upload:[0-9a-f]{32}")


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def check_size(size: int | None) -> None:
    """Refuse an upload of ``size`` bytes over :data:`MAX_UPLOAD_BYTES`: chat front-ends call it with
    the size the platform announces, before downloading (None, not announced, passes)."""
    if size is not None and size > MAX_UPLOAD_BYTES:
        raise InputError(
            "image_too_big", f"The image is {_megabytes(size)}; the limit is {_megabytes(MAX_UPLOAD_BYTES)}."
        )


def download_failed() -> InputError:
    """The answer when a chat platform would not hand over the picture a user sent."""
    return InputError(
        "image_download_failed", "I could not fetch the image from the chat service; please send it again."
    )


def _open_checked(data: bytes) -> Image.Image:
    """Open ``data`` lazily (header only) and check its format and pixel count."""
    if not data:
        raise InputError("image_empty", "The image you sent is empty (0 bytes).")
    check_size(len(data))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise InputError("image_too_many_pixels", _too_many_pixels_text(None)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InputError(
            "image_unreadable", "That file is not an image I can read. Send a PNG, JPEG or WebP picture."
        ) from None
    if image.format not in ALLOWED_FORMATS:
        raise InputError(
            "image_format",
            f"{image.format or 'This'} images are not accepted. Send a PNG, JPEG or WebP picture.",
        )
    width, height = image.size
    if width * height > MAX_UPLOAD_PIXELS:
        raise InputError("image_too_many_pixels", _too_many_pixels_text((width, height)))
    return image


def _too_many_pixels_text(size: tuple[int, int] | None) -> str:
    side = int(MAX_UPLOAD_PIXELS**0.5)
    what = f"The image is {size[0]}×{size[1]} pixels" if size else "The image has too many pixels"
    return f"{what}; the limit is {MAX_UPLOAD_PIXELS:,} pixels (e.g. {side}×{side})."


def check_upload(data: bytes) -> bytes:
    """The upload ``data`` as a PNG (RGB, EXIF orientation applied, no metadata).

    Raises:
        InputError: empty, too big, not an image, not PNG/JPEG/WebP, too many pixels, or truncated
            (codes ``image_empty``, ``image_too_big``, ``image_unreadable``, ``image_format``,
            ``image_too_many_pixels``, ``image_truncated``).
    """
    image = _open_checked(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except (OSError, ValueError, SyntaxError):
        raise InputError(
            "image_truncated", "The image is incomplete (the file was cut off). Please send it again."
        ) from None
    upright = ImageOps.exif_transpose(image).convert("RGB")
    if upright.width * upright.height > MAX_UPLOAD_PIXELS:  # pragma: no cover - transpose keeps the area
        raise InputError("image_too_many_pixels", _too_many_pixels_text(upright.size))
    out = io.BytesIO()
    upright.save(out, format="PNG")
    return out.getvalue()


def check_strength(strength: float | None) -> float:
    """``strength`` (None: :data:`DEFAULT_STRENGTH`) when it is within 0.0–1.0."""
    if strength is None:
        return DEFAULT_STRENGTH
    if not 0.0 <= strength <= 1.0:
        raise InputError(
            "strength_out_of_range", "--strength must be between 0.0 and 1.0, e.g. --strength 0.6."
        )
    return float(strength)


def is_upload_key(value: object) -> bool:
    """Whether ``value`` is exactly an upload key (``ib:upload:`` and 32 hex digits)."""
    return isinstance(value, str) and _UPLOAD_KEY.fullmatch(value) is not None


class UploadStore:
    """Checked uploads in Redis, each under its own key, expiring with the jobs that use them."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s

    def put(self, data: bytes) -> str:
        """Check ``data`` (:func:`check_upload`), store the PNG and return its key."""
        png = check_upload(data)
        key = f"{UPLOAD_PREFIX}{uuid.uuid4().hex}"
        self.redis.set(key, png, ex=self.ttl_s)
        return key

    def get(self, key: str) -> bytes | None:
        """The PNG stored under ``key``, or None when it expired; raises ValueError for a non-key."""
        if not is_upload_key(key):
            raise ValueError("not an upload key")
        value = self.redis.get(key)
        return value if isinstance(value, bytes) else None

    def image(self, key: str) -> Image.Image:
        """The upload under ``key`` as an RGB image.

        Raises:
            InputError: it expired (``image_expired``).
        """
        png = self.get(key)
        if png is None:
            raise InputError("image_expired", "The image this job starts from has expired; send it again.")
        with Image.open(io.BytesIO(png)) as image:
            return image.convert("RGB")
