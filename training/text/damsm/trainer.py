"""Pretrain a DAMSM text/image encoder pair on a captioned dataset (AttnGAN's ``pretrain_DAMSM.py``).

Writes into ``out``::

    out/config.json, vocab.json, encoders.safetensors   the encoder folder (see checkpoint.py)
    out/losses.jsonl                                      one line per step
    out/loss_curve.png                                    word and sentence losses against steps

Deterministic for a given ``config.seed`` on one device and thread count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from training.data import CaptionedDataset
from training.loss_log import plot_curves
from training.run_log import RunLog, epoch_batch
from training.text.damsm.checkpoint import MatchingEncoders, build_encoders, save_encoders
from training.text.damsm.config import DAMSMConfig
from training.text.damsm.losses import damsm_loss
from training.text.vocab import Vocabulary


@dataclass
class DAMSMTrainResult:
    """Where a finished run left its files, and how it went."""

    folder: Path
    loss_curve: Path
    steps: int
    seconds: float
    final_losses: dict[str, float]


def train_damsm(
    config: DAMSMConfig,
    dataset: CaptionedDataset,
    out: str | Path,
    steps: int,
    device: str | torch.device = "cpu",
    console: Console | None = None,
    min_word_count: int = 1,
) -> DAMSMTrainResult:
    """Train both encoders for ``steps`` Adam steps on ``dataset`` and save them into ``out``."""
    out, console = Path(out), console or Console()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)  # initial weights and dropout masks
    vocab = Vocabulary.build(dataset.captions, min_count=min_word_count)
    enc = build_encoders(config, vocab)
    enc.text.to(device).train()
    enc.image.to(device).train()
    # Items sharing a caption are one class: the losses must not push them apart.
    class_of = {c: i for i, c in enumerate(sorted(set(dataset.captions)))}
    optimizer = torch.optim.Adam(
        [*enc.text.parameters(), *enc.image.parameters()], lr=config.learning_rate, betas=(0.5, 0.999)
    )
    with RunLog(out, "DAMSM", steps, console=console, print_every=100) as log:
        for step in range(1, steps + 1):
            items = [dataset[i] for i in epoch_batch(len(dataset), config.batch_size, config.seed, step - 1)]
            images = torch.stack([image for image, _ in items]).to(device)
            captions = [caption for _, caption in items]
            class_ids = torch.tensor([class_of[c] for c in captions], device=device)

            losses = train_step(enc, optimizer, images, captions, class_ids)
            log.step(step, losses, f"DAMSM w {losses['w_loss']:.3f} s {losses['s_loss']:.3f}")
    seconds, history = log.seconds, log.history
    enc.eval()
    save_encoders(out, enc, extra={"steps": steps, "dataset_size": len(dataset), "seconds": round(seconds)})
    plot_losses(history, out / "loss_curve.png")
    return DAMSMTrainResult(out, out / "loss_curve.png", steps, seconds, history[-1] if history else {})


def train_step(
    enc: MatchingEncoders,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    captions: list[str],
    class_ids: torch.Tensor,
) -> dict[str, float]:
    """One Adam step on the summed DAMSM losses; returns the word and sentence losses."""
    config = enc.config
    regions, code = enc.image(images)
    ids, lengths = enc.tokenize(captions)
    words, sentence = enc.text(ids, lengths)
    losses = damsm_loss(
        regions, code, words, sentence, lengths, class_ids, config.gamma1, config.gamma2, config.gamma3
    )
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    # AttnGAN clips the LSTM's gradient; its exploding gradients are the usual failure.
    torch.nn.utils.clip_grad_norm_(enc.text.parameters(), config.rnn_grad_clip)
    optimizer.step()
    values = {k: v.item() for k, v in losses.items()}
    return {
        "loss": values["loss"],
        "w_loss": values["w_loss0"] + values["w_loss1"],
        "s_loss": values["s_loss0"] + values["s_loss1"],
    }


def plot_losses(history: list[dict[str, float]], path: Path) -> None:
    """Word-level and sentence-level losses against steps (moving average)."""
    plot_curves(history, ("w_loss", "s_loss"), path, title="DAMSM pretraining")
