"""DF-GAN models by name: the catalogue (the shipped emoji models and the operator's), ``--model emoji``
checked and stored on the request (both engines' emoji models), a DF-GAN-only job routed on ``gpu`` and
batched apart from the default model, listed by ``/models``, and drawn by a worker with the emoji
weights (real Redis, the real shipped checkpoints)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image

from core.conversation import ConversationService, FromText, Imagine, ModelsShown, Queued, Refused, ShowModels
from core.embedded_redis import EmbeddedRedis
from core.errors import InputError
from core.fair_queue import FairQueue, batch_key_of
from core.job_client import QueueClient
from core.jobs import Conversation, JobRecord, JobRequest, JobStatus
from core.model_catalog import (
    DEFAULT_MODEL,
    EMOJI_MODEL,
    catalogue_text,
    check_choices,
    check_dfgan_model,
    engine_model,
    parse_dfgan_models,
    parse_models,
)
from core.settings import Settings
from core.validation import request_from_text
from tests.helpers.databases import emptied_database
from tests.helpers.jobs import drawn_from_text
from tests.helpers.settings import make_settings
from training.shipped import SHIPPED_DIR
from worker.engines.base import GenerationRequest
from worker.engines.loaded import LoadedEngines, ModelNotServed

EMOJI_VERSION = json.loads((SHIPPED_DIR / "dfgan-emoji-64" / "config.json").read_text())["version"]
CONVERSATION = Conversation(platform="cli", chat_id="dfgan-models")


def catalogue(**kw: object) -> Settings:
    values: dict[str, object] = {
        "diffusion_models": "anime=/srv/anime|Anime and cartoons,both=/srv/both-sd",
        "dfgan_models": "birds=/srv/birds|small birds (CUB),both=/srv/both-gan",
        "engines": "dfgan,diffusion",
    }
    values.update(kw)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def ask(text: str, settings: Settings | None = None) -> JobRequest:
    return request_from_text(text, settings or catalogue(), "cli:dfgan-models", CONVERSATION)


def test_the_emoji_model_is_always_offered_beside_the_operators() -> None:
    assert list(parse_dfgan_models(Settings(_env_file=None))) == [DEFAULT_MODEL, EMOJI_MODEL]  # type: ignore[call-arg]
    models = parse_dfgan_models(catalogue())
    assert list(models) == [DEFAULT_MODEL, EMOJI_MODEL, "birds", "both"]
    emoji = models[EMOJI_MODEL]
    assert (emoji.folder, emoji.shipped) == ("dfgan-emoji-64", True)
    assert emoji.description == "everyday words and objects (emoji; rough)"
    assert (models["birds"].folder, models["birds"].description) == ("/srv/birds", "small birds (CUB)")
    assert models["both"].description == "/srv/both-gan"
    assert check_dfgan_model(catalogue(), " EMOJI ") == EMOJI_MODEL
    # ...and the shipped diffusion emoji model under the same name, beside the operator's
    diffusion = parse_models(catalogue())
    assert list(diffusion) == [DEFAULT_MODEL, EMOJI_MODEL, "anime", "both"]
    assert (diffusion[EMOJI_MODEL].folder, diffusion[EMOJI_MODEL].shipped) == ("diffusion-emoji-32", True)
    assert (SHIPPED_DIR / "diffusion-emoji-32" / "model_index.json").is_file()
    with pytest.raises(ValueError, match="IMAGINEBOT_DIFFUSION_MODELS"):
        catalogue(diffusion_models="emoji=/srv/x")


@pytest.mark.parametrize("bad", ["birds", "=/srv/x", "a b=/x", "emoji=/x", "default=/x", "b=/x,B=/y"])
def test_a_bad_dfgan_catalogue_is_an_operator_error_at_start(bad: str) -> None:
    with pytest.raises(ValueError, match="IMAGINEBOT_DFGAN_MODELS"):
        catalogue(dfgan_models=bad)


def test_model_emoji_names_both_engines_emoji_models() -> None:
    both = ask("a red apple --model Emoji")
    assert (both.model, both.dfgan_model) == (EMOJI_MODEL, EMOJI_MODEL)
    assert (engine_model(both, "dfgan"), engine_model(both, "diffusion")) == (EMOJI_MODEL, EMOJI_MODEL)
    only_gan = ask("a red apple --model emoji --engine dfgan")
    assert (only_gan.model, only_gan.dfgan_model) == (None, EMOJI_MODEL)
    only_diffusion = ask("a red apple --model emoji --engine diffusion")
    assert (only_diffusion.model, only_diffusion.dfgan_model) == (EMOJI_MODEL, None)
    anime = ask("a red apple --model anime")
    assert (anime.model, anime.dfgan_model) == ("anime", None)
    shared = ask("a red apple --model both")  # each engine draws with its own model of that name
    assert (shared.model, shared.dfgan_model) == ("both", "both")
    assert ask("a red apple --model default").dfgan_model is None
    assert check_choices(catalogue(), both) == both  # a stored request checked again keeps its model
    diffusion_only = both.model_copy(update={"engines": ["diffusion"]})  # a variation of that picture
    assert (check_choices(catalogue(), diffusion_only).dfgan_model, diffusion_only.model) == (
        None,
        EMOJI_MODEL,
    )


def test_a_model_no_engine_of_the_job_has_is_refused() -> None:
    for text, code in [
        ("a red apple --model birds --engine diffusion", "model_without_dfgan"),
        ("a red apple --model anime --engine dfgan", "model_without_diffusion"),
    ]:
        with pytest.raises(InputError) as err:
            ask(text)
        assert err.value.code == code, text


def test_an_unknown_model_lists_the_models_of_both_engines() -> None:
    with pytest.raises(InputError) as err:
        ask("a red apple --model nonsense")
    assert err.value.code == "unknown_model"
    assert "no model called 'nonsense'" in err.value.message
    assert "• anime: Anime and cartoons" in err.value.message
    assert "• emoji: everyday words and objects (emoji; rough)" in err.value.message
    assert "• birds: small birds (CUB)" in err.value.message
    assert err.value.message.index("• anime") < err.value.message.index("DF-GAN models:\n• default")
    assert "• emoji" in catalogue_text(Settings(_env_file=None))  # type: ignore[call-arg]


def record_of(request: JobRequest) -> JobRecord:
    return JobRecord(request=request, seed=1, steps=4, size=64)


def test_emoji_and_default_jobs_have_different_batch_keys() -> None:
    emoji, default = ask("a red apple --model emoji"), ask("a red apple --model default")
    assert batch_key_of(record_of(emoji)) != batch_key_of(record_of(default))
    assert batch_key_of(record_of(default)) == "dfgan,diffusion/4/64"  # default keys are as they were


@pytest.fixture
def isolated(redis_server: EmbeddedRedis, data_dir: Path) -> Settings:
    """Database 23 of the session Redis, emptied; no worker consumes there: jobs stay queued."""
    url = emptied_database(redis_server, 23)
    return make_settings(
        url, data_dir, engines="dfgan,diffusion", diffusion_models="anime=/srv/anime|Anime and cartoons"
    )


def test_a_dfgan_only_model_is_queued_on_gpu_and_batched_apart(isolated: Settings) -> None:
    client = QueueClient(isolated)
    user = "cli:dfgan-models"

    def submit(text: str) -> str:
        return client.submit(request_from_text(text, isolated, user, CONVERSATION)).id

    emoji = submit("a red apple --model emoji --engine dfgan --seed 3")
    assert client.fair.waiting(emoji) and not client.fair_for("gpu.emoji").waiting(emoji)
    both = submit("a red apple --model emoji --seed 3")  # the diffusion emoji model too: its own route
    assert client.fair_for("gpu.emoji").waiting(both) and not client.fair.waiting(both)
    default = submit("a red apple --model default --engine dfgan --seed 3")
    default_too = submit("a blue circle --engine dfgan --seed 4")
    assert client.jobs.get(emoji).request.dfgan_model == EMOJI_MODEL
    fair = FairQueue(client.redis)
    first = fair.claim(8)  # the emoji job first (fair order); the default jobs wait
    assert first == [emoji]
    assert sorted(fair.claim(8)) == sorted([default, default_too])  # equal keys do share a batch


def test_models_lists_the_dfgan_models_with_their_descriptions(isolated: Settings) -> None:
    service = ConversationService(isolated, QueueClient(isolated))
    me = service.caller("7", Conversation(platform="telegram", chat_id="100"))
    reply = service.handle(me, ShowModels())
    assert isinstance(reply, ModelsShown)
    assert "• anime: Anime and cartoons" in reply.text
    assert "• emoji: everyday words and objects (emoji; rough)" in reply.text
    queued = service.handle(me, FromText(Imagine, "/imagine a red apple --model emoji"))
    assert isinstance(queued, Queued) and queued.record.request.dfgan_model == EMOJI_MODEL
    assert queued.record.request.model == EMOJI_MODEL
    refused = service.handle(me, FromText(Imagine, "/imagine a red apple --model nonsense"))
    assert isinstance(refused, Refused) and refused.code == "unknown_model" and "• emoji" in refused.text


def pixels(engine: object, prompt: str = "a red apple") -> np.ndarray:
    images = engine.generate([GenerationRequest(prompt, [5], 1, 64)])  # type: ignore[attr-defined]
    return np.asarray(images[0][0], dtype=np.int16)


def test_the_worker_loads_the_emoji_model_once_beside_the_default(tmp_path: Path) -> None:
    engines = LoadedEngines(Settings(_env_file=None, data_dir=tmp_path, device="cpu"))  # type: ignore[call-arg]
    default = engines.get("dfgan")
    emoji = engines.get("dfgan", EMOJI_MODEL)
    assert emoji is not default and engines.get("dfgan", EMOJI_MODEL) is emoji
    assert engines.get("dfgan", DEFAULT_MODEL) is default
    assert emoji.info.version == EMOJI_VERSION != default.info.version
    assert emoji.info.extra["model"] == EMOJI_MODEL
    assert np.abs(pixels(emoji) - pixels(default)).mean() > 1  # other weights, other picture
    assert engines.loaded_versions()["dfgan@emoji"] == EMOJI_VERSION
    with pytest.raises(ModelNotServed):
        engines.get("dfgan", "nonsense")


def test_the_worker_loads_the_shipped_diffusion_emoji_model_with_its_own_guidance(tmp_path: Path) -> None:
    """``--model emoji``'s diffusion half: the shipped emoji pipeline, drawn at its own guidance
    (``default_guidance`` in its folder) when the job names none."""
    engines = LoadedEngines(Settings(_env_file=None, data_dir=tmp_path, device="cpu"))  # type: ignore[call-arg]
    emoji = engines.get("diffusion", EMOJI_MODEL)
    folder = SHIPPED_DIR / "diffusion-emoji-32"
    version = json.loads((folder / "imaginebot.json").read_text())["version"]
    guidance = json.loads((folder / "model_index.json").read_text())["default_guidance"]
    assert emoji.info.version == version and emoji.info.extra["model"] == EMOJI_MODEL
    assert engines.get("diffusion", EMOJI_MODEL) is emoji and guidance > 2.0
    assert engines.loaded_versions()["diffusion@emoji"] == version

    def drawn(prompt: str, scale: float | None = None) -> np.ndarray:
        request = GenerationRequest(prompt, [5], 4, 32, guidance_scale=scale)
        return np.asarray(emoji.generate([request])[0][0], dtype=np.int16)

    assert np.array_equal(drawn("a red apple"), drawn("a red apple", guidance))
    assert np.abs(drawn("a red apple") - drawn("a green tree")).mean() > 1  # the words matter


@pytest.fixture
def client(settings: Settings, celery_worker: object, clean_redis: redis.Redis) -> QueueClient:
    return QueueClient(settings)


def test_a_worker_draws_model_emoji_with_the_emoji_weights(client: QueueClient) -> None:
    emoji = drawn_from_text(client, "a red apple --engine dfgan --model emoji --seed 11", "cli:emoji-1")
    default = drawn_from_text(client, "a red apple --engine dfgan --model default --seed 11", "cli:emoji-2")
    # No model named, a word the shapes model does not know: the emoji model by itself (prompt_vocabulary)
    auto = drawn_from_text(client, "a red apple --engine dfgan --seed 11", "cli:emoji-3")
    assert {emoji.status, default.status, auto.status} == {JobStatus.DONE}, (emoji.error, default.error)
    assert [r.version for r in emoji.results] == [EMOJI_VERSION] == [r.version for r in auto.results]
    assert default.results[0].version != EMOJI_VERSION

    def picture(record: JobRecord) -> np.ndarray:
        png = client.images.get(record.results[0].image_keys[0])
        assert png is not None
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)

    assert np.abs(picture(emoji) - picture(default)).mean() > 1
    assert np.array_equal(picture(auto), picture(emoji))  # the same model, seed and prompt
