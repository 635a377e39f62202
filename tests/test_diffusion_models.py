"""Several diffusion models: the operator's catalogue (core, torch-free) and a worker drawing a job
with the model it names (real tiny pipelines, loaded once each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.errors import InputError
from core.jobs import Conversation, JobRequest, LoraChoice
from core.model_catalog import (
    DEFAULT_MODEL,
    EMOJI_MODEL,
    batch_model_key,
    check_choices,
    check_model,
    models_text,
    parse_models,
    served_models,
)
from core.settings import Settings
from tests.helpers.tiny_models import build_pixel_pipeline
from training.diffusion import build_tiny_pipeline
from worker.engines.base import GenerationRequest
from worker.engines.loaded import LoadedEngines, ModelNotServed


def catalogue(**kw: object) -> Settings:
    values: dict[str, object] = {
        "diffusion_models": "pixel=/srv/pixel|small pixel-space shapes; fast,sdtiny=/srv/sd",
        "diffusion_default_description": "the shapes model",
    }
    values.update(kw)
    return Settings(**values)  # type: ignore[arg-type]


def test_models_are_parsed_with_the_default_first() -> None:
    models = parse_models(catalogue())
    assert list(models) == [DEFAULT_MODEL, EMOJI_MODEL, "pixel", "sdtiny"]  # the shipped emoji model too
    assert models["pixel"].folder == "/srv/pixel"
    assert models["pixel"].description == "small pixel-space shapes; fast"
    assert models["sdtiny"].description == "/srv/sd"  # none given: the folder says what it is
    assert models_text(catalogue()).splitlines() == [
        "• default: the shapes model",
        "• emoji: everyday words and objects (emoji; rough)",
        "• pixel: small pixel-space shapes; fast",
        "• sdtiny: /srv/sd",
    ]
    assert list(parse_models(Settings())) == [DEFAULT_MODEL, EMOJI_MODEL]


@pytest.mark.parametrize("bad", ["pixel", "=/srv/x", "a b=/x", "../x=/y", "default=/x", "p=/x,P=/y"])
def test_a_bad_catalogue_is_an_operator_error(bad: str) -> None:
    with pytest.raises(ValueError, match="IMAGINEBOT_DIFFUSION_MODELS"):
        parse_models(catalogue(diffusion_models=bad))


def test_check_model_any_case_and_unknown_names_get_the_list() -> None:
    assert check_model(catalogue(), None) == DEFAULT_MODEL
    assert check_model(catalogue(), " PIXEL ") == "pixel"
    with pytest.raises(InputError) as err:
        check_model(catalogue(), "sdxl")
    assert err.value.code == "unknown_model"
    assert "no model called 'sdxl'" in err.value.message
    assert "• pixel: small pixel-space shapes" in err.value.message


def test_served_models() -> None:
    assert served_models(catalogue()) == [DEFAULT_MODEL, EMOJI_MODEL, "pixel", "sdtiny"]
    assert served_models(catalogue(worker_models="pixel")) == ["pixel"]
    with pytest.raises(ValueError, match="unknown models"):
        served_models(catalogue(worker_models="pixel,nope"))


def request(**kw: object) -> JobRequest:
    conversation = Conversation(platform="web", chat_id="c")
    return JobRequest(prompt="a cat", user="web:1", conversation=conversation, **kw)  # type: ignore[arg-type]


def test_check_choices() -> None:
    checked = check_choices(catalogue(), request(model="Pixel"))
    assert (checked.model, checked.strength, checked.loras) == ("pixel", None, [])
    with_image = check_choices(catalogue(), request(image_key="ib:upload:" + "a" * 32, model="DEFAULT"))
    assert with_image.strength == 0.6 and with_image.model is None  # one spelling of the default
    codes = {
        "strength_without_image": request(strength=0.5),
        "image_expired": request(image_key="/tmp/x.png"),
        "strength_out_of_range": request(image_key="ib:upload:" + "a" * 32, strength=2.0),
        "unknown_model": request(model="nope"),
        "bad_lora": request(loras=[LoraChoice(name="x")]),
        "model_without_diffusion": request(model="pixel", engines=["dfgan"]),
    }
    for code, bad in codes.items():
        with pytest.raises(InputError) as err:
            check_choices(catalogue(), bad)
        assert err.value.code == code


def test_batch_key_part() -> None:
    assert batch_model_key(None, []) == batch_model_key(DEFAULT_MODEL, [])
    styled = [LoraChoice(name="a", weight=0.5)]
    assert batch_model_key("pixel", styled) == ("pixel", (("a", 0.5),))
    assert batch_model_key("pixel", styled) != batch_model_key("pixel", [LoraChoice(name="a")])


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> LoadedEngines:
    root = tmp_path_factory.mktemp("models")
    sd = build_tiny_pipeline(root / "sd", seed=0)
    other_sd = build_tiny_pipeline(root / "sd-other", seed=1)
    pixel = build_pixel_pipeline(root / "pixel")
    settings = Settings(
        data_dir=root,
        device="cpu",
        diffusion_model=str(sd),
        diffusion_models=f"pixel={pixel}|pixel shapes,other={other_sd}|another seed,absent=/nowhere",
        worker_models="default,pixel,other",
    )
    return LoadedEngines(settings)


def draw(engine: object) -> np.ndarray:
    images = engine.generate([GenerationRequest("a red circle", [4], 2, 64)])  # type: ignore[attr-defined]
    return np.asarray(images[0][0], dtype=np.int16)


def test_a_job_draws_with_the_model_it_names(engines: LoadedEngines) -> None:
    default = engines.get("diffusion")
    assert engines.get("diffusion", DEFAULT_MODEL) is default
    pixel, other = engines.get("diffusion", "pixel"), engines.get("diffusion", "other")
    assert pixel.info.extra["pipeline"] == "PixelDiffusionPipeline"
    assert pixel.info.extra["model"] == "pixel"
    assert other.info.extra["pipeline"] == "StableDiffusionPipeline"
    assert np.abs(draw(default) - draw(other)).mean() > 1  # other weights, other picture
    assert engines.get("diffusion", "pixel") is pixel  # loaded once
    assert set(engines.loaded_versions()) >= {"diffusion", "diffusion@pixel", "diffusion@other"}


def test_a_model_this_worker_does_not_serve(engines: LoadedEngines) -> None:
    with pytest.raises(ModelNotServed):
        engines.get("diffusion", "absent")
    with pytest.raises(ModelNotServed):
        engines.get("diffusion", "nope")
    assert "diffusion@absent" not in engines.loaded_versions()


def test_catalogue_with_no_models_named_serves_all(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, diffusion_models="a=/x,b=/y")
    assert LoadedEngines(settings).served_models() == [DEFAULT_MODEL, EMOJI_MODEL, "a", "b"]
