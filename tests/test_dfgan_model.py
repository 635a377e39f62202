"""DF-GAN model, checkpoint round-trip and the inference engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.dfgan.checkpoint import build_generator, load_generator, save_checkpoint
from training.dfgan.config import DFGANConfig, original_project_config
from training.dfgan.model import Affine, DFBlock, NetC, NetD, NetG
from worker.engines.base import GenerationCancelled, GenerationRequest
from worker.engines.dfgan import DFGANEngine, resolve_default_checkpoint


def _scramble(module: torch.nn.Module, seed: int = 1) -> None:
    """Perturb every parameter like training would, so the identity-initialised affines condition."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.05)


@pytest.mark.parametrize("imsize", [64, 128])
def test_generator_and_discriminator_shapes(imsize: int) -> None:
    netG, netD, netC = NetG(8, 100, 384, imsize), NetD(8, imsize), NetC(8, 384)
    noise, sentence = torch.randn(2, 100), torch.randn(2, 384)
    image = netG(noise, sentence)
    assert image.shape == (2, 3, imsize, imsize)
    assert image.min() >= -1 and image.max() <= 1
    features = netD(image)
    assert features.shape == (2, 8 * 8, 4, 4)
    assert netC(features, sentence).shape == (2,)


def test_generator_rejects_non_power_of_two_size() -> None:
    with pytest.raises(ValueError):
        NetG(8, 100, 384, 96)


def test_affine_and_dfblock_start_as_identity() -> None:
    x, cond = torch.randn(3, 16, 8, 8), torch.randn(3, 40)
    assert torch.equal(Affine(40, 16)(x, cond), x)
    # A DF block at init is then just the two LeakyReLUs.
    leaky = torch.nn.functional.leaky_relu
    assert torch.allclose(DFBlock(40, 16)(x, cond), leaky(leaky(x, 0.2), 0.2))


def test_affine_uses_the_condition_once_trained() -> None:
    affine = Affine(40, 16)
    _scramble(affine)
    x = torch.randn(1, 16, 4, 4)
    assert not torch.allclose(affine(x, torch.randn(1, 40)), affine(x, torch.randn(1, 40)))


def test_discriminator_residual_gain_starts_at_zero() -> None:
    assert all(block.gamma.item() == 0.0 for block in NetD(8, 64).blocks)


def test_config_json_round_trip() -> None:
    config = original_project_config()
    again = DFGANConfig.from_json(config.to_json())
    assert again == config
    assert (again.loss, again.cond_dim, again.batch_size, again.betas) == ("bce", 256, 64, (0.5, 0.999))


def test_checkpoint_round_trip_gives_identical_images(tmp_path: Path) -> None:
    config = DFGANConfig(ngf=8, version="test-v1")
    netG = build_generator(config)
    _scramble(netG)
    ema = build_generator(config)
    _scramble(ema, seed=2)
    save_checkpoint(tmp_path / "ckpt", netG, config, {"step": 3}, ema=ema)
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"config.json", "generator.safetensors"}

    loaded = load_generator(tmp_path / "ckpt", "cpu")
    assert loaded.version == "test-v1"
    assert loaded.config.ngf == 8 and not loaded.netG.training
    noise, sentence = torch.randn(2, 100), torch.randn(2, 384)
    with torch.no_grad():
        # The EMA weights are the ones shipped, not the raw generator's.
        assert torch.equal(loaded.netG(noise, sentence), ema.eval()(noise, sentence))
        assert not torch.equal(loaded.netG(noise, sentence), netG.eval()(noise, sentence))


def test_random_init_placeholder_is_deterministic() -> None:
    a, b = load_generator(None, "cpu"), load_generator(None, "cpu")
    assert a.version == "random-init" and a.config.imsize == 64
    for (name, pa), pb in zip(a.netG.state_dict().items(), b.netG.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_default_checkpoint_prefers_the_setting() -> None:
    assert resolve_default_checkpoint("/some/folder") == "/some/folder"
    default = resolve_default_checkpoint(None)
    assert default is None or (Path(default) / "config.json").is_file()


@pytest.fixture(scope="module")
def engine() -> DFGANEngine:
    engine = DFGANEngine(None, "cpu")
    # Real conditioning: the identity-initialised placeholder would ignore the prompt entirely.
    _scramble(engine.loaded.netG)
    return engine


def _pixel_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())


def test_engine_reproduces_a_seed_regardless_of_batching(engine: DFGANEngine) -> None:
    batched = engine.generate(
        [GenerationRequest("a red circle", [1, 2, 3]), GenerationRequest("a blue square", [7, 2])]
    )
    again = engine.generate(
        [GenerationRequest("a red circle", [1, 2, 3]), GenerationRequest("a blue square", [7, 2])]
    )
    for first, second in zip(batched[0], again[0], strict=True):
        assert np.array_equal(np.asarray(first), np.asarray(second))
    # Batch composition may only change float rounding (well under one grey level on average).
    alone = engine.generate([GenerationRequest("a red circle", [2])])[0][0]
    assert _pixel_diff(batched[0][1], alone) < 0.5
    alone = engine.generate([GenerationRequest("a blue square", [7])])[0][0]
    assert _pixel_diff(batched[1][0], alone) < 0.5
    # ...whereas another seed or another prompt is another picture.
    assert _pixel_diff(batched[0][0], batched[0][1]) > 2
    assert _pixel_diff(batched[0][1], batched[1][1]) > 2


def test_engine_draws_a_cpu_batch_in_passes_of_its_chunk_size(engine: DFGANEngine) -> None:
    """A CPU batch split into passes of ``chunk`` pictures gives every request its own pictures, in
    order, as one pass would (variations' noise included), and the passes really are smaller."""
    assert engine.chunk == 4  # the default on a CPU
    requests = [
        GenerationRequest("a red circle", [1, 2, 3]),
        GenerationRequest("a blue square", [7]),
        GenerationRequest("a green triangle", [4, 5], noise_near=(9, 0.25)),
    ]
    sizes: list[int] = []
    original = engine.loaded.draw

    def counted(prompts: list[str], seeds: list[int], *rest: object) -> object:
        sizes.append(len(seeds))
        return original(prompts, seeds, *rest)

    try:
        engine.loaded.draw = counted  # type: ignore[method-assign]
        engine.chunk = 0
        whole = engine.generate(requests)
        engine.chunk = 2
        parts = engine.generate(requests)
    finally:
        engine.loaded.draw = original  # type: ignore[method-assign]
        engine.chunk = 4
    assert sizes == [6, 2, 2, 2]
    assert [len(r) for r in parts] == [3, 1, 2]
    for one, split in zip(whole, parts, strict=True):
        for a, b in zip(one, split, strict=True):
            assert _pixel_diff(a, b) < 0.5
    assert _pixel_diff(parts[0][0], parts[0][1]) > 2 and _pixel_diff(parts[0][2], parts[2][0]) > 2


def test_engine_serves_requests_of_different_sizes(engine: DFGANEngine) -> None:
    out = engine.generate(
        [GenerationRequest("a green triangle", [5], size=128), GenerationRequest("x", [5, 6], size=64)]
    )
    assert [[im.size for im in group] for group in out] == [[(128, 128)], [(64, 64), (64, 64)]]
    assert all(im.mode == "RGB" for group in out for im in group)
    assert engine.info.name == "dfgan" and engine.info.version == "random-init"


def test_engine_reports_progress_and_honours_cancel(engine: DFGANEngine) -> None:
    calls: list[tuple[int, int]] = []
    engine.generate([GenerationRequest("a", [1])], progress=lambda s, t: calls.append((s, t)) or False)
    assert calls[-1] == (1, 1)
    with pytest.raises(GenerationCancelled):
        engine.generate([GenerationRequest("a", [1])], progress=lambda s, t: True)


def test_sentence_vectors_apply_truncation_and_scale(engine: DFGANEngine) -> None:
    from training.dfgan.conditioning import sentence_vectors

    encoder = engine.loaded.text_encoder
    plain = sentence_vectors(encoder, ["a small red circle on the left"], DFGANConfig())
    assert plain.norm().item() == pytest.approx(1.0, abs=1e-4)  # MiniLM is unit-norm
    scaled = sentence_vectors(encoder, ["a small red circle on the left"], DFGANConfig(cond_scale=5.0))
    assert torch.allclose(scaled, 5 * plain, atol=1e-5)
    cut = sentence_vectors(encoder, ["a small red circle on the left"], DFGANConfig(max_caption_tokens=3))
    assert torch.allclose(cut, sentence_vectors(encoder, ["a small red"], DFGANConfig()), atol=1e-5)


def test_every_drawer_draws_the_engine_s_picture(engine: DFGANEngine) -> None:
    """The seed -> noise -> image contract is LoadedGenerator.draw; the engine, evaluation (R-precision
    and attributes), FID and the grids all go through it, so they show the engine's pictures."""
    from training.dfgan.trainer import sample_grid
    from training.eval.r_precision import dfgan_generator
    from training.images import to_pil, to_uint8
    from training.seeds import seed_noise

    loaded = engine.loaded
    # The noise of a seed is the documented one, whatever the other seeds beside it.
    noise = seed_noise([3, 9], loaded.config.nz)
    assert torch.equal(noise[1], torch.randn(loaded.config.nz, generator=torch.Generator().manual_seed(9)))
    assert torch.equal(seed_noise([9], loaded.config.nz)[0], noise[1])
    drawn = loaded.draw(["a red circle", "a blue square"], [4, 4])
    assert drawn.shape == (2, 3, 64, 64) and drawn.min() >= -1 and drawn.max() <= 1
    assert _pixel_diff(to_pil(drawn)[0], to_pil(drawn)[1]) > 2  # the prompt matters
    served = engine.generate([GenerationRequest("a red circle", [4])])[0][0]
    assert np.array_equal(np.asarray(served), np.asarray(to_pil(loaded.draw(["a red circle"], [4]))[0]))
    assert torch.equal(dfgan_generator(loaded)(["a red circle"], [4]), loaded.draw(["a red circle"], [4]))
    # Grid row r, column c is prompt r with seed c.
    rows = loaded.draw_rows(["a red circle", "a blue square"], [4, 5])
    assert _pixel_diff(to_pil(rows[1])[0], to_pil(drawn)[1]) < 0.5
    grid = sample_grid(loaded, ["a red circle"], seeds=[4])
    assert np.array_equal(np.asarray(grid.crop((240, 0, 304, 64))), np.asarray(served))
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        loaded.draw(["a", "b"], [1])
    assert to_uint8(torch.tensor([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0])).tolist() == [0, 0, 128, 255, 255, 255]


def test_configs_name_unknown_keys_and_accept_run_information(tmp_path: Path) -> None:
    from training.text.damsm.config import DAMSMConfig

    for cls in (DFGANConfig, DAMSMConfig):
        data = {**cls().to_dict(), "training": {"step": 3}}
        assert cls.from_dict(data) == cls()
        with pytest.raises(ValueError, match="lr_typo"):
            cls.from_dict({**data, "lr_typo": 1})
    config = DFGANConfig(epochs=3, version="a", ngf=16)
    config.save(tmp_path / "c.json")
    resumed = DFGANConfig(epochs=9, version="b", ngf=8).resumed_from(
        tmp_path / "c.json", ("epochs", "version")
    )
    assert (resumed.epochs, resumed.version, resumed.ngf) == (9, "b", 16)
