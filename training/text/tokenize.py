"""Caption tokenisation that needs no downloaded NLTK data.

DF-GAN and AttnGAN split captions with NLTK's ``RegexpTokenizer(r"\\w+")`` on lower-cased text; that
tokenizer is pure regular expressions, so unlike ``nltk.word_tokenize`` (which needs the ``punkt``
models) it works on a machine that never ran ``nltk.download``.
"""

from __future__ import annotations

from nltk.tokenize import RegexpTokenizer

_TOKENIZER = RegexpTokenizer(r"\w+")


def tokenize(caption: str, max_tokens: int = 0) -> list[str]:
    """Lower-cased word tokens of ``caption``; at most ``max_tokens`` of them when it is positive.

    Non-ASCII words are kept (``\\w`` is Unicode-aware); punctuation is dropped.
    """
    tokens = _TOKENIZER.tokenize(caption.lower())
    return tokens[:max_tokens] if max_tokens > 0 else tokens
