"""The paired image's layout."""

from __future__ import annotations

from PIL import Image

from core.compose import Panel, compose_pair


def _img(color: str, size: int = 64) -> Image.Image:
    return Image.new("RGB", (size, size), color)


def test_panels_sit_side_by_side_at_the_same_height() -> None:
    two = compose_pair(
        [Panel("dfgan", "v1", 0.01, [_img("red")]), Panel("diffusion", "v2", 1.2, [_img("blue", 128)])],
        "a red circle",
        7,
    )
    three = compose_pair(
        [Panel("dfgan", "v1", 0.01, [_img("red")]), Panel("diffusion", "v2", 1.2, [_img("blue")]),
         Panel("hf-api", "v3", 3.0, [_img("green")])],
        "a red circle", 7,
    )  # fmt: skip
    assert three.width > two.width and three.height == two.height
    # The 64-px and 128-px pictures both fill a 256-px cell: sample the middle of each cell.
    y = 12 + 44 + 128
    assert two.getpixel((12 + 128, y)) == (255, 0, 0)
    assert two.getpixel((12 + 256 + 12 + 128, y)) == (0, 0, 255)


def test_several_images_per_engine_make_a_grid() -> None:
    one = compose_pair([Panel("dfgan", "v1", 0.1, [_img("red")])], "p", 1)
    three = compose_pair([Panel("dfgan", "v1", 0.1, [_img("red")] * 3)], "p", 1)
    assert three.height - one.height == 256 + 12  # 2×2 with one place empty: one more row
    assert three.width - one.width == 256 + 12  # and one more column
