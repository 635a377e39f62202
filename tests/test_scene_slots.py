"""The ``minilm-slots`` text condition (MiniLM + who-is-where slots) and widened warm starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.data.scenes import PHRASINGS, answer_key
from training.dfgan.checkpoint import build_generator, save_checkpoint
from training.dfgan.config import DFGANConfig
from training.text.encoders import MINILM_DIM, load_text_encoder
from training.text.scene_slots import SLOTS_DIM, canonical_caption
from training.text.widening import load_widened, widened_weights
from worker.engines.base import GenerationRequest
from worker.engines.dfgan import DFGANEngine

PARAPHRASES = [
    ("a small red circle above a large blue square", "a large blue square below a small red circle"),
    ("a small red circle above a large blue square", "there is a small red circle above a large blue square"),
    ("a green triangle left of a yellow square", "a yellow square to the right of a green triangle"),
]
#: Different pictures whose captions differ only in who has which colour, or which way round.
SWAPS = [
    ("a small red circle above a large blue square", "a small blue circle above a large red square"),
    ("a green triangle left of a yellow square", "a yellow triangle left of a green square"),
    ("a small red circle above a large blue square", "a small red circle below a large blue square"),
    ("a purple square to the right of an orange circle", "an orange square to the right of a purple circle"),
]


def _cosines(name: str, pairs: list[tuple[str, str]]) -> list[float]:
    encoder = load_text_encoder(name)
    out = []
    for a, b in pairs:
        v = encoder.encode([a, b])
        out.append(float(F.cosine_similarity(v[0], v[1], dim=0)))
    return out


def test_slots_put_swapped_scenes_further_apart_than_paraphrases() -> None:
    slots_swap, slots_same = _cosines("minilm-slots", SWAPS), _cosines("minilm-slots", PARAPHRASES)
    assert max(slots_swap) < 0.9 and min(slots_same) > 0.999
    assert max(slots_swap) < min(slots_same)
    # The diagnosis this encoder answers: pooled MiniLM puts the swaps *closer* than paraphrases.
    minilm_swap, minilm_same = _cosines("minilm", SWAPS), _cosines("minilm", PARAPHRASES)
    assert max(minilm_swap) > min(minilm_same)


def test_every_phrasing_of_a_scene_gives_one_vector_and_other_text_keeps_minilm() -> None:
    encoder = load_text_encoder("minilm-slots")
    assert encoder.dim == MINILM_DIM + SLOTS_DIM
    for spec, _ in answer_key(40)[::4]:
        vectors = encoder.encode([spec.caption(p) for p in range(PHRASINGS)])
        assert torch.allclose(vectors, vectors[:1].expand_as(vectors), atol=1e-6)
        assert float(vectors[0, MINILM_DIM:].norm()) == pytest.approx(1.0)
    assert canonical_caption("a large blue square below a small red circle") == (
        "a small red circle above a large blue square"
    )
    assert canonical_caption("in the center, a large red circle") == "a large red circle in the center"
    free = encoder.encode(["a red apple on a table"])
    assert torch.count_nonzero(free[0, MINILM_DIM:]) == 0
    assert torch.allclose(
        free[0, :MINILM_DIM], load_text_encoder("minilm").encode(["a red apple on a table"])[0]
    )


def test_widened_generator_draws_what_the_narrow_one_drew() -> None:
    narrow = build_generator(DFGANConfig(ngf=8, cond_dim=MINILM_DIM))
    for p in narrow.parameters():
        p.data.normal_(0, 0.2, generator=torch.Generator().manual_seed(p.numel()))
    wide = build_generator(DFGANConfig(ngf=8, cond_dim=MINILM_DIM + SLOTS_DIM))
    grown = load_widened(wide, narrow.state_dict())
    assert grown and all("weight" in name for name in grown)
    noise, sentence = torch.randn(2, 100), torch.randn(2, MINILM_DIM)
    slots = torch.randn(2, SLOTS_DIM)
    with torch.no_grad():
        assert torch.allclose(
            wide.eval()(noise, torch.cat([sentence, slots], 1)), narrow.eval()(noise, sentence)
        )
    with pytest.raises(ValueError, match="needs"):
        widened_weights({"w": torch.zeros(3, 4)}, {"w": torch.zeros(3, 5)})
    with pytest.raises(ValueError, match="no 'w'"):
        widened_weights({"w": torch.zeros(3, 4)}, {})


def test_engine_loads_a_slots_checkpoint_and_tells_swapped_prompts_apart(tmp_path: Path) -> None:
    config = DFGANConfig(ngf=8, cond_dim=MINILM_DIM + SLOTS_DIM, text_encoder="minilm-slots", cond_scale=5.0)
    netG = build_generator(config)
    for p in netG.parameters():
        p.data.normal_(0, 0.2, generator=torch.Generator().manual_seed(p.numel()))
    save_checkpoint(tmp_path / "ckpt", netG, config, {"step": 1})
    engine = DFGANEngine(str(tmp_path / "ckpt"), "cpu")
    a, b, c = (
        np.asarray(images[0], dtype=np.float32)
        for images in engine.generate(
            [
                GenerationRequest("a small red circle above a large blue square", [3]),
                GenerationRequest("a small blue circle above a large red square", [3]),
                GenerationRequest("a large blue square below a small red circle", [3]),
            ]
        )
    )
    assert np.abs(a - b).mean() > 2  # a colour swap is another picture...
    assert np.abs(a - c).mean() < 0.5  # ...saying the same scene the other way round is not


def _scramble(module: torch.nn.Module) -> None:
    for p in module.parameters():
        p.data.normal_(0, 0.05, generator=torch.Generator().manual_seed(p.numel()))


def test_trainers_warm_start_a_slots_run_from_a_minilm_model(tmp_path: Path) -> None:
    from rich.console import Console

    from training.dfgan import trainer as dfgan
    from training.diffusion import trainer as diffusion
    from training.diffusion.config import DiffusionConfig

    console, wide_dim = Console(quiet=True), MINILM_DIM + SLOTS_DIM
    narrow_g = build_generator(DFGANConfig(ngf=8))
    _scramble(narrow_g)
    save_checkpoint(tmp_path / "g", narrow_g, DFGANConfig(ngf=8), {"step": 1})
    slots_g = DFGANConfig(ngf=8, ndf=8, cond_dim=wide_dim, text_encoder="minilm-slots")
    _, m, _, step = dfgan.start_run(slots_g, tmp_path / "run-g", False, tmp_path / "g", "cpu", console)
    noise, sentence, slots = torch.randn(2, 100), torch.randn(2, MINILM_DIM), torch.randn(2, SLOTS_DIM)
    with torch.no_grad():
        widened = m.ema.eval()(noise, torch.cat([sentence, slots], 1))
        assert step == 0 and torch.allclose(widened, narrow_g.eval()(noise, sentence), atol=1e-5)

    narrow = DiffusionConfig(block_out_channels=(16, 32), attention_levels=(False, True), norm_num_groups=8)
    narrow_unet = diffusion.UNet2DConditionModel(**narrow.unet_kwargs())
    _scramble(narrow_unet)
    diffusion.save_pipeline(narrow, narrow_unet, tmp_path / "pipe", {})
    wide = DiffusionConfig(**{**narrow.__dict__, "cond_dim": wide_dim, "text_encoder": "minilm-slots"})
    _, d, _ = diffusion.start_run(wide, tmp_path / "run-d", False, tmp_path / "pipe", "cpu", console)
    x, t, cond = torch.randn(2, 3, 32, 32), torch.tensor([10, 500]), torch.cat([sentence, slots], 1)
    with torch.no_grad():
        got = d.ema(x, t, encoder_hidden_states=cond[:, None], class_labels=cond).sample
        want = narrow_unet(x, t, encoder_hidden_states=sentence[:, None], class_labels=sentence).sample
    assert torch.allclose(got, want, atol=1e-5)


def test_scaled_slots_encoder_is_five_times_the_slots_vector() -> None:
    """``minilm-slots-x5`` (the diffusion emoji model's condition) is the slots vector times 5, the
    empty caption's zero vector included."""
    from training.text.encoders import load_text_encoder

    plain, scaled = load_text_encoder("minilm-slots"), load_text_encoder("minilm-slots-x5")
    texts = ["a red apple", "a small red circle above a large blue square"]
    assert scaled.dim == plain.dim == MINILM_DIM + SLOTS_DIM
    assert torch.allclose(scaled.encode(texts), 5.0 * plain.encode(texts))
    assert torch.allclose(scaled.encode(texts).norm(dim=1)[0], torch.tensor(5.0))  # MiniLM part only
