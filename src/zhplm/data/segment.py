"""Word boundaries for whole-word and n-gram masking.

Chinese text has no spaces, so a "word" for whole-word masking comes from a segmenter:
jieba here (Chinese-BERT-wwm used LTP; jieba ships on PyPI with its dictionary). A token
starts a word when its first character starts a jieba word; WordPiece continuation pieces
(`##ing`) and the 2nd..nth characters of a Chinese word do not. Without a segmenter, words
are WordPiece words (a token starts a word unless it begins with `##`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

SEGMENTERS = ("jieba", "none")


@lru_cache(maxsize=1)
def _jieba():  # noqa: ANN202 - the jieba module
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def jieba_word_starts(text: str) -> set[int]:
    """Character offsets at which jieba starts a word in `text`."""
    return {start for _, start, _ in _jieba().tokenize(text)}


def word_starts(
    tokens: Sequence[str],
    offsets: Sequence[tuple[int, int]],
    text: str | None = None,
    segmenter: str = "jieba",
) -> np.ndarray:
    """A uint8 array, 1 where a token starts a word, for tokens without special tokens.

    `offsets` are the tokenizer's character offsets into `text`. With `segmenter="jieba"`
    the words are jieba's; with `"none"` they are WordPiece words.
    """
    if segmenter not in SEGMENTERS:
        raise ValueError(f"segmenter={segmenter!r}; use one of {', '.join(SEGMENTERS)}")
    starts = np.fromiter((not t.startswith("##") for t in tokens), dtype=np.uint8,
                         count=len(tokens))
    if segmenter == "jieba" and text:
        boundaries = jieba_word_starts(text)
        for i, (begin, _) in enumerate(offsets):
            if starts[i] and begin not in boundaries:
                starts[i] = 0  # inside a jieba word
    if len(starts):
        starts[0] = 1
    return starts
