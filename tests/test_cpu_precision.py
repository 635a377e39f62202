"""bf16 autocast for CPU training: detection, fallback, and that a step computes the same thing.

These hold on any x86 CPU: where the CPU has no native bf16 the switch falls back to float32 and
the bf16 step equals the float32 one exactly; where it has, the two agree to bf16 rounding.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from training.dfgan.config import DFGANConfig
from training.dfgan.trainer import build_models
from training.dfgan.trainer import train_step as dfgan_step
from training.diffusion.config import DiffusionConfig
from training.diffusion.trainer import train_step as diffusion_step
from training.precision import autocast, bf16_enabled, cpu_flags_have_native_bf16, cpu_has_native_bf16

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from dfgan_train_step import random_batch  # noqa: E402

_CPUINFO = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 avx512f {extra}\n\n"


def test_native_bf16_is_read_from_the_cpu_flags() -> None:
    assert cpu_flags_have_native_bf16(_CPUINFO.format(extra="avx512_bf16"))
    assert cpu_flags_have_native_bf16(_CPUINFO.format(extra="amx_tile amx_bf16"))
    assert not cpu_flags_have_native_bf16(_CPUINFO.format(extra="avx512bw"))
    # a flag-like word outside the flags line does not count
    assert not cpu_flags_have_native_bf16("model name\t: avx512_bf16 lookalike\nflags\t: sse2\n")
    assert not cpu_flags_have_native_bf16("")


def test_bf16_is_used_only_where_asked_and_supported() -> None:
    assert not bf16_enabled("cpu", on_gpu=True, on_cpu=False)
    assert bf16_enabled("cpu", on_gpu=False, on_cpu=True) == cpu_has_native_bf16()
    assert bf16_enabled("cuda", on_gpu=True, on_cpu=False)
    assert not bf16_enabled("cuda", on_gpu=False, on_cpu=True)
    with autocast("cpu", enabled=False):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("cpu", enabled=True):
        assert torch.is_autocast_enabled("cpu")


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-3)


def test_dfgan_bf16_step_matches_the_float32_step() -> None:
    torch.set_num_threads(1)
    base = DFGANConfig(imsize=64, ngf=8, ndf=8, cond_dim=384, batch_size=8, cond_scale=5.0)
    real, sent, noise = random_batch(base, 8)
    results = {}
    for bf16 in (False, True):
        config = replace(base, bf16_on_cpu=bf16)
        m = build_models(config, "cpu")
        losses = [dfgan_step(m, config, real, sent, noise) for _ in range(3)]
        results[bf16] = (losses, m.ema.state_dict())
    (full, ema_full), (half, ema_half) = results[False], results[True]
    if not cpu_has_native_bf16():  # fallback: the very same float32 computation
        assert full == half
    for a, b in zip(full, half, strict=True):
        for key in ("loss_d", "loss_g", "score_real", "score_fake"):
            # scores are O(1) and near 0 early on: compare on that scale, not relative to ~0
            assert abs(a[key] - b[key]) < 0.05 * max(1.0, abs(a[key])), (key, a[key], b[key])
    # the weights stay float32 and move the same way
    for key, value in ema_half.items():
        assert value.dtype == ema_full[key].dtype
        if value.is_floating_point():
            assert torch.allclose(value.double(), ema_full[key].double(), atol=2e-3), key


def test_diffusion_bf16_step_matches_the_float32_step_and_loss_stays_float32() -> None:
    from diffusers import UNet2DConditionModel

    torch.set_num_threads(1)
    base = DiffusionConfig(block_out_channels=(16, 32), attention_levels=(False, True), norm_num_groups=8)
    g = torch.Generator().manual_seed(0)
    noisy = torch.randn(4, 3, 32, 32, generator=g)
    noise = torch.randn(4, 3, 32, 32, generator=g)
    cond = torch.nn.functional.normalize(torch.randn(4, 384, generator=g), dim=1)
    t = torch.randint(0, 1000, (4,), generator=g)
    torch.manual_seed(0)
    template = UNet2DConditionModel(**base.unet_kwargs())
    losses = {}
    for bf16 in (False, True):
        unet, ema = copy.deepcopy(template), copy.deepcopy(template).requires_grad_(False)
        opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
        config = replace(base, bf16_on_cpu=bf16)
        losses[bf16] = [diffusion_step(unet, ema, opt, config, 0, noisy, t, cond, noise) for _ in range(2)]
        assert all(loss.dtype == torch.float32 for loss in losses[bf16])
        assert next(unet.parameters()).dtype == torch.float32
    # The float32 step's loss is the plain MSE of the untouched model's prediction (checked in float64).
    with torch.no_grad():
        pred = template(noisy, t, encoder_hidden_states=cond[:, None], class_labels=cond).sample
    expected = ((pred.double() - noise.double()) ** 2).mean()
    assert float(losses[False][0]) == pytest.approx(float(expected), rel=1e-5)
    for a, b in zip(losses[False], losses[True], strict=True):
        assert _rel(float(b), float(a)) < 0.05
    if not cpu_has_native_bf16():
        assert [float(x) for x in losses[False]] == [float(x) for x in losses[True]]
