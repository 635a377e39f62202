"""DF-GAN objectives: the one-way discriminator's losses and the Matching-Aware Gradient Penalty.

The discriminator sees three kinds of pair: (real image, its caption) -> real,
(generated image, caption) -> fake, (real image, another image's caption) -> mismatched, i.e. fake.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def discriminator_loss(
    real: torch.Tensor, fake: torch.Tensor, mismatched: torch.Tensor, kind: str = "hinge"
) -> torch.Tensor:
    """``loss(real) + (loss(fake) + loss(mismatched)) / 2`` on the conditional head's scores."""
    if kind == "hinge":
        return F.relu(1 - real).mean() + (F.relu(1 + fake).mean() + F.relu(1 + mismatched).mean()) / 2
    if kind == "bce":
        bce = F.binary_cross_entropy_with_logits
        return (
            bce(real, torch.ones_like(real))
            + (bce(fake, torch.zeros_like(fake)) + bce(mismatched, torch.zeros_like(mismatched))) / 2
        )
    raise ValueError(f"unknown loss {kind!r}")


def generator_loss(fake: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """Push the scores of (generated image, caption) pairs up."""
    if kind == "hinge":
        return -fake.mean()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    raise ValueError(f"unknown loss {kind!r}")


def matching_aware_gradient_penalty(
    images: torch.Tensor, sentences: torch.Tensor, scores: torch.Tensor, k: float = 2.0, p: float = 6.0
) -> torch.Tensor:
    """MA-GP: ``k * mean(||grad of score w.r.t. (image, sentence)||_2 ** p)`` on real, matching pairs.

    Smooths the discriminator around the real data *and* the text that describes it, which pulls
    generated images toward text-matching real ones. ``images`` and ``sentences`` must require grad.
    """
    grad_img, grad_sent = torch.autograd.grad(
        outputs=scores.sum(), inputs=(images, sentences), create_graph=True
    )
    grad = torch.cat((grad_img.flatten(1), grad_sent.flatten(1)), dim=1)
    return k * grad.norm(2, dim=1).pow(p).mean()
