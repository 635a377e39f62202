"""DAMSM's two encoders (AttnGAN, Xu et al. 2018, Sec. 3.3), as DF-GAN uses them.

* :class:`TextEncoder` — word embedding -> bidirectional LSTM. Each word's feature is the two
  directions' hidden states at that word; the sentence feature is the two directions' last hidden
  states, concatenated.
* :class:`ImageEncoder` — AttnGAN maps Inception-v3's 17x17 ``mixed_6e`` maps to region features
  and its pooled output to a global feature. We cannot download Inception, and our images are 64x64,
  so a small conv net plays its part: 8x8 region features and a global feature, both ``feature_dim``
  wide, living in the same space as the words and sentences.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from training.text.damsm.config import DAMSMConfig


class TextEncoder(nn.Module):
    """``(ids [B, T], lengths [B]) -> (words [B, D, T], sentence [B, D])`` with ``D = 2 * hidden``.

    Padded positions of ``words`` are zero; ``lengths`` may come in any order.
    """

    def __init__(self, config: DAMSMConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=0)
        self.dropout = nn.Dropout(config.dropout)
        self.rnn = nn.LSTM(config.embedding_dim, config.hidden_dim, batch_first=True, bidirectional=True)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)  # AttnGAN's init_weights

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.dropout(self.embedding(ids))
        # Packing makes each direction stop at the caption's real end, not at the padding.
        packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        output, (hidden, _) = self.rnn(packed)
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=ids.shape[1])
        words = output.transpose(1, 2)  # [B, D, T]
        # hidden: [2 directions, B, H], already restored to the input order -> [B, 2H]
        sentence = hidden.transpose(0, 1).reshape(ids.shape[0], -1)
        return words, sentence


def _down(c_in: int, c_out: int) -> nn.Sequential:
    """Halve the resolution: 4x4 stride-2 conv, batch norm, leaky ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True)
    )


class ImageEncoder(nn.Module):
    """``images [B, 3, H, W] in [-1, 1] -> (regions [B, D, 8, 8], global [B, D])``.

    Images of another size are resized to ``config.imsize`` first (AttnGAN resizes to Inception's
    299). The global feature comes from the whole 4x4 map, flattened rather than average-pooled, so it
    keeps *where* things are — on our data, position is a quarter of every caption.
    """

    def __init__(self, config: DAMSMConfig) -> None:
        super().__init__()
        self.imsize = config.imsize
        c, d = config.image_channels, config.feature_dim
        steps = max(1, (config.imsize // 8).bit_length() - 1)  # 64 -> 8 takes 3 halvings
        layers, width = [], 3
        for i in range(steps):
            layers.append(_down(width, c * 2**i))
            width = c * 2**i
        self.trunk = nn.Sequential(*layers)  # -> [B, width, 8, 8]
        self.regions = nn.Conv2d(width, d, 1)  # AttnGAN's emb_features (a 1x1 conv)
        self.pool = _down(width, width // 2)  # 8x8 -> 4x4
        self.code = nn.Linear(width // 2 * 16, d)  # AttnGAN's emb_cnn_code

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.shape[-1] != self.imsize or images.shape[-2] != self.imsize:
            images = F.interpolate(
                images, size=(self.imsize, self.imsize), mode="bilinear", align_corners=False, antialias=True
            )
        x = self.trunk(images)
        return self.regions(x), self.code(self.pool(x).flatten(1))
