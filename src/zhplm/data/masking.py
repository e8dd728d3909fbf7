"""Dynamic masking for masked-language-model pre-training, applied per batch at collate time.

Every call draws a fresh mask (RoBERTa's dynamic masking), so the same instance is masked
differently in every epoch. Four selection strategies share one interface:

``token``
    Original BERT: individual tokens chosen uniformly at random.
``wwm``
    Whole-word masking (Chinese-BERT-wwm): a word is a run of tokens from a word start (see
    :func:`zhplm.data.segment.word_starts`, jieba words) up to the next word start; words are
    chosen in random order and never split, as in Google's ``create_pretraining_data.py``.
``ngram``
    N-gram masking over words (MacBERT, LERT): spans of 1..4 consecutive words with
    probabilities 40/30/20/10 %.
``span``
    SpanBERT: spans of consecutive words whose length follows a geometric distribution
    (p = 0.2) truncated at 10 words and renormalised, as SpanBERT's code does (mean 3.8 words).

Every strategy predicts ``min(max_predictions, max(1, round(n_candidates * mask_prob)))``
tokens, where candidates are the non-special, non-padding tokens. Each predicted token is
then replaced by ``[MASK]`` (80 %), a random token (10 %) or kept (10 %), decided per token
as Chinese-BERT-wwm does.

Special tokens and padding are never chosen, and a word never continues across one: the first
candidate after a special token starts a word whatever its ``word_starts`` entry says.
Everything works on numpy arrays; the collator makes tensors at the end.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from zhplm.errors import ConfigError, InputError

__all__ = [
    "STRATEGIES",
    "MaskingConfig",
    "MaskingStrategy",
    "TokenMasking",
    "WholeWordMasking",
    "NgramMasking",
    "SpanMasking",
    "MaskedSequence",
    "build_strategy",
    "geometric_span_probs",
    "word_units",
    "mask_sequence",
    "mask_batch",
]

STRATEGIES = ("token", "wwm", "ngram", "span")
_TOL = 1e-6


def _is_number(x: object) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool)


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


@dataclass
class MaskingConfig:
    """How to choose and corrupt the tokens a masked language model predicts.

    ``strategy`` is one of ``"token"``, ``"wwm"``, ``"ngram"``, ``"span"``. ``mask_prob`` is
    the fraction of candidate tokens predicted, capped at ``max_predictions`` per sequence.
    A predicted token becomes ``[MASK]`` with probability ``mask_replace``, a random token with
    ``random_replace`` and stays unchanged otherwise. ``ngram_probs[k]`` is the probability of
    a (k+1)-word n-gram; ``span_p`` and ``span_max`` define SpanBERT's span-length
    distribution (see :func:`geometric_span_probs`).
    """

    strategy: str = "token"
    mask_prob: float = 0.15
    max_predictions: int = 20
    mask_replace: float = 0.8
    random_replace: float = 0.1
    ngram_probs: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)
    span_p: float = 0.2
    span_max: int = 10

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"MaskingConfig.strategy={self.strategy!r} is unknown; use one of "
                f"{', '.join(STRATEGIES)}"
            )
        if not (_is_number(self.mask_prob) and 0.0 < self.mask_prob < 1.0):
            raise ConfigError(
                f"MaskingConfig.mask_prob={self.mask_prob!r} must be a number in (0, 1), "
                "e.g. 0.15"
            )
        if not (_is_int(self.max_predictions) and self.max_predictions >= 1):
            raise ConfigError(
                f"MaskingConfig.max_predictions={self.max_predictions!r} must be an int >= 1, "
                "e.g. 20 for 128-token sequences"
            )
        for name in ("mask_replace", "random_replace"):
            value = getattr(self, name)
            if not (_is_number(value) and 0.0 <= value <= 1.0):
                raise ConfigError(
                    f"MaskingConfig.{name}={value!r} must be a probability in [0, 1]"
                )
        if self.mask_replace + self.random_replace > 1.0 + _TOL:
            raise ConfigError(
                f"MaskingConfig.mask_replace + random_replace = "
                f"{self.mask_replace + self.random_replace:g} exceeds 1; the kept fraction "
                "is 1 - mask_replace - random_replace (BERT: 0.8, 0.1, kept 0.1)"
            )
        probs = self.ngram_probs
        if isinstance(probs, str | bytes) or not isinstance(probs, Sequence | np.ndarray):
            raise ConfigError(
                f"MaskingConfig.ngram_probs={probs!r} must be a sequence of probabilities "
                "for 1..n-grams, e.g. (0.4, 0.3, 0.2, 0.1)"
            )
        probs = tuple(float(p) if _is_number(p) else p for p in probs)
        if not probs or not all(_is_number(p) and math.isfinite(p) and p >= 0 for p in probs):
            raise ConfigError(
                f"MaskingConfig.ngram_probs={self.ngram_probs!r} must be a non-empty sequence "
                "of non-negative probabilities, e.g. (0.4, 0.3, 0.2, 0.1)"
            )
        if abs(sum(probs) - 1.0) > _TOL:
            raise ConfigError(
                f"MaskingConfig.ngram_probs={self.ngram_probs!r} sum to {sum(probs):g}, not 1"
            )
        self.ngram_probs = probs
        if not (_is_number(self.span_p) and 0.0 < self.span_p <= 1.0):
            raise ConfigError(
                f"MaskingConfig.span_p={self.span_p!r} must be a number in (0, 1], e.g. 0.2"
            )
        if not (_is_int(self.span_max) and self.span_max >= 1):
            raise ConfigError(
                f"MaskingConfig.span_max={self.span_max!r} must be an int >= 1, e.g. 10"
            )

    def budget(self, n_candidates: int) -> int:
        """Number of tokens to predict in a sequence with ``n_candidates`` maskable tokens."""
        if n_candidates <= 0:
            return 0
        return min(self.max_predictions, max(1, round(n_candidates * self.mask_prob)))


def geometric_span_probs(p: float, max_len: int) -> tuple[float, ...]:
    """SpanBERT's span-length distribution over 1..max_len words.

    ``P(l) ∝ p (1-p)^(l-1)`` truncated at ``max_len`` and renormalised (SpanBERT's
    ``len_distrib``); for p = 0.2, max_len = 10 the mean is 3.80 words.
    """
    weights = [p * (1.0 - p) ** (k - 1) for k in range(1, max_len + 1)]
    total = sum(weights)
    return tuple(w / total for w in weights)


# ------------------------------------------------------------------------------ words


def word_units(word_starts: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token ranges ``[starts[j], ends[j])`` of the words made of candidate tokens.

    A word starts at a candidate token whose ``word_starts`` entry is non-zero or that follows
    a non-candidate (special token, padding, sequence start), and runs up to the next word
    start or non-candidate. Non-candidates belong to no word.
    """
    cand = np.asarray(candidates, dtype=bool)
    n = cand.shape[0]
    start = np.empty(n + 1, dtype=bool)  # word starts, with a False sentinel at n
    np.not_equal(word_starts, 0, out=start[:n])
    if n:
        start[0] = True
        start[1:n] |= ~cand[:-1]
        start[:n] &= cand
    start[n] = False
    bound = start.copy()  # every word start or non-candidate ends the word before it
    bound[:n] |= ~cand
    bound[n] = True
    b = np.flatnonzero(bound)
    first = start[b]
    return b[first], b[1:][first[:-1]]


# ------------------------------------------------------------------------------ strategies


class MaskingStrategy(ABC):
    """Chooses the token spans to predict. Subclasses implement :meth:`select_with_lengths`."""

    #: short name, as in ``MaskingConfig.strategy``
    name: str = ""
    #: every span is one token (lets :func:`mask_sequence` skip expanding spans)
    single_tokens: bool = False

    @abstractmethod
    def select_with_lengths(
        self,
        word_starts: np.ndarray,
        candidates: np.ndarray,
        budget: int,
        rng: np.random.Generator,
    ) -> tuple[list[tuple[int, int]], list[int]]:
        """Chosen spans (sorted, disjoint ``[start, end)`` token ranges of candidates) and the
        number of units (tokens for ``token``, words otherwise) in each span."""

    def select(
        self,
        word_starts: np.ndarray,
        candidates: np.ndarray,
        budget: int,
        rng: np.random.Generator,
    ) -> list[tuple[int, int]]:
        """Sorted, disjoint token spans ``[start, end)`` to predict, at most ``budget`` tokens.

        ``word_starts`` is 1 where a token starts a word (any value at non-candidates);
        ``candidates`` is True at maskable tokens (False at special tokens and padding).
        """
        return self.select_with_lengths(word_starts, candidates, budget, rng)[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class TokenMasking(MaskingStrategy):
    """Original BERT masking: ``budget`` candidate tokens chosen uniformly without replacement."""

    name = "token"
    single_tokens = True

    def select_with_lengths(
        self,
        word_starts: np.ndarray,
        candidates: np.ndarray,
        budget: int,
        rng: np.random.Generator,
    ) -> tuple[list[tuple[int, int]], list[int]]:
        idx = np.flatnonzero(candidates)
        k = min(budget, idx.shape[0])
        if k <= 0:
            return [], []
        if k < idx.shape[0]:
            keys = rng.random(idx.shape[0])
            idx = idx[np.argpartition(keys, k - 1)[:k]]
        idx = np.sort(idx).tolist()
        return [(i, i + 1) for i in idx], [1] * k


class WholeWordMasking(MaskingStrategy):
    """Whole-word masking: words in random order, each taken whole if it fits the budget.

    As in Google's ``create_pretraining_data.py``, a word that would exceed the budget is
    skipped (never split) and the scan goes on with the next word until the budget is met.
    """

    name = "wwm"

    def select_with_lengths(
        self,
        word_starts: np.ndarray,
        candidates: np.ndarray,
        budget: int,
        rng: np.random.Generator,
    ) -> tuple[list[tuple[int, int]], list[int]]:
        starts, ends = word_units(word_starts, candidates)
        if budget <= 0 or starts.shape[0] == 0:
            return [], []
        order = np.argsort(rng.random(starts.shape[0])).tolist()
        s_list, e_list = starts.tolist(), ends.tolist()
        chosen: list[int] = []
        total = 0
        for j in order:
            size = e_list[j] - s_list[j]
            if total + size > budget:
                continue
            chosen.append(j)
            total += size
            if total >= budget:
                break
        chosen.sort()
        return [(s_list[j], e_list[j]) for j in chosen], [1] * len(chosen)


def _uniforms(rng: np.random.Generator, chunk: int = 64) -> Iterator[float]:
    """Endless uniform [0, 1) floats from ``rng``, drawn in chunks (a scalar draw costs more)."""
    while True:
        yield from rng.random(chunk).tolist()


class _Board:
    """Free words of one sequence and the budget left, for :class:`_WordRunMasking`."""

    __slots__ = ("starts", "ends", "n_words", "cum", "seg", "used", "remaining", "rand",
                 "spans", "lengths", "_arrays", "_used_np")

    def __init__(
        self, starts: np.ndarray, ends: np.ndarray, budget: int, rng: np.random.Generator
    ) -> None:
        n_words = starts.shape[0]
        # row 0: tokens in words [0, j); row 1 (from column 1): segment (run between special
        # tokens) of word j - 1, so n words from j are contiguous iff seg[j] == seg[j + n - 1]
        arrays = np.zeros((2, n_words + 1), dtype=np.int64)
        np.cumsum(ends - starts, out=arrays[0, 1:])
        np.cumsum(ends[:-1] != starts[1:], out=arrays[1, 2:])
        cum, seg = arrays.tolist()
        self.starts, self.ends, self.n_words = starts.tolist(), ends.tolist(), n_words
        self.cum, self.seg = cum, seg[1:]
        self.used = [False] * n_words
        self._used_np = np.zeros(n_words, dtype=bool)  # the same, for the full scan
        self.remaining = budget
        self.rand = _uniforms(rng).__next__
        self.spans: list[tuple[int, int]] = []
        self.lengths: list[int] = []
        self._arrays = arrays

    def place(self, n: int, leave: int, exact: bool, tries: int = 16) -> int:
        """First word of a uniformly chosen placement of ``n`` free consecutive words that fit
        the remaining budget, or -1 if there is none.

        Placements that use exactly the remaining budget (when ``exact``) or leave at least
        ``leave`` tokens are preferred; the others are used only when no preferred one exists.
        """
        cum, seg, used, rand, remaining = self.cum, self.seg, self.used, self.rand, self.remaining
        last = self.n_words - n + 1
        for _ in range(tries):  # rejection sampling: uniform over the preferred placements
            j = int(rand() * last)
            if seg[j] != seg[j + n - 1]:
                continue
            t = cum[j + n] - cum[j]
            if (t <= remaining - leave or (exact and t == remaining)) and not any(
                used[j : j + n]
            ):
                return j
        # full scan: uniform over the preferred placements, else over the valid ones
        cum_np, seg_np = self._arrays[0], self._arrays[1, 1:]
        used_cum = np.zeros(self.n_words + 1, dtype=np.int64)
        np.cumsum(self._used_np, out=used_cum[1:])
        tokens = cum_np[n:] - cum_np[:-n]
        valid = (used_cum[n:] == used_cum[:-n]) & (seg_np[n - 1 :] == seg_np[:last])
        valid &= tokens <= remaining
        preferred = valid & (tokens <= remaining - leave)
        if exact:
            preferred |= valid & (tokens == remaining)
        pool = np.flatnonzero(preferred)
        if pool.shape[0] == 0:
            pool = np.flatnonzero(valid)
            if pool.shape[0] == 0:
                return -1
        return int(pool[int(rand() * pool.shape[0])])

    def take(self, j: int, n: int) -> None:
        """Choose the ``n`` words starting at word ``j``."""
        self.remaining -= self.cum[j + n] - self.cum[j]
        self.used[j : j + n] = [True] * n
        self._used_np[j : j + n] = True
        self.spans.append((self.starts[j], self.ends[j + n - 1]))
        self.lengths.append(n)


class _WordRunMasking(MaskingStrategy):
    """Spans of consecutive words whose lengths (in words) follow ``probs`` over 1..len(probs).

    A hard token budget and whole words bias naive selection towards short spans: a long span
    drawn late no longer fits and is replaced by a short one (drawing n per word in random
    order, 128-token sequences get 52 % unigrams instead of 40 %, and SpanBERT spans average
    2.4 words instead of 3.8). Lengths are therefore planned first and packed longest first:

    1. Plan: draw lengths i.i.d. from ``probs`` until their expected token count (words x the
       sequence's mean tokens per word) comes within half a mean span of the budget.
    2. Place the plan longest first, each span uniformly among the placements of free
       consecutive words (not crossing a special token) that fit the remaining budget,
       preferring those that leave one token per word still planned. A span that cannot be
       placed is dropped (and no longer span is drawn afterwards).
    3. Fill what budget is left with further draws, restricted to lengths that can still be
       placed.

    In steps 2 (last span) and 3, placements that use the budget exactly or leave at least
    ``reserve`` tokens are preferred, so the budget does not end with 1-2 tokens that only a
    unigram fits. The budget is filled exactly whenever a free word still fits it (and
    unigrams have non-zero probability). On full 128-token sequences of the built-in corpus
    (budget 19 tokens) the n-gram shares are within 1 % of 40/30/20/10 and the SpanBERT mean
    length within about 6 % of 3.8 words; short sequences cannot hold long spans at all.
    """

    def __init__(self, probs: Sequence[float], reserve: int = 4) -> None:
        probs = [float(p) for p in probs]
        if not probs or any(p < 0 for p in probs) or abs(sum(probs) - 1.0) > _TOL:
            raise ConfigError(
                f"{type(self).__name__}: span-length probabilities {probs} must be "
                "non-negative and sum to 1"
            )
        if reserve < 0:
            raise ConfigError(f"{type(self).__name__}: reserve={reserve} must be >= 0")
        self.probs = tuple(probs)
        self.reserve = int(reserve)
        self._cdf = np.cumsum(probs).tolist()
        self._mean = sum(k * p for k, p in enumerate(probs, start=1))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(probs={self.probs}, reserve={self.reserve})"

    def select_with_lengths(
        self,
        word_starts: np.ndarray,
        candidates: np.ndarray,
        budget: int,
        rng: np.random.Generator,
    ) -> tuple[list[tuple[int, int]], list[int]]:
        starts, ends = word_units(word_starts, candidates)
        n_words = starts.shape[0]
        if n_words == 0:
            return [], []
        cdf, reserve = self._cdf, self.reserve
        kmax = min(len(cdf), n_words)  # longest length that may still fit
        if budget <= 0 or cdf[kmax - 1] <= 0:
            return [], []
        board = _Board(starts, ends, budget, rng)
        rand = board.rand

        def draw() -> int:
            return min(bisect_right(cdf, rand() * cdf[kmax - 1]) + 1, kmax)

        tokens_per_word = board.cum[-1] / n_words
        target = budget - 0.5 * self._mean * tokens_per_word
        plan = [draw()]
        planned = plan[0] * tokens_per_word
        while planned < target:
            plan.append(draw())
            planned += plan[-1] * tokens_per_word
        plan.sort(reverse=True)
        rest = sum(plan)
        for n in plan:
            rest -= n
            if board.remaining <= 0:
                break
            if n > kmax:
                continue
            j = board.place(n, rest, False) if rest else board.place(n, reserve, True)
            if j < 0:
                kmax = n - 1  # n words fit neither now nor later
                continue
            board.take(j, n)
        while board.remaining > 0 and kmax > 0 and cdf[kmax - 1] > 0:
            n = draw()
            j = board.place(n, reserve, True)
            if j < 0:
                kmax = n - 1
                continue
            board.take(j, n)
        spans, lengths = board.spans, board.lengths
        if len(spans) > 1:
            order = sorted(range(len(spans)), key=spans.__getitem__)
            spans = [spans[i] for i in order]
            lengths = [lengths[i] for i in order]
        return spans, lengths


class NgramMasking(_WordRunMasking):
    """N-gram masking over words (MacBERT/LERT): n consecutive words, n ~ ``ngram_probs``.

    ``ngram_probs[k]`` is the probability of a (k+1)-word n-gram. Lengths are planned first
    and packed longest first, so the chosen n-grams follow ``ngram_probs`` despite the token
    budget; near the end of the budget, placements leaving 0 or at least ``reserve`` tokens
    are preferred (details in ``_WordRunMasking``).
    """

    name = "ngram"

    def __init__(
        self, ngram_probs: Sequence[float] = (0.4, 0.3, 0.2, 0.1), reserve: int = 4
    ) -> None:
        super().__init__(ngram_probs, reserve)


class SpanMasking(_WordRunMasking):
    """SpanBERT masking: spans of consecutive words, length ~ truncated geometric(``p``).

    Lengths follow :func:`geometric_span_probs` (``p``, ``max_len``); see
    :class:`NgramMasking` for ``reserve``.
    """

    name = "span"

    def __init__(self, p: float = 0.2, max_len: int = 10, reserve: int = 4) -> None:
        self.p, self.max_len = p, max_len
        super().__init__(geometric_span_probs(p, max_len), reserve)

    def __repr__(self) -> str:
        return f"SpanMasking(p={self.p}, max_len={self.max_len}, reserve={self.reserve})"


def build_strategy(config: MaskingConfig) -> MaskingStrategy:
    """The strategy object named by ``config.strategy``."""
    if config.strategy == "token":
        return TokenMasking()
    if config.strategy == "wwm":
        return WholeWordMasking()
    if config.strategy == "ngram":
        return NgramMasking(config.ngram_probs)
    if config.strategy == "span":
        return SpanMasking(config.span_p, config.span_max)
    raise ConfigError(
        f"MaskingConfig.strategy={config.strategy!r} is unknown; use one of "
        f"{', '.join(STRATEGIES)}"
    )


# ------------------------------------------------------------------------------ corruption


@dataclass
class MaskedSequence:
    """One masked sequence.

    ``input_ids`` is the corrupted copy of the input; ``positions`` the sorted predicted
    positions and ``labels`` the original ids there; ``spans`` the chosen ``[start, end)``
    token ranges (sorted) and ``span_lengths`` their length in units (words, or tokens for
    the ``token`` strategy).
    """

    input_ids: np.ndarray
    positions: np.ndarray
    labels: np.ndarray
    spans: list[tuple[int, int]]
    span_lengths: list[int] = field(default_factory=list)


def mask_sequence(
    input_ids: np.ndarray,
    special_mask: np.ndarray,
    word_starts: np.ndarray,
    strategy: MaskingStrategy,
    config: MaskingConfig,
    rng: np.random.Generator,
    *,
    mask_token_id: int,
    vocab_size: int,
    first_normal_id: int = 104,
    pad_token_id: int | None = None,
) -> MaskedSequence:
    """Choose tokens with ``strategy`` and corrupt them 80/10/10 (per ``config``).

    ``special_mask`` is True at special tokens and padding (never chosen; word boundaries);
    with ``pad_token_id`` set, tokens with that id are excluded too. Each chosen token becomes
    ``mask_token_id`` with probability ``config.mask_replace``, a uniform random id from
    ``[first_normal_id, vocab_size)`` with ``config.random_replace``, and stays unchanged
    otherwise.
    """
    ids = np.asarray(input_ids)
    special = np.asarray(special_mask, dtype=bool)
    if ids.ndim != 1 or special.shape != ids.shape or np.shape(word_starts) != ids.shape:
        raise InputError(
            f"mask_sequence needs 1-d input_ids, special_mask and word_starts of one length; "
            f"got shapes {ids.shape}, {special.shape}, {np.shape(word_starts)}"
        )
    if not 0 <= first_normal_id < vocab_size:
        raise InputError(
            f"first_normal_id={first_normal_id} must be in [0, vocab_size={vocab_size})"
        )
    candidates = ~special
    if pad_token_id is not None:
        candidates &= ids != pad_token_id
    budget = config.budget(int(np.count_nonzero(candidates)))
    spans, lengths = strategy.select_with_lengths(word_starts, candidates, budget, rng)
    if strategy.single_tokens:
        chosen = [s for s, _ in spans]
    else:
        chosen = [i for s, e in spans for i in range(s, e)]
    positions = np.array(chosen, dtype=np.int64)
    labels = ids[positions]
    out = ids.copy()
    k = len(chosen)
    if k:
        # per token: one draw picks mask / random / keep, a second one the random id
        draw = rng.random(2 * k).tolist()
        p_mask = config.mask_replace
        p_change = p_mask + config.random_replace
        n_ids = vocab_size - first_normal_id
        for i, pos in enumerate(chosen):
            u = draw[i]
            if u < p_mask:
                out[pos] = mask_token_id
            elif u < p_change:
                out[pos] = first_normal_id + min(int(draw[k + i] * n_ids), n_ids - 1)
    return MaskedSequence(out, positions, labels, spans, lengths)


def mask_batch(
    batch: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    strategy: MaskingStrategy,
    config: MaskingConfig,
    rng: np.random.Generator | int | Sequence[int],
    *,
    mask_token_id: int,
    vocab_size: int,
    first_normal_id: int = 104,
    pad_token_id: int | None = None,
) -> list[MaskedSequence]:
    """:func:`mask_sequence` over ``(input_ids, special_mask, word_starts)`` triples.

    ``rng`` is one generator (or an int seed for one) shared by the batch, or a sequence of
    int seeds, one per instance (reproducible per instance whatever the batch composition).
    """
    items = list(batch)
    if isinstance(rng, np.random.Generator):
        rngs = [rng] * len(items)
    elif _is_int(rng):
        rngs = [np.random.default_rng(int(rng))] * len(items)
    else:
        seeds = list(rng)  # type: ignore[arg-type]
        if len(seeds) != len(items):
            raise InputError(
                f"mask_batch got {len(seeds)} seeds for {len(items)} sequences; pass one seed "
                "per sequence or a single numpy Generator"
            )
        rngs = [np.random.default_rng(s) for s in seeds]
    return [
        mask_sequence(
            ids,
            special,
            starts,
            strategy,
            config,
            g,
            mask_token_id=mask_token_id,
            vocab_size=vocab_size,
            first_normal_id=first_normal_id,
            pad_token_id=pad_token_id,
        )
        for (ids, special, starts), g in zip(items, rngs, strict=True)
    ]
