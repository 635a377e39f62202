"""COCO, Flickr8k, CUB and emoji datasets, DF-GAN's transforms, and the preprocess cache.

Every fixture is written here in the dataset's real on-disk format (tiny JPEGs, a COCO annotation
json, Flickr8k.token.txt, CUB pickles and caption files); nothing is downloaded.
"""

from __future__ import annotations

import json
import pickle
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from training.data import dataset_names, get_dataset
from training.data.captions import DatasetFilesMissing
from training.data.emoji import FONT_PATHS
from training.data.preprocess import CachedDataset, preprocess
from training.data.transforms import ImageTransform, bbox_crop

torch.set_num_threads(1)

RED, BLUE, GREEN = (220, 30, 30), (30, 30, 220), (30, 200, 30)


def _photo(
    path: Path, size: tuple[int, int] = (120, 90), box: tuple[int, int, int, int] | None = None
) -> None:
    """A JPEG: blue, with a green left edge (so a flip is visible) and an optional red box."""
    image = Image.new("RGB", size, BLUE)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, size[0] // 4, size[1]), fill=GREEN)
    if box is not None:
        x, y, w, h = box
        draw.rectangle((x, y, x + w - 1, y + h - 1), fill=RED)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=95)


# --- fixtures in each dataset's real format ---------------------------------------------------------

COCO_CAPTIONS = {
    1: ["A Man riding a wave, on a surfboard!", "Surfer   on a big wave."],
    2: ["Two giraffes standing next to a tall tree in the zoo today", "Giraffes by a tree."],
    3: ["A red bus on the street."],
}


@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    images, annotations = [], []
    for image_id, captions in COCO_CAPTIONS.items():
        name = f"COCO_train2014_{image_id:012d}.jpg"
        _photo(tmp_path / "train2014" / name, (100 + 10 * image_id, 80))
        images.append({"id": image_id, "file_name": name, "width": 100 + 10 * image_id, "height": 80})
        for caption in captions:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "caption": caption})
    (tmp_path / "annotations").mkdir()
    coco = {"info": {}, "licenses": [], "images": images, "annotations": annotations}
    (tmp_path / "annotations" / "captions_train2014.json").write_text(json.dumps(coco))
    return tmp_path


@pytest.fixture
def flickr_dir(tmp_path: Path) -> Path:
    lines = []
    for k, name in enumerate(["1000_a.jpg", "2000_b.jpg", "3000_c.jpg"]):
        _photo(tmp_path / "Flicker8k_Dataset" / name, (90, 110))
        lines += [f"{name}#{i}\tA dog number {k} runs , caption {i} ." for i in range(5)]
    lines.append("9999_gone.jpg.1#0\tAn image the archive lacks .")  # Flickr8k really has such a line
    text = tmp_path / "Flickr8k_text"
    text.mkdir()
    (text / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    (text / "Flickr_8k.trainImages.txt").write_text("1000_a.jpg\n2000_b.jpg\n9999_gone.jpg.1\n")
    (text / "Flickr_8k.testImages.txt").write_text("3000_c.jpg\n")
    return tmp_path


CUB_KEYS = {
    "train": ["001.Black_footed_Albatross/Black_Footed_Albatross_0001_1", "002.Laysan/Laysan_0002_2"],
    "test": ["002.Laysan/Laysan_0003_3"],
}
CUB_BOX = (5, 5, 30, 24)  # x, y, w, h of the red "bird" in every fixture image, near a corner


@pytest.fixture
def cub_dir(tmp_path: Path) -> Path:
    birds = tmp_path / "birds"
    image_lines, box_lines = [], []
    for split, keys in CUB_KEYS.items():
        (birds / split).mkdir(parents=True)
        # DF-GAN's pickles were written by Python 2: protocol 2, and bytes would come back as str.
        (birds / split / "filenames.pickle").write_bytes(pickle.dumps(keys, protocol=2))
        for key in keys:
            _photo(birds / "CUB_200_2011" / "images" / f"{key}.jpg", box=CUB_BOX)
            captions = [f"this bird {key.split('_')[-1]} has a red body and caption {i}" for i in range(10)]
            (birds / "text" / key).parent.mkdir(parents=True, exist_ok=True)
            (birds / "text" / f"{key}.txt").write_text("\n".join(captions) + "\n")
            image_lines.append(f"{len(image_lines) + 1} {key}.jpg")
            box_lines.append(f"{len(box_lines) + 1} " + " ".join(f"{v:.1f}" for v in CUB_BOX))
    (birds / "CUB_200_2011" / "images.txt").write_text("\n".join(image_lines) + "\n")
    (birds / "CUB_200_2011" / "bounding_boxes.txt").write_text("\n".join(box_lines) + "\n")
    return tmp_path


def _red_fraction(image: torch.Tensor) -> float:
    pixels = (image + 1) * 127.5
    return ((pixels[0] > 150) & (pixels[2] < 100)).float().mean().item()


def _green_fraction(column: torch.Tensor) -> float:
    pixels = (column + 1) * 127.5
    return ((pixels[1] > 150) & (pixels[0] < 100)).float().mean().item()


# --- item contract --------------------------------------------------------------------------------


def test_registry_knows_every_dataset() -> None:
    assert {"shapes", "emoji", "coco", "flickr8k", "cub", "cache"} <= set(dataset_names())


def test_coco_items_are_images_in_range_with_a_caption_of_that_image(coco_dir: Path) -> None:
    # count is what the train command always passes; a file dataset ignores it.
    data = get_dataset("coco", coco_dir, imsize=64, count=10_000, seed=0)
    assert len(data) == 3 and len(data.captions) == 3 and len(data.sample_prompts) >= 4
    for index, image_id in enumerate(sorted(COCO_CAPTIONS)):
        image, caption = data[index]
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        assert -1.0 <= image.min().item() and image.max().item() <= 1.0
        assert image.min().item() < -0.5 and image.max().item() > 0.5  # really scaled, not squashed
        assert caption in {
            " ".join(c.lower().replace(",", "").replace("!", "").replace(".", "").split())
            for c in COCO_CAPTIONS[image_id]
        }


def test_captions_are_lowercased_word_tokens(coco_dir: Path) -> None:
    data = get_dataset("coco", coco_dir, imsize=64, train=False)
    assert data.records[0].captions == ("a man riding a wave on a surfboard", "surfer on a big wave")
    assert data.captions[0] == "a man riding a wave on a surfboard"


def test_max_tokens_cuts_captions_to_that_many_words(coco_dir: Path) -> None:
    data = get_dataset("coco", coco_dir, imsize=64, max_tokens=4, pairing="all")
    assert data.captions[:2] == ["a man riding a", "surfer on a big"]
    assert data.captions[2] == "two giraffes standing next"
    assert all(len(c.split()) <= 4 for c in data.captions)
    assert all(len(data[i][1].split()) <= 4 for i in range(len(data)))


def test_random_pairing_draws_each_caption_of_an_image(coco_dir: Path) -> None:
    data = get_dataset("coco", coco_dir, imsize=64, seed=1)
    drawn = Counter(data[0][1] for _ in range(40))
    assert set(drawn) == set(data.records[0].captions)


def test_all_pairing_has_one_fixed_item_per_caption(coco_dir: Path) -> None:
    data = get_dataset("coco", coco_dir, imsize=64, pairing="all")
    assert len(data) == sum(len(c) for c in COCO_CAPTIONS.values()) == len(data.captions)
    for index in range(len(data)):
        assert data[index][1] == data.captions[index]


# --- transforms -----------------------------------------------------------------------------------


def test_train_transform_crops_and_flips_at_random_eval_transform_never_flips(tmp_path: Path) -> None:
    _photo(tmp_path / "p.jpg", (100, 80))
    image = Image.open(tmp_path / "p.jpg").convert("RGB")
    train, evaluate = ImageTransform(64, train=True), ImageTransform(64, train=False)
    rng = random.Random(0)
    outs = [train(image, rng) for _ in range(30)]
    assert all(o.shape == (3, 64, 64) for o in outs)
    # The green band is on the left; a flipped crop has it on the right.
    flipped = [_green_fraction(o[:, :, -1]) > 0.9 for o in outs]
    assert 5 < sum(flipped) < 25
    assert len({o.numpy().tobytes() for o in outs}) > 10  # crop offsets vary too
    centre = [evaluate(image, rng) for _ in range(3)]
    assert all(torch.equal(centre[0], c) for c in centre) and _green_fraction(centre[0][:, :, 0]) > 0.9
    # Resize short side 80 -> 76 (100 -> 95), centre crop 64.
    resized = image.resize((95, 76), Image.Resampling.BILINEAR).crop((15, 6, 79, 70))
    expected = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1) / 127.5 - 1
    assert torch.allclose(centre[0], expected)


def test_same_seed_gives_the_same_crops_flips_and_captions(cub_dir: Path) -> None:
    def items(seed: int) -> list[tuple[bytes, str]]:
        data = get_dataset("cub", cub_dir, imsize=64, seed=seed)
        return [(data[i % 2][0].numpy().tobytes(), data[i % 2][1]) for i in range(12)]

    assert items(3) == items(3)
    assert items(3) != items(4)


def test_cub_crops_to_the_bird_box_like_dfgan(cub_dir: Path) -> None:
    cropped = get_dataset("cub", cub_dir, imsize=64, train=False)
    whole = get_dataset("cub", cub_dir, imsize=64, train=False, bbox=False)
    # The corner box is mostly outside the whole image's centre crop, but DF-GAN's crop (a square
    # 1.5x the box's long side around it, clipped to the image) is centred on it.
    assert _red_fraction(cropped[0][0]) > 0.3
    assert _red_fraction(whole[0][0]) < 0.1
    assert bbox_crop(Image.new("RGB", (120, 90)), (30, 20, 40, 30)).size == (60, 60)
    assert bbox_crop(Image.new("RGB", (120, 90)), CUB_BOX).size == (42, 39)  # clipped at the corner


def test_cub_reads_splits_and_ten_captions(cub_dir: Path) -> None:
    train = get_dataset("cub", cub_dir / "birds", imsize=64)  # the birds/ folder itself works too
    test = get_dataset("cub", cub_dir, imsize=64, split="test")
    assert len(train) == 2 and len(test) == 1
    assert all(len(r.captions) == 10 for r in train.records)
    assert train.captions[0] == "this bird 1 has a red body and caption 0"
    assert test.records[0].image.name == "Laysan_0003_3.jpg"


def test_cub_pickle_may_hold_only_strings(cub_dir: Path) -> None:
    # A pickle naming any class (here pathlib's) could run code on load; it is refused.
    pickle_file = cub_dir / "birds" / "train" / "filenames.pickle"
    pickle_file.write_bytes(pickle.dumps([Path("001.x/y")]))
    with pytest.raises(pickle.UnpicklingError, match="only strings"):
        get_dataset("cub", cub_dir, imsize=64)


def test_flickr8k_splits_and_skips_listed_images_that_are_missing(flickr_dir: Path) -> None:
    with pytest.warns(UserWarning, match="1 image file"):
        train = get_dataset("flickr8k", flickr_dir, imsize=64)
    assert [r.image.name for r in train.records] == ["1000_a.jpg", "2000_b.jpg"]
    assert train.records[0].captions[3] == "a dog number 0 runs caption 3"
    test = get_dataset("flickr8k", flickr_dir, imsize=64, split="test")
    assert [r.image.name for r in test.records] == ["3000_c.jpg"]
    assert test[0][0].shape == (3, 64, 64)
    with pytest.warns(UserWarning):
        assert len(get_dataset("flickr8k", flickr_dir, imsize=64, split="all")) == 3
    # Re-packs that fix the archive's "Flicker" spelling are found too.
    (flickr_dir / "Flicker8k_Dataset").rename(flickr_dir / "Flickr8k_Dataset")
    assert len(get_dataset("flickr8k", flickr_dir, imsize=64, split="test")) == 1


def test_limit_keeps_the_first_images(coco_dir: Path) -> None:
    assert len(get_dataset("coco", coco_dir, imsize=64, limit=2)) == 2


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("coco", "annotations/captions_train2014.json"),
        ("flickr8k", "Flickr8k.token.txt"),
        ("cub", "filenames.pickle"),
    ],
)
def test_missing_files_error_names_the_file_and_the_layout(tmp_path: Path, name: str, expected: str) -> None:
    with pytest.raises(DatasetFilesMissing) as raised:
        get_dataset(name, tmp_path, imsize=64)
    message = str(raised.value)
    assert expected in message and "Expected layout" in message and str(tmp_path) in message
    assert isinstance(raised.value, ValueError)  # what the train commands turn into a user message


def test_missing_image_folder_is_named(coco_dir: Path) -> None:
    import shutil

    shutil.rmtree(coco_dir / "train2014")
    with pytest.raises(DatasetFilesMissing, match="train2014"):
        get_dataset("coco", coco_dir, imsize=64)


# --- emoji ------------------------------------------------------------------------------------------

_FONT = next((p for p in FONT_PATHS if p.is_file()), None)
needs_font = pytest.mark.skipif(
    _FONT is None, reason="Noto Color Emoji font not installed (apt-get install fonts-noto-color-emoji)"
)


def test_emoji_without_font_or_cache_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.data import emoji

    monkeypatch.setattr(emoji, "FONT_PATHS", (tmp_path / "none.ttf",))
    with pytest.raises(emoji.EmojiSourceMissing, match="apt-get install fonts-noto-color-emoji"):
        get_dataset("emoji", tmp_path, imsize=64)


@needs_font
def test_emoji_font_has_over_a_thousand_named_emoji() -> None:
    from training.data.emoji import emoji_codepoints

    codepoints = emoji_codepoints(_FONT)
    assert len(codepoints) > 1300
    assert 0x1F600 in codepoints and 0x1F1E6 not in codepoints and ord("1") not in codepoints


@needs_font
def test_emoji_cache_is_built_once_then_read_without_the_font(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.data import emoji

    wanted = [0x1F600, 0x1F34E, 0x1F436, 0x1F680, 0x2603, 0x1F4A9]  # a subset keeps the test quick
    monkeypatch.setattr(emoji, "emoji_codepoints", lambda font: wanted)
    data = get_dataset("emoji", tmp_path, imsize=64, train=False)
    cache = tmp_path / "datasets" / "emoji"
    index = json.loads((cache / "captions.json").read_text())
    assert [i["codepoint"] for i in index["items"]][0] == "U+1F600" and "Open Font License" in index[
        "licence"
    ]
    # One item per (image, caption): the CLDR short name first, then its phrasings and the aliases.
    assert data.captions[:3] == ["grinning face", "a grinning face", "grinning face emoji"]
    assert set(data.records[0].captions) >= {"grinning face", "grinning face emoji"}
    assert data.records[1].captions[0] == "red apple"
    png = Image.open(cache / "u1f600.png")
    assert png.mode == "RGBA" and png.size == (emoji.CANVAS, emoji.CANVAS)
    image, _ = data[0]
    assert image.shape == (3, 64, 64) and not data.transform.flip  # a mirrored arrow contradicts its name
    corner = (image[:, 0, 0] + 1) * 127.5  # transparent corner -> the mid-grey background
    assert torch.allclose(corner, torch.tensor([150.0, 150.0, 150.0]), atol=1)
    face = (image[:, 32, 20] + 1) * 127.5  # the grinning face is yellow
    assert face[0] > 200 and face[2] < 120
    # Second use: no font needed, nothing re-rendered.
    monkeypatch.setattr(emoji, "FONT_PATHS", (tmp_path / "none.ttf",))
    stamp = (cache / "captions.json").stat().st_mtime_ns
    again = get_dataset("emoji", tmp_path, imsize=64)
    assert len(again.records) == len(wanted) and (cache / "captions.json").stat().st_mtime_ns == stamp


# --- preprocess cache -----------------------------------------------------------------------------


def test_preprocess_round_trip_keeps_images_captions_and_tokens(cub_dir: Path, tmp_path: Path) -> None:
    source = get_dataset("cub", cub_dir, imsize=64, train=False, max_tokens=6)
    out = preprocess(source, tmp_path / "cub.pt", text_encoder="minilm")
    cached = get_dataset("cache", out, imsize=64, train=False)
    assert isinstance(cached, CachedDataset) and len(cached) == len(source)
    assert cached.images.dtype == torch.uint8 and cached.images.shape == (2, 3, 76, 76)
    for i in range(len(source)):
        # Cached = centre square of the resized image; its centre crop is the source's centre crop.
        assert torch.allclose(cached[i][0], source[i][0], atol=1e-6)
        assert cached.image_captions[i] == list(source.records[i].captions)
    assert cached.tokens[0][0] == ["this", "bird", "1", "has", "a", "red"]
    assert cached.sample_prompts == source.sample_prompts
    assert cached.embeddings is not None and cached.embeddings.shape == (20, 384)
    from training.text.encoders import load_text_encoder

    row = cached.caption_rows[1][3]
    expected = load_text_encoder("minilm").encode([cached.image_captions[1][3]])[0]
    assert torch.allclose(cached.embeddings[row], expected, atol=1e-5)
    # Training mode from the cache still crops and flips at random.
    augmented = get_dataset("cache", out, seed=0)
    assert len({augmented[0][0].numpy().tobytes() for _ in range(8)}) > 1


def test_cache_refuses_other_files_and_other_sizes(tmp_path: Path, coco_dir: Path) -> None:
    torch.save({"images": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a version-1"):
        get_dataset("cache", tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="training.cli preprocess"):
        get_dataset("cache", tmp_path / "absent.pt")
    out = preprocess(get_dataset("coco", coco_dir, imsize=64), tmp_path / "coco.pt")
    with pytest.raises(ValueError, match="64px"):
        get_dataset("cache", out, imsize=128)


def test_preprocess_command_writes_a_cache(flickr_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from training.cli import app

    out = tmp_path / "f.pt"
    args = ["preprocess", "--dataset", "flickr8k", "--data-dir", str(flickr_dir), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--split", "test", "--imsize", "64"])
    assert result.exit_code == 0, result.output
    cached = get_dataset("cache", out)
    assert len(cached) == 1 and len(cached.image_captions[0]) == 5 and cached.embeddings is None
    missing = CliRunner().invoke(
        app, ["preprocess", "--dataset", "cub", "--data-dir", str(tmp_path), "--out", str(tmp_path / "x.pt")]
    )
    assert missing.exit_code != 0 and "Expected layout" in missing.output


# --- the DF-GAN trainer accepts a caption dataset -------------------------------------------------------


def test_dfgan_trains_two_steps_on_a_cub_fixture(cub_dir: Path, tmp_path: Path) -> None:
    from training.dfgan.config import DFGANConfig
    from training.dfgan.trainer import train

    data = get_dataset("cub", cub_dir, imsize=64, pairing="all")  # 20 (image, caption) items
    config = DFGANConfig(ngf=8, ndf=8, batch_size=4, checkpoint_every=2, epochs=1, version="cub-smoke")
    result = train(config, data, tmp_path / "run", max_steps=2)
    assert result.step == 2 and (result.checkpoint / "generator.safetensors").is_file()
    assert all(v == v for v in result.last_losses.values())  # no NaN
    assert Image.open(result.sample_grid).size[1] == 64 * len(data.sample_prompts)
