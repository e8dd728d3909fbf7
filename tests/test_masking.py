"""zhplm.data.masking on ~2000 real 128-token sequences of the built-in Chinese corpus."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from zhplm.data.masking import (
    MaskedSequence,
    MaskingConfig,
    NgramMasking,
    SpanMasking,
    TokenMasking,
    WholeWordMasking,
    build_strategy,
    geometric_span_probs,
    mask_batch,
    mask_sequence,
)
from zhplm.data.segment import word_starts
from zhplm.datasets import corpus_lines
from zhplm.errors import ConfigError
from zhplm.objectives.mlm_floor import context_free_mlm_loss, unigram_entropy
from zhplm.tokenization import Tokenizer

PAD, CLS, SEP, MASK, FIRST_NORMAL = 0, 101, 102, 103, 104
MAX_LEN = 128
N_SEQ = 2000
STRATEGY_NAMES = ("token", "wwm", "ngram", "span")

Instance = tuple[np.ndarray, np.ndarray, np.ndarray]  # input_ids, special_mask, word_starts


def pack(ids: np.ndarray, starts: np.ndarray, n_seq: int, rng: np.random.Generator) -> list:
    """Cut the concatenated token stream of consecutive lines into ``n_seq`` sequences.

    Kinds by index % 4: 0, 2 -> ``[CLS] 126 tokens [SEP]``; 1 -> a pair ``[CLS] a [SEP] b
    [SEP]`` split at an arbitrary token (possibly inside a word); 3 -> ``[CLS] 20..100 tokens
    [SEP]`` padded with [PAD] to 128. Word starts at special tokens and padding are 0, so a
    word after [CLS]/[SEP] starts only because special tokens are boundaries.
    """
    out: list[Instance] = []
    pos = 0
    for i in range(n_seq):
        kind = i % 4
        n = {0: MAX_LEN - 2, 1: MAX_LEN - 3, 2: MAX_LEN - 2, 3: int(rng.integers(20, 101))}[kind]
        toks, ws = ids[pos : pos + n], starts[pos : pos + n]
        pos += n
        if kind == 1:
            cut = int(rng.integers(20, n - 20))
            seq = [CLS, *toks[:cut], SEP, *toks[cut:], SEP]
            word = [0, *ws[:cut], 0, *ws[cut:], 0]
        else:
            seq = [CLS, *toks, SEP]
            word = [0, *ws, 0]
        seq += [PAD] * (MAX_LEN - len(seq))
        word += [0] * (MAX_LEN - len(word))
        input_ids = np.array(seq, dtype=np.int64)
        special = np.isin(input_ids, (PAD, CLS, SEP))
        out.append((input_ids, special, np.array(word, dtype=np.uint8)))
    assert pos <= len(ids), "not enough corpus text"
    return out


@pytest.fixture(scope="module")
def vocab_size(zh_vocab_dir: Path) -> int:
    return Tokenizer.from_pretrained(zh_vocab_dir).vocab_size


@pytest.fixture(scope="module")
def sequences(zh_vocab_dir: Path) -> list[Instance]:
    """2000 sequences of real text with jieba word starts (3/4 full, 1/4 padded)."""
    tokenizer = Tokenizer.from_pretrained(zh_vocab_dir)
    lines = list(corpus_lines())[::10]  # reviews and People's Daily, in corpus order
    encodings = tokenizer.backend.encode_batch(lines, add_special_tokens=False)
    ids, starts, total = [], [], 0
    for enc, line in zip(encodings, lines, strict=True):
        ids.append(np.array(enc.ids, dtype=np.int64))
        starts.append(word_starts(enc.tokens, enc.offsets, line))
        total += len(enc.ids)
        if total > N_SEQ * (MAX_LEN - 2):
            break
    seqs = pack(np.concatenate(ids), np.concatenate(starts), N_SEQ, np.random.default_rng(0))
    assert not any((s[0] == MASK).any() for s in seqs)  # so "out == [MASK]" means masked
    return seqs


def config_for(name: str, **kw: object) -> MaskingConfig:
    kw.setdefault("max_predictions", 20)
    return MaskingConfig(strategy=name, **kw)  # type: ignore[arg-type]


def run(
    seqs: list[Instance], name: str, vocab_size: int, seed: int = 0, **kw: object
) -> list[MaskedSequence]:
    config = config_for(name, **kw)
    strategy = build_strategy(config)
    rng = np.random.default_rng(seed)
    return [
        mask_sequence(
            ids, special, ws, strategy, config, rng, mask_token_id=MASK, vocab_size=vocab_size
        )
        for ids, special, ws in seqs
    ]


@pytest.fixture(scope="module")
def masked(sequences: list[Instance], vocab_size: int) -> dict[str, list[MaskedSequence]]:
    return {name: run(sequences, name, vocab_size) for name in STRATEGY_NAMES}


def word_ids(special: np.ndarray, ws: np.ndarray) -> np.ndarray:
    """Word index of every token (-1 at special tokens): a word starts at a word start or
    after a special token and runs to the next one (the test's own definition)."""
    cand = ~special
    prev_special = np.r_[True, special[:-1]]
    new_word = cand & ((ws != 0) | prev_special)
    ids = np.cumsum(new_word) - 1
    ids[special] = -1
    return ids


# ------------------------------------------------------------------ budget and placement


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_rate_is_15_percent_and_budget_filled(
    name: str, sequences: list[Instance], masked: dict[str, list[MaskedSequence]]
) -> None:
    n_cand = sum(int((~special).sum()) for _, special, _ in sequences)
    n_pred = sum(m.positions.shape[0] for m in masked[name])
    assert abs(n_pred / n_cand - 0.15) < 0.01, n_pred / n_cand
    config = config_for(name)
    budgets = [config.budget(int((~s).sum())) for _, s, _ in sequences]
    assert budgets[0] == 19  # 126 real tokens: round(18.9), below max_predictions=20
    assert all(m.positions.shape[0] <= b for m, b in zip(masked[name], budgets, strict=True))
    filled = sum(m.positions.shape[0] for m in masked[name]) / sum(budgets)
    assert filled > 0.99, filled


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_never_chooses_special_tokens_or_padding(
    name: str, sequences: list[Instance], masked: dict[str, list[MaskedSequence]]
) -> None:
    padded = 0
    for (ids, special, _), m in zip(sequences, masked[name], strict=True):
        pos = m.positions
        assert not special[pos].any()
        assert not np.isin(ids[pos], (PAD, CLS, SEP)).any()
        assert (np.diff(pos) > 0).all()  # sorted, no duplicates
        np.testing.assert_array_equal(m.labels, ids[pos])
        untouched = np.ones(len(ids), dtype=bool)
        untouched[pos] = False
        np.testing.assert_array_equal(m.input_ids[untouched], ids[untouched])
        covered = [i for s, e in m.spans for i in range(s, e)]
        assert covered == pos.tolist()
        padded += bool((ids == PAD).any())
    assert padded >= N_SEQ // 4


def test_padding_excluded_by_id_even_if_not_in_special_mask(
    sequences: list[Instance], vocab_size: int
) -> None:
    short = [s for s in sequences if (s[0] == PAD).any()][:100]
    for name in STRATEGY_NAMES:
        config = config_for(name)
        strategy, rng = build_strategy(config), np.random.default_rng(1)
        for ids, special, ws in short:
            only_cls_sep = special & (ids != PAD)
            m = mask_sequence(
                ids,
                only_cls_sep,
                ws,
                strategy,
                config,
                rng,
                mask_token_id=MASK,
                vocab_size=vocab_size,
                pad_token_id=PAD,
            )
            assert not (ids[m.positions] == PAD).any()
            budget = config.budget(int((~special).sum()))  # counted without the padding
            assert len(m.positions) <= budget
            if name == "token":
                assert len(m.positions) == budget


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_corruption_80_10_10(
    name: str,
    sequences: list[Instance],
    masked: dict[str, list[MaskedSequence]],
    vocab_size: int,
) -> None:
    # "masked": now [MASK]; "random": now a different id (never [MASK]: random ids are drawn
    # from [104, vocab)); "kept": unchanged. A random draw equal to the original id counts as
    # kept, so the expected kept share is 0.1 + 0.1 / (vocab_size - 104), about 0.10001.
    counts = Counter()
    for m in masked[name]:
        new = m.input_ids[m.positions]
        is_mask = new == MASK
        is_random = ~is_mask & (new != m.labels)
        counts["mask"] += int(is_mask.sum())
        counts["random"] += int(is_random.sum())
        counts["kept"] += int((new == m.labels).sum())
        assert ((new[is_random] >= FIRST_NORMAL) & (new[is_random] < vocab_size)).all()
    total = sum(counts.values())
    assert total > 30_000
    shares = {k: v / total for k, v in counts.items()}
    assert abs(shares["mask"] - 0.8) < 0.02, shares
    assert abs(shares["random"] - 0.1) < 0.02, shares
    assert abs(shares["kept"] - 0.1) < 0.02, shares


@pytest.mark.parametrize("name", ["wwm", "ngram", "span"])
def test_whole_words_never_split(
    name: str, sequences: list[Instance], masked: dict[str, list[MaskedSequence]]
) -> None:
    multi_token_words = 0
    for (_, special, ws), m in zip(sequences, masked[name], strict=True):
        words = word_ids(special, ws)
        size = np.bincount(words[~special])
        chosen = np.bincount(words[m.positions], minlength=size.shape[0])
        assert ((chosen == 0) | (chosen == size)).all()
        multi_token_words += int((chosen[size > 1] > 0).sum())
        for (s, e), n in zip(m.spans, m.span_lengths, strict=True):
            assert not special[s:e].any()  # a span never crosses [SEP]
            assert len(set(words[s:e].tolist())) == n  # n whole words
            assert s == 0 or words[s - 1] != words[s]
            assert e == len(words) or words[e] != words[e - 1]
    assert multi_token_words > 1000  # jieba words of 2+ characters are really being chosen


def test_token_masking_chooses_single_tokens(masked: dict[str, list[MaskedSequence]]) -> None:
    for m in masked["token"]:
        assert m.span_lengths == [1] * len(m.spans)
        assert all(e - s == 1 for s, e in m.spans)


# ------------------------------------------------------------------ span-length distributions


def test_ngram_lengths_follow_40_30_20_10(masked: dict[str, list[MaskedSequence]]) -> None:
    lengths = Counter(n for m in masked["ngram"] for n in m.span_lengths)
    total = sum(lengths.values())
    assert total > 8_000 and set(lengths) == {1, 2, 3, 4}
    for n, p in zip((1, 2, 3, 4), (0.4, 0.3, 0.2, 0.1), strict=True):
        assert abs(lengths[n] / total - p) < 0.03, (n, lengths[n] / total)


def test_ngram_probs_are_configurable(sequences: list[Instance], vocab_size: int) -> None:
    out = run(sequences[:800], "ngram", vocab_size, ngram_probs=(0.0, 1.0))
    assert {n for m in out for n in m.span_lengths} == {2}


def test_span_mean_length_is_spanbert_geometric(masked: dict[str, list[MaskedSequence]]) -> None:
    # SpanBERT: l ~ Geo(0.2) clipped at 10 words, i.e. P(l) ∝ 0.2 * 0.8**(l-1) for l <= 10
    # renormalised (its len_distrib), mean 3.8 words.
    p, top = 0.2, 10
    weights = [p * (1 - p) ** (k - 1) for k in range(1, top + 1)]
    expected = sum(k * w for k, w in enumerate(weights, start=1)) / sum(weights)
    assert abs(expected - 3.8) < 0.01
    assert np.allclose(geometric_span_probs(p, top), np.array(weights) / sum(weights))
    lengths = [n for m in masked["span"] for n in m.span_lengths]
    assert len(lengths) > 4_000 and max(lengths) == top
    mean = float(np.mean(lengths))
    assert abs(mean / expected - 1) < 0.10, mean


# ------------------------------------------------------------------ determinism, helpers


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_same_seed_same_masks_other_seed_differs(
    name: str, sequences: list[Instance], vocab_size: int
) -> None:
    subset = sequences[:200]
    a = run(subset, name, vocab_size, seed=7)
    b = run(subset, name, vocab_size, seed=7)
    c = run(subset, name, vocab_size, seed=8)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.input_ids, y.input_ids)
        np.testing.assert_array_equal(x.positions, y.positions)
        assert x.spans == y.spans and x.span_lengths == y.span_lengths
    differ = sum(not np.array_equal(x.positions, z.positions) for x, z in zip(a, c, strict=True))
    assert differ >= 190, differ
    # dynamic masking: one generator masks the same instance differently on each pass
    rng = np.random.default_rng(0)
    config = config_for(name)
    strategy = build_strategy(config)
    ids, special, ws = subset[0]
    passes = {
        tuple(
            mask_sequence(
                ids, special, ws, strategy, config, rng, mask_token_id=MASK, vocab_size=vocab_size
            ).positions.tolist()
        )
        for _ in range(10)
    }
    assert len(passes) == 10


def test_mask_batch_seeds_are_per_instance(sequences: list[Instance], vocab_size: int) -> None:
    config = config_for("ngram")
    strategy = build_strategy(config)
    kw = {"mask_token_id": MASK, "vocab_size": vocab_size}
    batch = mask_batch(sequences[:4], strategy, config, [11, 12, 13, 14], **kw)
    alone = mask_batch(sequences[2:3], strategy, config, [13], **kw)
    np.testing.assert_array_equal(batch[2].input_ids, alone[0].input_ids)
    assert batch[2].spans == alone[0].spans
    shared = mask_batch(sequences[:4], strategy, config, 5, **kw)
    again = mask_batch(sequences[:4], strategy, config, np.random.default_rng(5), **kw)
    assert [m.spans for m in shared] == [m.spans for m in again]


def test_max_predictions_caps_the_budget(sequences: list[Instance], vocab_size: int) -> None:
    for name in STRATEGY_NAMES:
        out = run(sequences[:100], name, vocab_size, max_predictions=5)
        assert all(len(m.positions) <= 5 for m in out)
        assert sum(len(m.positions) for m in out) >= 0.95 * 5 * 100


def test_small_and_empty_inputs(vocab_size: int) -> None:
    config = config_for("span")
    kw = {"mask_token_id": MASK, "vocab_size": vocab_size}
    only_special = np.array([CLS, SEP, PAD, PAD])
    special = np.array([True, True, True, True])
    one = np.array([CLS, 2000, SEP])  # one candidate: budget max(1, round(0.15)) = 1
    one_special = np.array([True, False, True])
    for strategy in (TokenMasking(), WholeWordMasking(), NgramMasking(), SpanMasking()):
        rng = np.random.default_rng(0)
        m = mask_sequence(only_special, special, np.ones(4), strategy, config, rng, **kw)
        assert m.positions.shape == (0,) and m.spans == []
        np.testing.assert_array_equal(m.input_ids, only_special)
        m = mask_sequence(one, one_special, np.zeros(3), strategy, config, rng, **kw)
        assert m.positions.tolist() == [1] and m.labels.tolist() == [2000]


def test_build_strategy_uses_config() -> None:
    assert isinstance(build_strategy(MaskingConfig()), TokenMasking)
    assert isinstance(build_strategy(MaskingConfig(strategy="wwm")), WholeWordMasking)
    ngram = build_strategy(MaskingConfig(strategy="ngram", ngram_probs=(0.5, 0.5)))
    assert isinstance(ngram, NgramMasking) and ngram.probs == (0.5, 0.5)
    span = build_strategy(MaskingConfig(strategy="span", span_p=0.5, span_max=3))
    assert isinstance(span, SpanMasking) and span.probs == pytest.approx((4 / 7, 2 / 7, 1 / 7))


# ------------------------------------------------------------------ configuration errors


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"mask_prob": 0.0}, "mask_prob"),
        ({"mask_prob": 1.0}, "mask_prob"),
        ({"mask_prob": -0.1}, "mask_prob"),
        ({"mask_prob": 1.5}, "mask_prob"),
        ({"mask_prob": "0.15"}, "mask_prob"),
        ({"ngram_probs": (0.4, 0.3, 0.2)}, "ngram_probs"),
        ({"ngram_probs": (0.5, 0.6, -0.1)}, "ngram_probs"),
        ({"ngram_probs": ()}, "ngram_probs"),
        ({"mask_replace": 0.9, "random_replace": 0.2}, "mask_replace + random_replace"),
        ({"random_replace": -0.1}, "random_replace"),
        ({"strategy": "whole_word"}, "strategy"),
        ({"max_predictions": 0}, "max_predictions"),
        ({"span_p": 0.0}, "span_p"),
        ({"span_max": 0}, "span_max"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=f"MaskingConfig.{field}".replace("+", r"\+")):
        MaskingConfig(**kwargs)


def test_good_config_is_normalised() -> None:
    config = MaskingConfig(ngram_probs=[0.25] * 4, mask_replace=0.9, random_replace=0.1)
    assert config.ngram_probs == (0.25, 0.25, 0.25, 0.25)
    assert config.budget(0) == 0 and config.budget(3) == 1 and config.budget(1000) == 20


# ------------------------------------------------------------------ the context-free floor
@pytest.mark.parametrize("split", [(0.8, 0.1), (0.6, 0.3)])
def test_context_free_floor_is_the_best_no_context_loss_on_real_masking(
    split: tuple[float, float], sequences: list[Instance], vocab_size: int
) -> None:
    # zhplm.objectives.mlm_floor: the loss of the best predictor that sees only the token at
    # the predicted position. Here that predictor is built by Bayes from the unigram counts
    # and the masker's documented corruption, then scored on the real masker's output: its
    # loss must equal the formula, and no simpler rule (one global "copy" weight) may beat it.
    mask_replace, random_replace = split
    keep = 1 - mask_replace - random_replace
    out = run(sequences, "token", vocab_size, mask_replace=mask_replace,
              random_replace=random_replace)
    counts = np.zeros(vocab_size)
    for ids, special, _ in sequences:
        counts += np.bincount(ids[~special], minlength=vocab_size)
    p = counts / counts.sum()
    u = np.zeros(vocab_size)
    u[FIRST_NORMAL:] = 1 / (vocab_size - FIRST_NORMAL)

    def scored(probability) -> float:  # mean -log q(label | shown token)
        losses = [-np.log(probability(m.input_ids[m.positions], m.labels)) for m in out]
        return float(np.concatenate(losses).mean())

    def bayes(shown: np.ndarray, label: np.ndarray) -> np.ndarray:
        q = p[label].copy()
        v = shown != MASK
        x, t = shown[v], label[v]
        seen = keep * p[x] + random_replace * u[x]
        q[v] = (keep * (x == t) + random_replace * u[x]) * p[t] / seen
        q[v] = np.where(x == t, (keep * p[x] + random_replace * u[x] * p[x]) / seen, q[v])
        return q

    def one_weight(a: float):
        def q(shown: np.ndarray, label: np.ndarray) -> np.ndarray:
            v = shown != MASK
            out_q = p[label].copy()
            out_q[v] = a * (shown[v] == label[v]) + (1 - a) * p[label[v]]
            return out_q
        return q

    floor = context_free_mlm_loss(counts, mask_replace, random_replace, FIRST_NORMAL)
    assert abs(scored(bayes) - floor) < 0.03, (scored(bayes), floor)
    a = keep / (keep + random_replace)
    assert scored(bayes) < min(scored(one_weight(w)) for w in (a, a - 0.2, a + 0.2))
    # between mask x H (visible tokens for free) and H (ignoring the visible token)
    entropy = unigram_entropy(counts)
    assert mask_replace * entropy < floor < entropy


def test_context_free_floor_edge_cases() -> None:
    counts = np.array([0.0, 1.0, 1.0, 2.0, 4.0])
    entropy = unigram_entropy(counts)
    assert entropy == pytest.approx(-sum(c / 8 * np.log(c / 8) for c in counts if c))
    assert context_free_mlm_loss(counts, 1.0, 0.0) == pytest.approx(entropy)  # all [MASK]
    assert context_free_mlm_loss(counts, 0.8, 0.0) == pytest.approx(0.8 * entropy)  # kept: free
    assert context_free_mlm_loss(counts, 0.8, 0.2, 1) == pytest.approx(entropy)  # no keeps
    assert context_free_mlm_loss(counts, 0.7, 0.3 + 1e-7) > 0  # the masker's tolerance
    for bad in ((0.9, 0.2), (-0.1, 0.1)):
        with pytest.raises(ValueError, match="mask_replace"):
            context_free_mlm_loss(counts, *bad)
