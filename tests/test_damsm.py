"""DAMSM: vocabulary, the two encoders, the matching losses, pretraining and the shipped encoders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from training.data.shapes import ShapesDataset
from training.eval.r_precision import SHIPPED_ENCODERS, load_matching_encoders
from training.text.damsm.checkpoint import build_encoders, load_encoders, save_encoders
from training.text.damsm.config import DAMSMConfig
from training.text.damsm.losses import damsm_loss, sentence_loss, word_attention
from training.text.damsm.model import ImageEncoder, TextEncoder
from training.text.damsm.trainer import train_damsm
from training.text.vocab import Vocabulary

torch.set_num_threads(1)

CAPTIONS = ["a large green triangle on the left", "a small red circle at the top", "a red square"]


def small_config(vocab: Vocabulary | None = None) -> DAMSMConfig:
    config = DAMSMConfig(embedding_dim=16, hidden_dim=24, image_channels=8, batch_size=8, seed=3)
    config.vocab_size = len(vocab) if vocab else 20
    return config


# --- vocabulary -----------------------------------------------------------------------------------


def test_vocabulary_round_trips_through_json(tmp_path: Path) -> None:
    vocab = Vocabulary.build(CAPTIONS)
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded == vocab
    assert loaded.itos[:3] == ["<pad>", "<end>", "<unk>"]
    ids = loaded.encode("A large green triangle on the left!")
    assert loaded.decode(ids) == "a large green triangle on the left"


def test_vocabulary_orders_by_frequency_and_maps_rare_words_to_unk() -> None:
    vocab = Vocabulary.build(CAPTIONS, min_count=2)
    # "a" 3x; "red" and "the" 2x (ties alphabetical); everything else once
    assert vocab.itos[3:] == ["a", "red", "the"]
    assert vocab.encode("a red hexagon") == [3, 4, vocab.unk_id]


def test_vocabulary_truncates_to_max_len_keeping_the_end_token() -> None:
    vocab = Vocabulary.build(CAPTIONS)
    full = vocab.encode(CAPTIONS[0])
    assert len(full) == 7
    assert vocab.encode(CAPTIONS[0], max_len=4) == full[:4]
    with_end = vocab.encode(CAPTIONS[0], max_len=4, add_end=True)
    assert with_end == [*full[:3], vocab.end_id]
    assert vocab.encode("", max_len=4) == [vocab.unk_id]  # never an empty sequence


def test_vocabulary_batch_is_right_padded_with_lengths() -> None:
    vocab = Vocabulary.build(CAPTIONS)
    ids, lengths = vocab.encode_batch(CAPTIONS, max_len=5)
    assert ids.shape == (3, 5)
    assert lengths.tolist() == [5, 5, 3]
    assert ids[2, 3:].tolist() == [vocab.pad_id, vocab.pad_id]


# --- encoders -------------------------------------------------------------------------------------


def test_text_encoder_shapes_and_packed_lengths() -> None:
    vocab = Vocabulary.build(CAPTIONS)
    config = small_config(vocab)
    torch.manual_seed(0)
    encoder = TextEncoder(config).eval()
    ids, lengths = vocab.encode_batch(CAPTIONS)
    words, sentence = encoder(ids, lengths)
    assert words.shape == (3, config.feature_dim, 7)
    assert sentence.shape == (3, config.feature_dim)
    # Padding produces no word features ...
    assert torch.all(words[2, :, 3:] == 0)
    assert words[2, :, :3].abs().sum() > 0
    # ... and does not change the short caption's features: encoded alone (no padding), it is the
    # same. Without packing the backward LSTM would start on the padding and differ.
    alone_words, alone_sentence = encoder(ids[2:, :3], lengths[2:])
    torch.testing.assert_close(alone_words[0], words[2, :, :3])
    torch.testing.assert_close(alone_sentence[0], sentence[2])


def test_sentence_feature_is_both_directions_last_states() -> None:
    vocab = Vocabulary.build(CAPTIONS)
    config = small_config(vocab)
    torch.manual_seed(0)
    encoder = TextEncoder(config).eval()
    ids, lengths = vocab.encode_batch(CAPTIONS[2:])
    words, sentence = encoder(ids, lengths)
    hidden = config.hidden_dim
    # Forward direction ends at the last word, backward direction at the first.
    torch.testing.assert_close(sentence[0, :hidden], words[0, :hidden, -1])
    torch.testing.assert_close(sentence[0, hidden:], words[0, hidden:, 0])


@pytest.mark.parametrize("imsize", [64, 128])
def test_image_encoder_gives_8x8_regions_and_a_global_feature(imsize: int) -> None:
    config = small_config()
    encoder = ImageEncoder(config).eval()
    regions, code = encoder(torch.rand(2, 3, imsize, imsize) * 2 - 1)
    assert regions.shape == (2, config.feature_dim, 8, 8)
    assert code.shape == (2, config.feature_dim)


# --- losses ---------------------------------------------------------------------------------------


def test_word_attention_normalises_over_regions_and_ignores_padding() -> None:
    torch.manual_seed(0)
    words, regions = torch.randn(2, 6, 4), torch.randn(3, 6, 10)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    context, attention = word_attention(words, regions, mask)
    assert context.shape == (2, 3, 6, 4) and attention.shape == (2, 3, 4, 10)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 3, 4))
    changed = words.clone()
    changed[1, :, 2:] = 100.0  # padded positions of caption 1
    context2, _ = word_attention(changed, regions, mask)
    torch.testing.assert_close(context2[1, :, :, :2], context[1, :, :, :2])


def test_sentence_loss_masks_other_items_with_the_same_caption() -> None:
    torch.manual_seed(0)
    feats = torch.randn(4, 8)
    feats[1] = feats[0]  # items 0 and 1 show the same caption
    unmasked = sum(sentence_loss(feats, feats))
    masked = sum(sentence_loss(feats, feats, class_ids=torch.tensor([0, 0, 1, 2])))
    # Unmasked, item 0 cannot tell its caption from item 1's: at least log(2) / 4 per direction.
    assert unmasked > 2 * torch.log(torch.tensor(2.0)) / 4
    assert masked < 0.05


def test_losses_are_finite_and_decrease_on_a_tiny_batch() -> None:
    torch.manual_seed(0)
    data = ShapesDataset(count=8, seed=5)
    vocab = Vocabulary.build(data.captions)
    enc = build_encoders(small_config(vocab), vocab)
    images = torch.stack([data[i][0] for i in range(8)])
    ids, lengths = vocab.encode_batch(data.captions)
    params = [*enc.text.parameters(), *enc.image.parameters()]
    optimizer = torch.optim.Adam(params, lr=5e-3)
    history = []
    for _ in range(20):
        regions, code = enc.image(images)
        words, sentence = enc.text(ids, lengths)
        losses = damsm_loss(regions, code, words, sentence, lengths)
        assert all(torch.isfinite(v) for v in losses.values())
        optimizer.zero_grad()
        losses["loss"].backward()
        assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
        optimizer.step()
        history.append(losses["loss"].item())
    assert history[-1] < 0.7 * history[0]


# --- pretraining and checkpoints ------------------------------------------------------------------


def test_training_is_deterministic_and_saves_a_loadable_folder(tmp_path: Path) -> None:
    data = ShapesDataset(count=32, seed=1)
    runs = [train_damsm(small_config(), data, tmp_path / name, steps=3) for name in ("a", "b")]
    for name in ("config.json", "vocab.json", "encoders.safetensors", "loss_curve.png", "losses.jsonl"):
        assert (tmp_path / "a" / name).is_file()
    a, b = load_encoders(tmp_path / "a"), load_encoders(tmp_path / "b")
    for (key, pa), pb in zip(a.text.state_dict().items(), b.text.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), key
    for pa, pb in zip(a.image.state_dict().values(), b.image.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    assert runs[0].final_losses == runs[1].final_losses
    assert len((tmp_path / "a" / "losses.jsonl").read_text().splitlines()) == 3


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    data = ShapesDataset(count=4, seed=2)
    vocab = Vocabulary.build(data.captions)
    enc = build_encoders(small_config(vocab), vocab).eval()
    save_encoders(tmp_path, enc, extra={"steps": 0})
    loaded = load_encoders(tmp_path)
    images = torch.stack([data[i][0] for i in range(4)])
    torch.testing.assert_close(loaded.encode_images(images)[1], enc.encode_images(images)[1])
    torch.testing.assert_close(loaded.encode_text(data.captions)[1], enc.encode_text(data.captions)[1])
    assert json.loads((tmp_path / "config.json").read_text())["training"] == {"steps": 0}


def test_missing_files_fail_loudly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_encoders(tmp_path)


def test_train_damsm_command_writes_the_encoder_folder(tmp_path: Path) -> None:
    from training.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["train-damsm", "--out", str(out), "--steps", "2", "--count", "16", "--batch-size", "8",
         "--hidden-dim", "16", "--embedding-dim", "8", "--device", "cpu", "--threads", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert load_encoders(out).config.hidden_dim == 16
    assert (out / "loss_curve.png").stat().st_size > 0


def test_train_damsm_command_rejects_an_unknown_dataset(tmp_path: Path) -> None:
    from training.cli import app

    result = CliRunner().invoke(app, ["train-damsm", "--dataset", "nope", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "unknown dataset" in result.output


def test_shipped_encoders_load_and_are_small() -> None:
    enc = load_matching_encoders()
    assert enc.config.feature_dim == 256 and enc.config.hidden_dim == 128
    assert not any(p.requires_grad for p in enc.text.parameters())
    assert sum(f.stat().st_size for f in SHIPPED_ENCODERS.iterdir()) < 2 * 1024 * 1024
    words, sentence = enc.encode_text(["a large red circle in the center"])
    assert words.shape == (1, 256, 7) and sentence.shape == (1, 256)
