"""What an MLM loss is worth: the loss of a model that uses no context at all.

A model that ignores every token but the one at the predicted position can still do two
things: predict the unigram distribution where it sees [MASK], and, where it sees a real
token, bet that the token was kept (BERT keeps 10 % of the predicted tokens and replaces
10 % with random ones, so a visible token is the answer half the time). Its expected
cross-entropy is

    floor = (mask + random) * H + keep * -log(a) + random * -log(1 - a),  a = keep / (keep + random)

with H the unigram cross-entropy of the text: 0.9 H + 0.2 log 2 for BERT's 80/10/10. A
held-out MLM loss near this floor says the model has learned token frequencies and copying,
and nothing from context yet (the tiny demo model after a few minutes, issue 12); the gap
below it is what context has taught.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from zhplm.data.shards import TokenDataset


def token_counts(dataset: TokenDataset, documents: Iterable[int], vocab_size: int
                 ) -> np.ndarray:
    """How often each token id occurs in `documents` of `dataset` (float64, length
    `vocab_size`)."""
    counts = np.zeros(vocab_size, dtype=np.float64)
    for index in documents:
        for sentence in dataset.document(index):
            counts += np.bincount(sentence[0], minlength=vocab_size)[:vocab_size]
    return counts


def unigram_cross_entropy(counts: np.ndarray) -> float:
    """The entropy (nats) of the unigram distribution given by `counts`."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def context_free_mlm_loss(unigram_entropy: float, mask_replace: float = 0.8,
                          random_replace: float = 0.1) -> float:
    """The expected MLM cross-entropy (nats) of the best predictor that sees only the token
    at the predicted position (see the module docstring)."""
    if not (0 <= mask_replace and 0 <= random_replace and mask_replace + random_replace <= 1):
        raise ValueError(f"mask_replace={mask_replace}, random_replace={random_replace}: "
                         f"each in [0, 1], their sum at most 1")
    keep = 1.0 - mask_replace - random_replace
    loss = (mask_replace + random_replace) * unigram_entropy
    if keep > 0 and random_replace > 0:
        a = keep / (keep + random_replace)
        loss += keep * -math.log(a) + random_replace * -math.log(1 - a)
    return loss
