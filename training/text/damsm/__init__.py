"""DAMSM (AttnGAN's Deep Attentional Multimodal Similarity Model): a text encoder and an image encoder
trained so that matching captions and images get similar features. Used here to score generators
with R-precision (:mod:`training.eval.r_precision`).

``model.py`` has the two encoders, ``losses.py`` the word- and sentence-level losses, ``trainer.py``
the pretraining loop, ``checkpoint.py`` the folder format.
"""

from training.text.damsm.checkpoint import MatchingEncoders, load_encoders, save_encoders
from training.text.damsm.config import DAMSMConfig
from training.text.damsm.losses import damsm_loss, sentence_loss, word_loss
from training.text.damsm.model import ImageEncoder, TextEncoder

__all__ = [
    "DAMSMConfig",
    "ImageEncoder",
    "MatchingEncoders",
    "TextEncoder",
    "damsm_loss",
    "load_encoders",
    "save_encoders",
    "sentence_loss",
    "word_loss",
]
