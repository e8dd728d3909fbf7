"""What an MLM loss is worth: the loss of the best model that uses no context at all.

A model that ignores every token but the one at the predicted position can still do two
things: predict the unigram distribution where it sees [MASK], and, where it sees a real
token x, weigh "x was kept" against "x is a random replacement" (BERT keeps 10 % of the
predicted tokens and replaces 10 % with ids drawn uniformly, so a visible frequent token
was almost surely kept and a visible rare one almost surely drawn). Its expected
cross-entropy is the conditional entropy H(label | visible token):

    floor = mask * H + sum_x [ -A_x log(A_x / Z_x) - r u_x sum_{t != x} p_t log(r u_x p_t / Z_x) ]

with p the unigram distribution of the predicted tokens, H its entropy, keep = 1 - mask - r,
u_x = 1 / N for the N ids random replacements are drawn from (0 elsewhere),
Z_x = keep p_x + r u_x (the chance to see x) and A_x = keep p_x + r u_x p_x (to see x when
x is the answer). On the built-in corpus (H = 6.577 nats) it is 5.972 for 80/10/10.
A held-out MLM loss near this floor says the model has learned token frequencies and
copying, and nothing from context yet (the tiny demo model after a few minutes, issue 12);
the gap below it is what context has taught.
"""

from __future__ import annotations

import numpy as np

SPLIT_TOLERANCE = 1e-6  # as MaskingConfig: mask_replace + random_replace may exceed 1 by this


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x * log(y), 0 where x is 0."""
    out = np.zeros_like(x, dtype=np.float64)
    nonzero = x > 0
    out[nonzero] = x[nonzero] * np.log(y[nonzero])
    return out


def unigram_entropy(counts: np.ndarray) -> float:
    """The entropy (nats) of the unigram distribution given by token `counts`."""
    p = np.asarray(counts, dtype=np.float64)
    p = p / p.sum()
    return float(-_xlogy(p, p).sum())


def context_free_mlm_loss(counts: np.ndarray, mask_replace: float = 0.8,
                          random_replace: float = 0.1, first_random_id: int = 0) -> float:
    """The expected MLM cross-entropy (nats) of the best predictor that sees only the token
    at the predicted position (the module docstring's formula).

    `counts` are the token counts of the text (index = token id, length = vocab size);
    random replacements are drawn uniformly from ids `[first_random_id, len(counts))`, as
    `zhplm.data.masking.mask_sequence` draws them."""
    if not (0 <= mask_replace and 0 <= random_replace
            and mask_replace + random_replace <= 1 + SPLIT_TOLERANCE):
        raise ValueError(f"mask_replace={mask_replace}, random_replace={random_replace}: "
                         f"each in [0, 1], their sum at most 1")
    p = np.asarray(counts, dtype=np.float64)
    if p.ndim != 1 or p.sum() <= 0 or not 0 <= first_random_id < len(p):
        raise ValueError(f"counts must be a non-empty 1-d array of token counts and "
                         f"first_random_id ({first_random_id}) an id below its length")
    p = p / p.sum()
    keep = max(0.0, 1.0 - mask_replace - random_replace)
    entropy = unigram_entropy(p)
    u = np.zeros_like(p)
    u[first_random_id:] = 1.0 / (len(p) - first_random_id)
    drawn = random_replace * u  # chance that the visible token is a random draw of x
    seen = keep * p + drawn  # Z_x
    answer = keep * p + drawn * p  # A_x
    loss = mask_replace * entropy - (_xlogy(answer, answer) - _xlogy(answer, seen)).sum()
    others = -entropy - _xlogy(p, p)  # sum over t != x of p_t log p_t
    has_draws = drawn > 0
    d, z, q, rest = drawn[has_draws], seen[has_draws], p[has_draws], others[has_draws]
    loss -= float((d * (rest + (1.0 - q) * np.log(d / z))).sum())
    return float(loss)
