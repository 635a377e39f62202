"""DAMSM losses (AttnGAN, Sec. 3.3): the batch's matching captions and images should score highest.

Both losses build a ``[B images, B captions]`` score matrix and apply cross-entropy in both
directions (which caption goes with each image, which image goes with each caption), with the
diagonal as the answer. Pairs of *different* items that share a caption (``class_ids``) are masked
out, so an equally right answer is not punished as wrong — on the shapes data, with 180 captions,
most batches hold repeats.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _pair_mask(class_ids: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor | None:
    """``[B, B]`` True where two different batch items share a class (AttnGAN's ``masks``)."""
    if class_ids is None:
        return None
    same = class_ids[:, None] == class_ids[None, :]
    return same & ~torch.eye(batch, dtype=torch.bool, device=device)


def _both_ways(scores: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of ``scores [images, captions]`` along rows and along columns."""
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    labels = torch.arange(scores.shape[0], device=scores.device)
    return F.cross_entropy(scores, labels), F.cross_entropy(scores.t(), labels)


def sentence_loss(
    image_code: torch.Tensor,
    sentence: torch.Tensor,
    class_ids: torch.Tensor | None = None,
    gamma3: float = 10.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sentence-level DAMSM loss ``(image->caption, caption->image)`` from global image features
    ``[B, D]`` and sentence features ``[B, D]``: cosine similarities times ``gamma3`` as logits."""
    scores = gamma3 * F.normalize(image_code, dim=1) @ F.normalize(sentence, dim=1).t()
    return _both_ways(scores, _pair_mask(class_ids, len(sentence), sentence.device))


def word_attention(
    words: torch.Tensor, regions: torch.Tensor, word_mask: torch.Tensor, gamma1: float = 4.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attend from every caption's words to every image's regions (AttnGAN's ``func_attention``).

    ``words [C, D, T]``, ``regions [I, D, N]`` and ``word_mask [C, T]`` (True at real words) give
    ``(context [C, I, D, T], attention [C, I, T, N])``: for word ``t`` of caption ``c``, the
    region-context vector of image ``i`` and the attention weights it was built with.
    """
    scores = torch.einsum("cdt,idn->citn", words, regions)
    # Eq. (8): normalise each region's scores over the caption's (real) words ...
    scores = scores.masked_fill(~word_mask[:, None, :, None], float("-inf")).softmax(dim=2)
    # ... Eq. (9): then each word's, sharpened by gamma1, over the regions.
    attention = (gamma1 * scores).softmax(dim=3)
    context = torch.einsum("idn,citn->cidt", regions, attention)
    return context, attention


def word_loss(
    regions: torch.Tensor,
    words: torch.Tensor,
    lengths: torch.Tensor,
    class_ids: torch.Tensor | None = None,
    gamma1: float = 4.0,
    gamma2: float = 5.0,
    gamma3: float = 10.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Word-level DAMSM loss ``(image->caption, caption->image)`` from region features
    ``[B, D, H, W]`` and word features ``[B, D, T]`` (``lengths [B]`` real words per caption).

    Each word is compared (cosine) with its attention-weighted region context; a caption's score
    for an image is Eq. (10), ``log(sum_t exp(gamma2 * R(c_t, e_t))) / gamma2``. (AttnGAN's released
    code leaves out the ``1 / gamma2``; the paper has it, and it keeps the logits at the same scale
    as the sentence loss's.)
    """
    batch, _, length = words.shape
    word_mask = torch.arange(length, device=words.device)[None, :] < lengths.to(words.device)[:, None]
    context, _ = word_attention(words, regions.flatten(2), word_mask, gamma1)
    relevance = F.cosine_similarity(words[:, None], context, dim=2)  # [C, I, T]
    relevance = relevance.masked_fill(~word_mask[:, None, :], float("-inf"))
    caption_scores = torch.logsumexp(gamma2 * relevance, dim=2) / gamma2  # [C, I]
    scores = gamma3 * caption_scores.t()  # [images, captions]
    return _both_ways(scores, _pair_mask(class_ids, batch, words.device))


def damsm_loss(
    regions: torch.Tensor,
    image_code: torch.Tensor,
    words: torch.Tensor,
    sentence: torch.Tensor,
    lengths: torch.Tensor,
    class_ids: torch.Tensor | None = None,
    gamma1: float = 4.0,
    gamma2: float = 5.0,
    gamma3: float = 10.0,
) -> dict[str, torch.Tensor]:
    """All four terms and their sum (``"loss"``), as AttnGAN's DAMSM pretraining adds them."""
    w0, w1 = word_loss(regions, words, lengths, class_ids, gamma1, gamma2, gamma3)
    s0, s1 = sentence_loss(image_code, sentence, class_ids, gamma3)
    return {"loss": w0 + w1 + s0 + s1, "w_loss0": w0, "w_loss1": w1, "s_loss0": s0, "s_loss1": s1}
