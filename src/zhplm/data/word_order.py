"""StructBERT's word structural objective, data side: shuffled trigrams.

After MLM masking, trigrams are chosen among the tokens that are neither special, padding,
masked (predicted by the MLM) nor in another chosen trigram, until `ratio` of the sequence's
tokens are covered (5 % by default, StructBERT's setting); each chosen trigram is reordered
by one of the five permutations of three that differ from the identity. The model predicts
the original token at every position of a shuffled trigram with the MLM head.

Everything is numpy and seeded by the caller's generator (the instance's own), so the
trigrams, like the masks, do not depend on batch composition or ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zhplm.errors import ConfigError

# The permutations of (0, 1, 2) other than the identity.
PERMUTATIONS = np.array([(0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)])


@dataclass
class ShuffledTrigrams:
    """A sequence with its trigrams shuffled: `input_ids`, and the sorted `positions` of
    every token of a shuffled trigram with the original ids there (`labels`)."""

    input_ids: np.ndarray
    positions: np.ndarray
    labels: np.ndarray


def shuffle_trigrams(input_ids: np.ndarray, blocked: np.ndarray, ratio: float,
                     rng: np.random.Generator) -> ShuffledTrigrams:
    """Shuffle `round(ratio x len / 3)` trigrams of `input_ids` that avoid every `blocked`
    position (special tokens, padding, MLM-masked tokens); fewer when the free stretches
    do not hold that many. Trigrams never overlap one another."""
    if not 0 <= ratio < 1:
        raise ConfigError(f"word-order ratio {ratio} must be in [0, 1) (StructBERT: 0.05)")
    ids = np.asarray(input_ids)
    free = ~np.asarray(blocked, dtype=bool)
    wanted = int(round(ratio * len(ids) / 3))
    if wanted == 0 or len(ids) < 3:
        return ShuffledTrigrams(ids, np.zeros(0, np.int64), np.zeros(0, ids.dtype))
    starts = np.flatnonzero(free[:-2] & free[1:-1] & free[2:])
    chosen: list[int] = []
    taken = np.zeros(len(ids), dtype=bool)
    for start in rng.permutation(starts):
        if not taken[start:start + 3].any():
            taken[start:start + 3] = True
            chosen.append(int(start))
            if len(chosen) == wanted:
                break
    out = ids.copy()
    chosen.sort()
    orders = PERMUTATIONS[rng.integers(0, len(PERMUTATIONS), size=len(chosen))]
    for start, order in zip(chosen, orders, strict=True):
        out[start:start + 3] = ids[start + order]
    positions = (np.asarray(chosen, dtype=np.int64)[:, None] + np.arange(3)).reshape(-1)
    return ShuffledTrigrams(out, positions, ids[positions])
