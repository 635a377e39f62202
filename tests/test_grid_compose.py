"""The paired image lays each engine's pictures out as a numbered grid (2×1 for two, 2×2 for three or
four) and keeps each picture's shape."""

from __future__ import annotations

import pytest
from PIL import Image

from core.compose import BACKGROUND, BADGE, Panel, compose_pair, grid_shape

CELL, PAD, LABEL = 256, 12, 44
COLOURS = [(255, 0, 0), (0, 0, 255), (0, 160, 0), (255, 160, 0)]


def pictures(count: int, size: tuple[int, int] = (64, 64)) -> list[Image.Image]:
    return [Image.new("RGB", size, COLOURS[i]) for i in range(count)]


@pytest.mark.parametrize(
    ("count", "shape"), [(1, (1, 1)), (2, (2, 1)), (3, (2, 2)), (4, (2, 2)), (6, (3, 2))]
)
def test_grid_shapes(count: int, shape: tuple[int, int]) -> None:
    assert grid_shape(count) == shape


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_pair_dimensions_follow_the_grid(count: int) -> None:
    columns, rows = grid_shape(count)
    one = compose_pair([Panel("dfgan", "v1", 0.1, pictures(1))], "p", 1)
    pair = compose_pair([Panel("dfgan", "v1", 0.1, pictures(count))], "p", 1)
    assert pair.width - one.width == (columns - 1) * (CELL + PAD)
    assert pair.height - one.height == (rows - 1) * (CELL + PAD)
    two_engines = compose_pair(
        [Panel("dfgan", "v1", 0.1, pictures(count)), Panel("diffusion", "v2", 0.2, pictures(count))], "p", 1
    )
    assert two_engines.width == 2 * pair.width - PAD and two_engines.height == pair.height


def picture_origin(index: int, columns: int, tile: int = CELL) -> tuple[int, int]:
    row, column = divmod(index, columns)
    return PAD + column * (tile + PAD), PAD + LABEL + row * (CELL + PAD)


@pytest.mark.parametrize("count", [2, 3, 4])
def test_each_picture_sits_in_its_place_numbered(count: int) -> None:
    pair = compose_pair([Panel("diffusion", "v", 0.1, pictures(count))], "p", 1)
    columns = grid_shape(count)[0]
    for index in range(count):
        x, y = picture_origin(index, columns)
        assert pair.getpixel((x + CELL // 2, y + CELL // 2)) == COLOURS[index]
        assert pair.getpixel((x + 5, y + 5)) == BADGE  # the number's box in the top-left corner
        box = pair.crop((x + 4, y + 4, x + 30, y + 30))
        assert any(min(p) > 180 for p in box.get_flattened_data())  # its digit, light on dark (no picture is)
    if count == 3:  # the fourth place stays empty
        x, y = picture_origin(3, columns)
        assert pair.getpixel((x + CELL // 2, y + CELL // 2)) == BACKGROUND


def test_a_single_picture_has_no_number() -> None:
    pair = compose_pair([Panel("diffusion", "v", 0.1, pictures(1))], "p", 1)
    assert pair.getpixel((PAD + 5, PAD + LABEL + 5)) == COLOURS[0]


def test_wide_pictures_keep_their_shape_in_the_grid() -> None:
    wide = pictures(4, (88, 48))
    pair = compose_pair([Panel("diffusion", "v", 0.1, wide)], "p", 1)
    tile = round(88 * CELL / 48)  # 469: 256 high, as wide as the ratio says
    assert pair.width == PAD + 2 * tile + PAD + PAD
    for index in range(4):
        x, y = picture_origin(index, 2, tile)
        assert pair.getpixel((x + tile - 2, y + CELL // 2)) == COLOURS[index]
        assert pair.getpixel((x + tile + 2, y + CELL // 2)) == BACKGROUND  # the gap after it
    tall = compose_pair([Panel("dfgan", "v", 0.1, pictures(2, (48, 88)))], "p", 1)
    tall_tile = round(48 * CELL / 88)  # 140 < 256: the column keeps the label's width, grid centred
    assert tall.width == PAD + max(2 * tall_tile + PAD, CELL) + PAD
