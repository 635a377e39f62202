"""The DAMSM encoders' hyper-parameters, stored as ``config.json`` beside the weights."""

from __future__ import annotations

from dataclasses import dataclass

from training.config_base import TrainingConfig


@dataclass
class DAMSMConfig(TrainingConfig):
    """Architecture, loss and training settings of a DAMSM text/image encoder pair.

    The loss smoothing factors are AttnGAN's (``TRAIN.SMOOTH`` in its configs): ``gamma1`` sharpens the
    word-to-region attention, ``gamma2`` weighs how much the best-matching words dominate a caption's
    score, ``gamma3`` scales the similarities fed to the softmax over the batch.
    """

    vocab_size: int = 0
    embedding_dim: int = 64
    #: Hidden size of each LSTM direction; the feature width is twice this.
    hidden_dim: int = 128
    #: Captions are cut to this many word ids (AttnGAN: ``TEXT.WORDS_NUM = 18``).
    max_words: int = 18
    dropout: float = 0.5
    imsize: int = 64
    #: Channels of the image encoder's first conv; doubled at each of its downsamplings.
    image_channels: int = 16
    gamma1: float = 4.0
    gamma2: float = 5.0
    gamma3: float = 10.0
    # Training.
    batch_size: int = 48
    learning_rate: float = 2e-3
    #: Gradient-norm clip of the text encoder (AttnGAN: ``TRAIN.RNN_GRAD_CLIP = 0.25``).
    rnn_grad_clip: float = 0.25
    seed: int = 0
    version: str = ""

    @property
    def feature_dim(self) -> int:
        """Width of word, sentence, region and global image features."""
        return 2 * self.hidden_dim
