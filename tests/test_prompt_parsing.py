"""Prompt parsing and validation rules (pure core, no Redis)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import InputError
from core.jobs import Conversation
from core.prompt import parse_prompt
from core.settings import Settings
from core.validation import request_from_text

CONV = Conversation(platform="web", chat_id="c1")


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None, redis_url=None)  # type: ignore[call-arg]


def test_flags_are_taken_out_of_the_prompt_in_any_position() -> None:
    parsed = parse_prompt(
        '/imagine --seed 42 a bird\'s nest --engine dfgan --no "blurry, dark" --n=2 at dawn'
    )
    assert parsed.prompt == "a bird's nest at dawn"
    assert parsed.seed == 42
    assert parsed.engines == ["dfgan"]
    assert parsed.negative_prompt == "blurry, dark"
    assert parsed.count == 2


def test_telegram_style_command_with_bot_name() -> None:
    assert parse_prompt("/imagine@imagine_bot a red circle").prompt == "a red circle"


def test_engine_list_is_lowercased_and_split() -> None:
    assert parse_prompt("x --engine Diffusion,DFGAN").engines == ["diffusion", "dfgan"]


def test_defaults_fill_in_and_repeated_engines_collapse(settings: Settings) -> None:
    req = request_from_text("a cat --engine dfgan,dfgan", settings, "web:u", CONV)
    assert req.engines == ["dfgan"]
    assert req.steps == settings.default_steps and req.size == settings.default_size
    req = request_from_text("a cat", settings, "web:u", CONV)
    assert req.engines == ["dfgan", "diffusion"]


def test_a_flag_given_twice_is_refused() -> None:
    with pytest.raises(InputError) as err:
        parse_prompt("a cat --seed 1 --seed 2")
    assert err.value.code == "duplicate_flag"


def test_engine_known_but_disabled_says_so() -> None:
    settings = Settings(_env_file=None, engines="dfgan")  # type: ignore[call-arg]
    with pytest.raises(InputError) as err:
        request_from_text("a cat --engine diffusion", settings, "web:u", CONV)
    assert err.value.message == "'diffusion' is not enabled here. Enabled engines: dfgan."


def test_prompt_at_the_limit_passes_and_one_over_fails(settings: Settings) -> None:
    assert request_from_text("x" * settings.max_prompt_chars, settings, "web:u", CONV)
    with pytest.raises(InputError):
        request_from_text("x" * (settings.max_prompt_chars + 1), settings, "web:u", CONV)


def test_admin_ids_are_per_platform() -> None:
    settings = Settings(_env_file=None, admin_ids="discord:1, telegram:2")  # type: ignore[call-arg]
    assert settings.is_admin("discord", "1") and settings.is_admin("telegram", "2")
    assert not settings.is_admin("telegram", "1")


def test_user_defaults_fill_what_the_prompt_does_not_say(settings: Settings) -> None:
    from core.preferences import Preferences

    prefs = Preferences(engines=["dfgan"], steps=30, count=2)
    req = request_from_text("a cat --steps 5", settings, "web:u", CONV, defaults=prefs)
    assert (req.engines, req.steps, req.count) == (["dfgan"], 5, 2)


def test_blocklist_refuses_whole_words_in_any_case(tmp_path) -> None:  # noqa: ANN001
    blockfile = tmp_path / "blocked.txt"
    blockfile.write_text("# comment\nred panda\n")
    settings = Settings(_env_file=None, blocklist="gore", blocklist_file=blockfile)  # type: ignore[call-arg]
    for text in ("some GORE here", "a Red  Panda on a branch"):
        with pytest.raises(InputError) as err:
            request_from_text(text, settings, "web:u", CONV)
        assert err.value.code == "blocked_prompt"
    assert request_from_text("a gorilla and a red pandas", settings, "web:u", CONV)


def test_options_are_checked_without_a_prompt(settings: Settings) -> None:
    """A user's defaults pass the same rules as a job's options, with no placeholder prompt."""
    from core.validation import validate_options

    checked = validate_options(settings, engines=["dfgan", "dfgan"], steps=settings.max_steps)
    assert (checked.engines, checked.steps, checked.size) == (
        ["dfgan"],
        settings.max_steps,
        settings.default_size,
    )
    for options, code in (
        ({"steps": settings.max_steps + 1}, "steps_out_of_range"),
        ({"count": 0}, "count_out_of_range"),
        ({"engines": ["shell"]}, "unknown_engine"),
        ({"size": 7}, "size_out_of_range"),
        ({"seed": -1}, "seed_out_of_range"),
    ):
        with pytest.raises(InputError) as err:
            validate_options(settings, **options)  # type: ignore[arg-type]
        assert err.value.code == code, options


def test_image_and_model_flags_are_parsed_and_lora_may_repeat() -> None:
    parsed = parse_prompt("a cat --strength 0.3 --model Anime --lora ink:0.5 --lora=paper at night")
    assert parsed.prompt == "a cat at night"
    assert (parsed.strength, parsed.model) == (0.3, "Anime")
    assert [(lo.name, lo.weight) for lo in parsed.loras] == [("ink", 0.5), ("paper", 1.0)]
    assert parse_prompt("a cat").loras == []


@pytest.mark.parametrize(
    ("text", "code", "words"),
    [
        ("a cat --strength lots", "not_a_number", "--strength must be a number"),
        ("a cat --strength", "missing_value", "--strength 0.6"),
        ("a cat --model a --model b", "duplicate_flag", "--model is given twice"),
        ("a cat --lora ink:heavy", "bad_lora", "not a number"),
        ("a cat --lora ../etc", "bad_lora", "not a LoRA name"),
    ],
)
def test_bad_image_and_model_flags_are_answered(text: str, code: str, words: str) -> None:
    with pytest.raises(InputError) as err:
        parse_prompt(text)
    assert err.value.code == code
    assert words in err.value.message


def test_flags_reach_the_request_and_are_checked_by_core(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "ink.safetensors").write_bytes(b"")
    settings = settings.model_copy(
        update={"lora_dir": tmp_path, "diffusion_models": "anime=/models/anime|Anime and cartoons"}
    )
    req = request_from_text("a cat --model ANIME --lora INK:0.5 --engine diffusion", settings, "web:u", CONV)
    assert req.model == "anime"
    assert [(lo.name, lo.weight) for lo in req.loras] == [("ink", 0.5)]
    for text, code in [
        ("a cat --model nope --engine diffusion", "unknown_model"),
        ("a cat --lora other --engine diffusion", "bad_lora"),
        ("a cat --strength 0.5", "strength_without_image"),
        ("a cat --model anime --engine dfgan", "model_without_diffusion"),
    ]:
        with pytest.raises(InputError) as err:
            request_from_text(text, settings, "web:u", CONV)
        assert err.value.code == code, text
    with pytest.raises(InputError) as err:
        request_from_text("a cat --model nope --engine diffusion", settings, "web:u", CONV)
    assert "• anime: Anime and cartoons" in err.value.message
