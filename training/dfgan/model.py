"""DF-GAN: Deep Fusion GAN for text-to-image synthesis (Tao et al., CVPR 2022).

Follows the official code (tobran/DF-GAN, ``code/models/GAN.py``):

* :class:`NetG` maps noise ``z`` to a 4x4 feature map and grows it with :class:`GBlock` s, each
  upsampling x2 and fusing the condition ``[z; sentence]`` through two :class:`DFBlock` s.
* :class:`NetD` is a one-way, residual down-sampling discriminator that ends at ``ndf*8 x 4 x 4``.
* :class:`NetC` judges (image features, sentence) pairs from that map and the tiled sentence vector.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Noise dimension used by the paper.
NOISE_DIM = 100


def generator_channels(nf: int, imsize: int) -> list[tuple[int, int]]:
    """(in, out) channels of each G block, 4x4 -> imsize: ``nf*8, nf*8, ..., nf*2, nf``."""
    layers = _layer_count(imsize)
    channels = [nf * min(2**i, 8) for i in range(layers)][::-1]
    return list(zip(channels[:-1], channels[1:], strict=True))


def discriminator_channels(nf: int, imsize: int) -> list[tuple[int, int]]:
    """(in, out) channels of each D block, imsize -> 4x4: ``nf, nf*2, ..., nf*8, nf*8``."""
    layers = _layer_count(imsize)
    channels = [nf * min(2**i, 8) for i in range(layers)]
    return list(zip(channels[:-1], channels[1:], strict=True))


def _layer_count(imsize: int) -> int:
    if imsize < 8 or 2 ** int(math.log2(imsize)) != imsize:
        raise ValueError(f"imsize must be a power of two >= 8, got {imsize}")
    return int(math.log2(imsize)) - 1


class Affine(nn.Module):
    """Channel-wise affine transform whose scale and shift are predicted from the condition.

    Initialised to the identity (gamma = 1, beta = 0) so an untrained block passes features through.
    """

    def __init__(self, cond_dim: int, num_features: int) -> None:
        super().__init__()
        self.fc_gamma = nn.Sequential(
            nn.Linear(cond_dim, num_features), nn.ReLU(inplace=True), nn.Linear(num_features, num_features)
        )
        self.fc_beta = nn.Sequential(
            nn.Linear(cond_dim, num_features), nn.ReLU(inplace=True), nn.Linear(num_features, num_features)
        )
        nn.init.zeros_(self.fc_gamma[2].weight)
        nn.init.ones_(self.fc_gamma[2].bias)
        nn.init.zeros_(self.fc_beta[2].weight)
        nn.init.zeros_(self.fc_beta[2].bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma = self.fc_gamma(cond)[:, :, None, None]
        beta = self.fc_beta(cond)[:, :, None, None]
        return gamma * x + beta


class DFBlock(nn.Module):
    """Deep text-image fusion block: (affine -> LeakyReLU) twice.

    The four condition MLPs (gamma and beta of both affines) are evaluated together: one matmul
    for their first layers, one batched matmul for their second layers. That is the same arithmetic
    as calling ``affine0`` and ``affine1`` (:meth:`forward_unfused`), in 2 kernels instead of 8.
    The parameters stay in the two :class:`Affine` modules, so checkpoints and optimiser states
    keep their names and shapes.
    """

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.affine0 = Affine(cond_dim, channels)
        self.affine1 = Affine(cond_dim, channels)
        self._fused_cache: tuple[tuple[object, ...], tuple[torch.Tensor, ...]] | None = None

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma0, beta0, gamma1, beta1 = self.scales_and_shifts(cond)
        # ``gamma * x + beta`` as in Affine (not addcmul, whose fused multiply-add rounds differently).
        h = F.leaky_relu(gamma0 * x + beta0, 0.2)
        return F.leaky_relu(gamma1 * h + beta1, 0.2)

    def forward_unfused(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The block as the paper draws it: each affine's MLPs on their own (the reference)."""
        h = F.leaky_relu(self.affine0(x, cond), 0.2)
        return F.leaky_relu(self.affine1(h, cond), 0.2)

    def scales_and_shifts(self, cond: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(gamma0, beta0, gamma1, beta1)``, each ``[B, C, 1, 1]``, from one pass of the fused MLPs."""
        w1, b1, w2, b2 = self._fused_weights()
        groups, channels = w2.shape[0], w2.shape[1]
        hidden = F.relu(F.linear(cond, w1, b1)).view(-1, groups, channels).transpose(0, 1)  # [4, B, C]
        out = torch.baddbmm(b2.unsqueeze(1), hidden, w2.transpose(1, 2))  # [4, B, C]
        return tuple(out[..., None, None].unbind(0))

    def _mlps(self) -> list[nn.Sequential]:
        return [self.affine0.fc_gamma, self.affine0.fc_beta, self.affine1.fc_gamma, self.affine1.fc_beta]

    def _fused_weights(self) -> tuple[torch.Tensor, ...]:
        mlps = self._mlps()
        params = [p for mlp in mlps for p in (mlp[0].weight, mlp[0].bias, mlp[2].weight, mlp[2].bias)]
        if torch.is_grad_enabled():
            return self._stack(mlps)  # rebuilt each call, so gradients reach the parameters
        # No grad: concatenate once and reuse until a parameter is changed or moved (the key holds
        # each parameter's storage address and in-place version counter). Tensors made under
        # inference_mode may not be used outside it, hence the mode in the key.
        key = (torch.is_inference_mode_enabled(), *((p.data_ptr(), p._version) for p in params))
        if self._fused_cache is None or self._fused_cache[0] != key:
            with torch.no_grad():
                self._fused_cache = (key, self._stack(mlps))
        return self._fused_cache[1]

    @staticmethod
    def _stack(mlps: list[nn.Sequential]) -> tuple[torch.Tensor, ...]:
        return (
            torch.cat([m[0].weight for m in mlps]),
            torch.cat([m[0].bias for m in mlps]),
            torch.stack([m[2].weight for m in mlps]),
            torch.stack([m[2].bias for m in mlps]),
        )


class GBlock(nn.Module):
    """Upsample x2, then ``shortcut(x) + conv(fuse(conv(fuse(x))))``."""

    def __init__(self, cond_dim: int, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.fuse1 = DFBlock(cond_dim, in_ch)
        self.c1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.fuse2 = DFBlock(cond_dim, out_ch)
        self.c2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        # A 1x1 conv only where the channel count changes; otherwise the identity.
        self.c_sc = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_sc(x) if self.c_sc is not None else x

    def residual(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.c1(self.fuse1(x, cond))
        return self.c2(self.fuse2(h, cond))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2)
        return self.shortcut(x) + self.residual(x, cond)


class NetG(nn.Module):
    """DF-GAN generator: ``(noise [B, nz], sentence [B, cond_dim]) -> image [B, 3, imsize, imsize]``.

    Pixels are in [-1, 1]."""

    def __init__(self, ngf: int, nz: int = NOISE_DIM, cond_dim: int = 256, imsize: int = 64) -> None:
        super().__init__()
        self.ngf, self.nz, self.cond_dim, self.imsize = ngf, nz, cond_dim, imsize
        self.fc = nn.Linear(nz, ngf * 8 * 4 * 4)
        # Every block is conditioned on noise and sentence together, as in the official code.
        self.blocks = nn.ModuleList(
            GBlock(nz + cond_dim, in_ch, out_ch) for in_ch, out_ch in generator_channels(ngf, imsize)
        )
        self.to_rgb = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(ngf, 3, 3, 1, 1), nn.Tanh())

    def forward(self, noise: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        h = self.fc(noise).view(noise.size(0), 8 * self.ngf, 4, 4)
        cond = torch.cat((noise, sentence), dim=1)
        for block in self.blocks:
            h = block(h, cond)
        return self.to_rgb(h)


class DBlock(nn.Module):
    """Down-sampling residual block: ``avgpool(shortcut(x)) + gamma * conv(conv_stride2(x))``.

    ``gamma`` starts at zero so the discriminator begins as its shortcut path and learns how much
    residual to add.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv_r = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2),
            nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False),
            nn.LeakyReLU(0.2),
        )
        self.conv_s = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.conv_r(x)
        if self.conv_s is not None:
            x = self.conv_s(x)
        return F.avg_pool2d(x, 2) + self.gamma * res


class NetD(nn.Module):
    """DF-GAN discriminator backbone: ``image -> features [B, ndf*8, 4, 4]``."""

    def __init__(self, ndf: int, imsize: int = 64) -> None:
        super().__init__()
        self.conv_img = nn.Conv2d(3, ndf, 3, 1, 1)
        self.blocks = nn.ModuleList(DBlock(i, o) for i, o in discriminator_channels(ndf, imsize))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_img(x)
        for block in self.blocks:
            h = block(h)
        return h


class NetC(nn.Module):
    """Conditional head: scores how real *and* text-matching ``features`` are for ``sentence``."""

    def __init__(self, ndf: int, cond_dim: int = 256) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        self.joint_conv = nn.Sequential(
            nn.Conv2d(ndf * 8 + cond_dim, ndf * 2, 3, 1, 1, bias=False),
            nn.LeakyReLU(0.2),
            nn.Conv2d(ndf * 2, 1, 4, 1, 0, bias=False),
        )

    def forward(self, features: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        tiled = sentence.view(-1, self.cond_dim, 1, 1).expand(-1, -1, *features.shape[2:])
        return self.joint_conv(torch.cat((features, tiled), dim=1)).view(-1)
