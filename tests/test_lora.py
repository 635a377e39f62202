"""LoRAs on the tiny Stable Diffusion pipeline: a tiny LoRA made here changes the picture, weight 0
does not, and the model is exactly itself again after the batch. Stable Diffusion pipelines take
LoRAs through diffusers' adapter API (peft), kohya's layout included; our pixel pipeline, which has
no adapter API, by a merge."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from core.errors import InputError
from core.jobs import LoraChoice
from core.model_catalog import check_loras, lora_names, parse_lora
from core.settings import Settings
from tests.helpers.tiny_models import build_pixel_pipeline, write_tiny_lora
from training.diffusion import build_tiny_pipeline
from worker.engines.base import GenerationRequest
from worker.engines.diffusion import DiffusionEngine
from worker.engines.lora import LoraNotAvailable, adapter_name, applied_loras

STEPS = 3


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lora")
    tiny = build_tiny_pipeline(root / "tiny", seed=0)
    folder = root / "loras"
    write_tiny_lora(tiny, folder / "tiny-style.safetensors")
    write_kohya_copy(folder / "tiny-style.safetensors", folder / "tiny-kohya.safetensors")
    write_tiny_lora(tiny, folder / "second.safetensors", seed=1)
    foreign = {"unet.no_such_block.to_q.lora_A.weight": torch.ones(2, 4)}
    save_file(foreign, str(folder / "other-model.safetensors"))
    (folder / "notes.txt").write_text("not a LoRA")
    (folder / "weights.ckpt").write_bytes(b"pickles are never loaded")
    return folder


def write_kohya_copy(diffusers_file: Path, out: Path) -> None:
    """The same LoRA in kohya's layout (``lora_unet_<module_with_underscores>.lora_down/up`` + alpha),
    as LoRAs downloaded from model sites come."""
    state: dict[str, torch.Tensor] = {}
    for key, value in load_file(str(diffusers_file)).items():
        module, _, part = key.removeprefix("unet.").rpartition(".lora_")
        kohya = "lora_unet_" + module.replace(".", "_")
        if part == "A.weight":
            state[kohya + ".lora_down.weight"] = value
            state[kohya + ".alpha"] = torch.tensor(float(value.shape[0]))  # alpha/rank = 1
        else:
            state[kohya + ".lora_up.weight"] = value
    save_file(state, str(out))


@pytest.fixture(scope="module")
def engine(lora_dir: Path) -> DiffusionEngine:
    tiny = lora_dir.parent / "tiny"
    return DiffusionEngine(str(tiny), lora_dir.parent, device="cpu", lora_dir=lora_dir)


def draw(engine: DiffusionEngine, loras: tuple[tuple[str, float], ...] = ()) -> np.ndarray:
    request = GenerationRequest("a red circle", [3], STEPS, 64, loras=loras)
    return pixels(engine.generate([request])[0][0])


def unet_state(engine: DiffusionEngine) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in engine.pipe.unet.state_dict().items()}


def test_a_lora_changes_the_picture_and_weight_zero_does_not(engine: DiffusionEngine) -> None:
    plain = draw(engine)
    assert np.abs(draw(engine, (("tiny-style", 1.0),)) - plain).mean() > 1
    assert np.array_equal(draw(engine, (("tiny-style", 0.0),)), plain)


def test_the_weight_scales_the_change(engine: DiffusionEngine) -> None:
    plain = draw(engine)
    light = np.abs(draw(engine, (("tiny-style", 0.2),)) - plain).mean()
    full = np.abs(draw(engine, (("tiny-style", 1.0),)) - plain).mean()
    assert 0 < light < full


def test_the_model_is_itself_again_after_the_batch(engine: DiffusionEngine) -> None:
    before = unet_state(engine)
    plain = draw(engine)
    draw(engine, (("tiny-style", 1.5),))
    after = unet_state(engine)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert np.array_equal(draw(engine), plain)


def test_jobs_with_and_without_the_lora_in_one_batch(engine: DiffusionEngine) -> None:
    plain, styled = draw(engine), draw(engine, (("tiny-style", 1.0),))
    out = engine.generate(
        [
            GenerationRequest("a red circle", [3], STEPS, 64, loras=(("tiny-style", 1.0),)),
            GenerationRequest("a red circle", [3], STEPS, 64),
        ]
    )
    assert np.abs(pixels(out[0][0]) - styled).max() <= 2
    assert np.abs(pixels(out[1][0]) - plain).max() <= 2


def test_a_lora_for_another_model_is_refused_and_nothing_stays_applied(
    engine: DiffusionEngine, lora_dir: Path, tmp_path: Path
) -> None:
    pixel = DiffusionEngine(str(build_pixel_pipeline(tmp_path / "pixel")), tmp_path, device="cpu")
    before = {k: v.clone() for k, v in pixel.pipe.unet.state_dict().items()}
    with pytest.raises(LoraNotAvailable, match="another model|does not fit"):
        with applied_loras(pixel.pipe, lora_dir, [("tiny-style", 1.0)]):
            pytest.fail("applied a LoRA made for another model")
    after = pixel.pipe.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", ["../tiny/unet/diffusion_pytorch_model", "/etc/passwd", "weights", "notes"])
def test_only_safetensors_files_in_the_folder_by_plain_name(engine: DiffusionEngine, name: str) -> None:
    with pytest.raises(LoraNotAvailable):
        engine.generate([GenerationRequest("a cat", [1], STEPS, 64, loras=((name, 1.0),))])


def test_core_lists_and_checks_lora_names(lora_dir: Path) -> None:
    settings = Settings(lora_dir=lora_dir)
    assert lora_names(settings) == ["other-model", "second", "tiny-kohya", "tiny-style"]
    assert parse_lora("Tiny-Style:0.5") == LoraChoice(name="Tiny-Style", weight=0.5)
    assert parse_lora("tiny-style") == LoraChoice(name="tiny-style", weight=1.0)
    checked = check_loras(settings, [parse_lora("TINY-style:0.5")])
    assert checked == [LoraChoice(name="tiny-style", weight=0.5)]
    cases = {
        "../secret": "not a LoRA name",
        "tiny-style:lots": "not a number",
    }
    for text, message in cases.items():
        with pytest.raises(InputError, match=message):
            parse_lora(text)
    listed = "LoRAs: other-model, second, tiny-kohya, tiny-style"
    with pytest.raises(InputError, match=f"no LoRA called 'other'. {listed}"):
        check_loras(settings, [LoraChoice(name="other")])
    with pytest.raises(InputError, match="between -2.0 and 2.0"):
        check_loras(settings, [LoraChoice(name="tiny-style", weight=3)])
    with pytest.raises(InputError, match="named twice"):
        check_loras(settings, [LoraChoice(name="tiny-style"), LoraChoice(name="Tiny-Style", weight=0.5)])
    with pytest.raises(InputError, match="none are installed"):
        check_loras(Settings(lora_dir=None), [LoraChoice(name="tiny-style")])


def test_stable_diffusion_takes_loras_through_the_adapter_api(
    engine: DiffusionEngine, lora_dir: Path
) -> None:
    keys_before = set(engine.pipe.unet.state_dict())
    with applied_loras(engine.pipe, lora_dir, [("tiny-style", 0.7)]):
        assert adapter_name("tiny-style") in engine.pipe.get_list_adapters().get("unet", [])
        assert any(".lora_A." in k for k in engine.pipe.unet.state_dict())
    assert engine.pipe.get_list_adapters() == {}
    assert set(engine.pipe.unet.state_dict()) == keys_before  # the peft layers are gone again


def test_a_kohya_lora_draws_what_the_same_lora_in_diffusers_layout_draws(engine: DiffusionEngine) -> None:
    plain = draw(engine)
    kohya = draw(engine, (("tiny-kohya", 1.0),))
    assert np.abs(kohya - plain).mean() > 1
    assert np.abs(kohya - draw(engine, (("tiny-style", 1.0),))).max() <= 2


def test_two_loras_mix_with_their_own_weights(engine: DiffusionEngine) -> None:
    first = draw(engine, (("tiny-style", 1.0),))
    second = draw(engine, (("second", 1.0),))
    both = draw(engine, (("tiny-style", 1.0), ("second", 1.0)))
    assert np.abs(both - first).mean() > 1 and np.abs(both - second).mean() > 1
    assert np.array_equal(draw(engine, (("tiny-style", 1.0), ("second", 0.0))), first)


def test_a_lora_for_another_stable_diffusion_is_refused_and_nothing_stays(engine: DiffusionEngine) -> None:
    plain = draw(engine)
    with pytest.raises(LoraNotAvailable, match="another model"):
        draw(engine, (("other-model", 1.0),))
    assert engine.pipe.get_list_adapters() == {}
    assert np.array_equal(draw(engine), plain)
