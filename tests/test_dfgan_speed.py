"""The fast DF-GAN paths compute what the plain ones do: fused affine MLPs, the trainer's step."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest
import torch

from training.dfgan.checkpoint import load_generator
from training.dfgan.conditioning import sentence_vectors
from training.dfgan.config import DFGANConfig
from training.dfgan.model import DFBlock
from training.dfgan.trainer import build_models, train_step
from worker.engines.dfgan import SHIPPED_CHECKPOINT

ROOT = Path(__file__).resolve().parent.parent


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "dfgan_train_step", ROOT / "benchmarks" / "dfgan_train_step.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _one_thread():  # noqa: ANN202
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.skipif(not (SHIPPED_CHECKPOINT / "config.json").is_file(), reason="no shipped checkpoint")
def test_shipped_checkpoint_gives_the_same_images_with_fused_affines() -> None:
    loaded = load_generator(SHIPPED_CHECKPOINT, "cpu")
    netG, config = loaded.netG, loaded.config
    g = torch.Generator().manual_seed(1234)
    noise = torch.randn(6, config.nz, generator=g)
    captions = [
        "a big red circle in the center",
        "a small blue square at the top left",
        "a green triangle",
    ] * 2
    sent = sentence_vectors(loaded.text_encoder, captions, config)
    with torch.inference_mode():
        fused = netG(noise, sent)
        again = netG(noise, sent)  # second call: the cached fused weights
        unfused = _benchmark().plain_generator(netG, noise, sent)  # each Affine on its own (old forward)
    assert torch.equal(fused, unfused)
    assert torch.equal(again, unfused)
    # Real, prompt-dependent pictures, not a constant the two paths could trivially agree on.
    assert (fused[0] - fused[1]).abs().mean() > 0.05


def test_fused_weights_follow_parameter_updates_in_inference() -> None:
    block = DFBlock(40, 16)
    x, cond = torch.randn(2, 16, 4, 4), torch.randn(2, 40)
    with torch.no_grad():
        first = block(x, cond)  # identity-initialised: caches gamma = 1, beta = 0
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # like an EMA update or a checkpoint load
        after = block(x, cond)
        assert not torch.equal(first, after)
        assert torch.equal(after, block.forward_unfused(x, cond))


def test_fused_block_trains_the_affine_parameters_like_the_unfused_one() -> None:
    block = DFBlock(40, 16)
    for p in block.parameters():
        p.data.add_(torch.randn_like(p) * 0.1)
    x, cond = torch.randn(2, 16, 4, 4), torch.randn(2, 40)
    grads = []
    for forward in (block.forward, block.forward_unfused):
        block.zero_grad(set_to_none=True)
        forward(x, cond).square().sum().backward()
        grads.append([p.grad.clone() for p in block.parameters()])
    for fused, plain in zip(*grads, strict=True):
        torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss", ["hinge", "bce"])
def test_train_step_computes_the_plain_steps_losses_and_updates(loss: str) -> None:
    bench = _benchmark()
    config = DFGANConfig(ngf=8, ndf=8, batch_size=6, cond_dim=384, loss=loss, ema_decay=0.9)
    # In float64: Adam divides each gradient by its own running scale, so float32 kernel-order
    # differences (which differ between CPUs) grow into visible parameter differences. In float64
    # both paths agree to ~1e-12, and a real difference in what the steps compute still shows.
    ours, plain = build_models(config, "cpu"), bench.baseline_models(config, "cpu")
    for models in (ours, plain):
        for net in (models.netG, models.netD, models.netC, models.ema):
            net.double()
    for p, q in zip(ours.netG.parameters(), plain.netG.parameters(), strict=True):
        assert torch.equal(p, q)  # same starting weights, different memory layout
    # Perturb D like training would: its residual gains start at zero, which would hide its convs.
    for a, b in ((ours.netD, plain.netD), (ours.netG, plain.netG)):
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for p, q in zip(a.parameters(), b.parameters(), strict=True):
                delta = torch.randn(p.shape, generator=g) * 0.05
                p.add_(delta), q.add_(delta)
    for step in range(3):
        real, sent, noise = (t.double() for t in bench.random_batch(config, 6, seed=step))
        got = train_step(ours, config, real, sent, noise)
        want = bench.baseline_step(plain, config, real, sent, noise)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), (step, key)
    assert got["gp"] > 0  # the penalty was really computed
    for name, a, b in (
        ("G", ours.netG, plain.netG),
        ("EMA", ours.ema, plain.ema),
        ("D", ours.netD, plain.netD),
    ):
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            assert p.dtype == torch.float64
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-10, msg=lambda m, n=name: f"{n}: {m}")


def test_train_step_leaves_the_callers_batch_alone() -> None:
    config = DFGANConfig(ngf=8, ndf=8, batch_size=4)
    m = build_models(config, "cpu")
    real, sent, noise = torch.rand(4, 3, 64, 64) * 2 - 1, torch.randn(4, 384), torch.randn(4, 100)
    train_step(m, config, real, sent, noise)
    assert not real.requires_grad and not sent.requires_grad and real.grad is None


def test_compiled_generator_keeps_checkpoint_names() -> None:
    config = replace(DFGANConfig(ngf=8, ndf=8), compile_generator=True)
    m = build_models(config, "cpu")
    assert list(m.netG.state_dict()) == list(m.ema.state_dict())  # no "_orig_mod." prefix


def test_fused_weights_cached_in_inference_mode_are_not_reused_outside_it() -> None:
    block = DFBlock(40, 16)
    x, cond = torch.randn(2, 16, 4, 4), torch.randn(2, 40)
    with torch.inference_mode():
        block(x, cond)
    with torch.no_grad():
        block(x, cond)
    # A frozen block under autograd (e.g. gradients w.r.t. the input) must not meet inference tensors.
    block.requires_grad_(False)
    x.requires_grad_()
    block(x, cond).sum().backward()
    assert x.grad is not None
