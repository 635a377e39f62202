"""Uploaded pictures: checked by content, normalised to PNG, kept in (real) Redis by key."""

from __future__ import annotations

import io

import pytest
import redis
from PIL import Image

from core.errors import InputError
from core.uploads import (
    DEFAULT_STRENGTH,
    MAX_UPLOAD_BYTES,
    UploadStore,
    check_strength,
    check_upload,
    is_upload_key,
)


def encode(image: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def two_colours(width: int = 40, height: int = 20) -> Image.Image:
    """Left half red, right half blue: orientation is visible."""
    image = Image.new("RGB", (width, height), (255, 0, 0))
    image.paste((0, 0, 255), (width // 2, 0, width, height))
    return image


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_allowed_formats_come_back_as_rgb_png(fmt: str) -> None:
    png = check_upload(encode(two_colours(), fmt))
    with Image.open(io.BytesIO(png)) as out:
        assert out.format == "PNG"
        assert out.mode == "RGB"
        assert out.size == (40, 20)


def test_the_format_is_read_from_the_content_not_a_name() -> None:
    gif = encode(two_colours(), "GIF")
    with pytest.raises(InputError) as err:
        check_upload(gif)
    assert err.value.code == "image_format"
    assert "GIF" in err.value.message and "PNG, JPEG or WebP" in err.value.message


def test_not_an_image() -> None:
    with pytest.raises(InputError) as err:
        check_upload(b"%PDF-1.4 this is not a picture")
    assert err.value.code == "image_unreadable"


def test_empty() -> None:
    with pytest.raises(InputError) as err:
        check_upload(b"")
    assert err.value.code == "image_empty"


def test_too_big_in_bytes() -> None:
    with pytest.raises(InputError) as err:
        check_upload(encode(two_colours(), "PNG") + b"\0" * MAX_UPLOAD_BYTES)
    assert err.value.code == "image_too_big"
    assert "10.0 MB" in err.value.message


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # A 1-bit 20000×20000 PNG is a few kB on disk but 400 megapixels decoded.
    bomb = encode(Image.new("1", (20000, 20000)), "PNG")
    assert len(bomb) < MAX_UPLOAD_BYTES
    with pytest.raises(InputError) as err:
        check_upload(bomb)
    assert err.value.code == "image_too_many_pixels"


def test_just_over_the_pixel_cap() -> None:
    with pytest.raises(InputError) as err:
        check_upload(encode(Image.new("1", (4097, 4096)), "PNG"))
    assert err.value.code == "image_too_many_pixels"
    assert "4097×4096" in err.value.message


def test_truncated() -> None:
    data = encode(Image.effect_noise((128, 128), 64).convert("RGB"), "PNG")
    with pytest.raises(InputError) as err:
        check_upload(data[: len(data) // 2])
    assert err.value.code == "image_truncated"


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encode(two_colours(40, 20), "JPEG", exif=exif.tobytes(), quality=95)
    with Image.open(io.BytesIO(check_upload(data))) as out:
        assert out.size == (20, 40)  # turned upright
        top, bottom = out.getpixel((10, 5)), out.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # red (the left half) is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_strength() -> None:
    assert check_strength(None) == DEFAULT_STRENGTH
    assert check_strength(0.0) == 0.0 and check_strength(1.0) == 1.0
    for bad in (-0.1, 1.01):
        with pytest.raises(InputError) as err:
            check_strength(bad)
        assert err.value.code == "strength_out_of_range"


def test_store_by_key_with_ttl(clean_redis: redis.Redis) -> None:
    store = UploadStore(clean_redis, ttl_s=120)
    key = store.put(encode(two_colours(), "WEBP", lossless=True))
    assert is_upload_key(key)
    assert 0 < clean_redis.ttl(key) <= 120
    assert store.image(key).getpixel((0, 0)) == (255, 0, 0)
    clean_redis.delete(key)
    with pytest.raises(InputError) as err:
        store.image(key)
    assert err.value.code == "image_expired"


def test_store_refuses_what_is_not_a_key(clean_redis: redis.Redis) -> None:
    store = UploadStore(clean_redis, ttl_s=120)
    for bad in ("/etc/passwd", "ib:job:0123456789abcdef", "ib:upload:" + "0" * 32 + "\n"):
        assert not is_upload_key(bad)
        with pytest.raises(ValueError):
            store.get(bad)
