"""Prompts outside the shapes vocabulary go to the emoji DF-GAN by themselves (core/prompt_vocabulary.py):
the router against the training captions it must keep, the everyday words it must send on, and the
choice through validation, remix, an operator's checkpoint and a promoted community model."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from core.embedded_redis import EmbeddedRedis
from core.job_client import QueueClient
from core.jobs import Conversation, JobRequest
from core.model_catalog import EMOJI_MODEL, check_choices
from core.model_versions import ModelRegistry, ModelVersion, promoted_key, version_key
from core.prompt_vocabulary import (
    COLOUR_WORDS,
    POSITION_PHRASES,
    SHAPE_WORDS,
    SIZE_WORDS,
    is_shapes_prompt,
    words_outside,
)
from core.settings import Settings
from core.validation import request_from_text
from tests.helpers.databases import emptied_database
from tests.helpers.settings import make_settings

CONVERSATION = Conversation(platform="cli", chat_id="vocabulary")


def ask(text: str, settings: Settings | None = None) -> JobRequest:
    return request_from_text(text, settings or Settings(_env_file=None), "cli:vocab", CONVERSATION)  # type: ignore[call-arg]


def test_the_vocabulary_is_the_training_datas() -> None:
    from training.data import scenes, shapes

    assert set(COLOUR_WORDS) == set(shapes.COLOURS) and set(SHAPE_WORDS) == set(shapes.SHAPES)
    assert set(SIZE_WORDS) == set(shapes.SIZES) and set(POSITION_PHRASES) == set(shapes.POSITIONS)
    for phrase in scenes.RELATIONS:
        assert is_shapes_prompt(phrase), phrase


def test_every_training_and_answer_key_caption_stays_with_the_shapes_model() -> None:
    from training.data.scenes import PHRASINGS, answer_key
    from training.data.shapes import all_specs

    captions = [caption for _, caption in answer_key(1000)]
    captions += [spec.caption for spec in all_specs()]
    captions += [
        spec.caption(p, sizes)
        for spec, _ in answer_key(200, seed=7)
        for p in range(PHRASINGS)
        for sizes in (True, False)
    ]
    outside = [c for c in captions if not is_shapes_prompt(c)]
    assert outside == [] and len(captions) > 1700


def test_everyday_prompts_go_elsewhere_and_say_which_words() -> None:
    from training.eval.emoji_eval import EVERYDAY_PROMPTS

    assert all(not is_shapes_prompt(p) for p in EVERYDAY_PROMPTS)
    assert words_outside("A small RED apple, on the left!") == ["apple"]
    assert words_outside("a small red circle above a large blue square") == []


def test_nearly_every_emoji_name_is_outside_and_those_inside_are_shapes() -> None:
    """Measured on the emoji font's names (docs/models.md): the few names made of shapes words only
    ("red circle", "blue square") are pictures the shapes model draws."""
    from training.data.emoji import emoji_codepoints, emoji_names, find_font

    try:
        font = find_font()
    except FileNotFoundError:
        pytest.skip("the Noto Color Emoji font is not installed (apt install fonts-noto-color-emoji)")
    names = [emoji_names(chr(cp))[0] for cp in emoji_codepoints(font)]
    inside = [n for n in names if is_shapes_prompt(n)]
    assert len(names) > 1000 and len(inside) / len(names) < 0.02, inside
    assert all(any(shape in n for shape in SHAPE_WORDS) for n in inside), inside


def test_the_choice_through_validation() -> None:
    apple = ask("a red apple")
    assert (apple.dfgan_model, apple.dfgan_auto) == (EMOJI_MODEL, True)
    assert ask("a small red circle above a large blue square").dfgan_model is None
    named = ask("a red apple --model emoji")
    assert (named.dfgan_model, named.dfgan_auto) == (EMOJI_MODEL, False)
    explicit_default = ask("a red apple --model default")
    assert explicit_default.dfgan_model is None and not explicit_default.dfgan_auto
    assert ask("a red apple --engine diffusion").dfgan_model is None  # no DF-GAN in the job
    off = Settings(_env_file=None, auto_dfgan_model="")  # type: ignore[call-arg]
    assert ask("a red apple", off).dfgan_model is None
    own = Settings(_env_file=None, dfgan_checkpoint="/srv/birds")  # type: ignore[call-arg]
    assert ask("a red apple", own).dfgan_model is None  # the operator's own model knows other words
    typo = Settings(_env_file=None, auto_dfgan_model="emojj")  # type: ignore[call-arg]
    assert ask("a red apple", typo).dfgan_model is None  # the operator's slip never refuses a user


def test_a_remix_chooses_again_for_its_new_words() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    apple = ask("a red apple")
    remixed = check_choices(settings, apple.model_copy(update={"prompt": "a red circle in the center"}))
    assert remixed.dfgan_model is None and not remixed.dfgan_auto
    again = check_choices(settings, apple)
    assert (again.dfgan_model, again.dfgan_auto) == (EMOJI_MODEL, True)  # a reroll keeps it


def test_a_promoted_community_model_keeps_every_prompt(redis_server: EmbeddedRedis, data_dir: Path) -> None:
    settings = make_settings(emptied_database(redis_server, 29), data_dir)
    client = QueueClient(settings)
    assert client.submit(ask("a red apple", settings)).request.dfgan_model == EMOJI_MODEL
    raw = redis.Redis.from_url(settings.redis_url)
    for dataset, expected in (("scenes", EMOJI_MODEL), ("birds", None)):
        version = f"dfgan-{dataset}-20260101T000000Z"
        entry = ModelVersion(version=version, folder="x", dataset=dataset, created_at=time.time())
        raw.set(version_key(version), entry.to_json())
        raw.set(promoted_key("dfgan"), version)
        assert ModelRegistry(settings, raw).promoted() == version
        record = client.submit(ask("a red apple", settings))
        assert record.request.dfgan_model == expected, dataset
        assert client.jobs.get(record.id).request.dfgan_model == expected
