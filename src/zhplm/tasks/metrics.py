"""Official downstream metrics: classification, regression, NER spans and CMRC 2018.

Everything here is pure Python plus numpy, and every function gives the same numbers as
the reference implementation that the benchmark itself uses:

* classification (GLUE / CLUE): :func:`accuracy`, :func:`macro_f1` (sklearn's
  ``f1_score(average="macro", zero_division=0)``) and :func:`matthews_corrcoef`
  (sklearn's multi-class MCC);
* regression (STS-B): :func:`pearson` and :func:`spearman` (scipy's ``pearsonr`` and
  ``spearmanr``, average ranks for ties);
* sequence labelling (NER): :func:`get_entities` and :func:`entity_scores`, which agree
  with seqeval's default (conlleval-compatible, lenient) mode;
* span extraction (CMRC 2018): :func:`cmrc_em`, :func:`cmrc_f1` and :func:`cmrc_scores`,
  which follow the official ``cmrc2018_evaluate.py`` (v5) line for line, except that
  runs of non-Chinese text are split on whitespace instead of by ``nltk.word_tokenize``
  (see :func:`mixed_segmentation`).

Bad input (length mismatch, empty input, unknown tagging scheme, malformed tag) raises
:class:`zhplm.errors.InputError`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from zhplm.errors import InputError

__all__ = [
    "CMRC_PUNCTUATION",
    "accuracy",
    "classification_scores",
    "cmrc_em",
    "cmrc_f1",
    "cmrc_scores",
    "entity_scores",
    "find_lcs",
    "get_entities",
    "macro_f1",
    "matthews_corrcoef",
    "mixed_segmentation",
    "pearson",
    "regression_scores",
    "remove_punctuation",
    "spearman",
]

T = TypeVar("T")


# --------------------------------------------------------------------------- helpers


def _check_pair(predictions: Sequence[Any], golds: Sequence[Any], what: str) -> None:
    """Raise InputError unless ``predictions`` and ``golds`` are non-empty and equally long."""
    if isinstance(predictions, str) or isinstance(golds, str):
        raise InputError(
            f"{what}: predictions and golds must be sequences of items, not a single string; "
            "wrap a single item in a list"
        )
    n_pred, n_gold = len(predictions), len(golds)
    if n_pred != n_gold:
        raise InputError(
            f"{what}: got {n_pred} predictions but {n_gold} golds; "
            "pass exactly one prediction per gold item"
        )
    if n_gold == 0:
        raise InputError(f"{what}: predictions and golds are empty; pass at least one item")


def _union_labels(*sequences: Sequence[Hashable]) -> list[Hashable]:
    """Every label in ``sequences``, sorted when the labels are comparable, else first-seen."""
    seen: dict[Hashable, None] = {}
    for seq in sequences:
        for item in seq:
            seen.setdefault(item, None)
    labels = list(seen)
    try:
        return sorted(labels)  # type: ignore[type-var]
    except TypeError:
        return labels


def _safe_div(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, or 0.0 when the denominator is 0 (zero_division=0)."""
    return numerator / denominator if denominator else 0.0


def _f1_from_pr(precision: float, recall: float) -> float:
    """Harmonic mean of precision and recall, 0.0 when both are 0."""
    denom = precision + recall
    return 2.0 * precision * recall / denom if denom else 0.0


# --------------------------------------------------------------------------- classification


def accuracy(predictions: Sequence[Any], golds: Sequence[Any]) -> float:
    """Fraction (0..1) of positions where the prediction equals the gold label.

    Raises:
        InputError: the two sequences differ in length or are empty.
    """
    _check_pair(predictions, golds, "accuracy")
    correct = sum(1 for p, g in zip(predictions, golds, strict=True) if p == g)
    return correct / len(golds)


def macro_f1(
    predictions: Sequence[Hashable],
    golds: Sequence[Hashable],
    labels: Sequence[Hashable] | None = None,
) -> float:
    """Unweighted mean of the per-class F1 over ``labels``.

    Same as sklearn's ``f1_score(golds, predictions, average="macro", labels=labels,
    zero_division=0)``: per class, F1 = 2·TP / (2·TP + FP + FN), and 0.0 for a class that
    never occurs in either golds or predictions. ``labels`` defaults to the sorted union of
    the labels found in golds and predictions; when it is given, items whose label is not
    in it only count as false positives / negatives of the listed classes.

    Raises:
        InputError: length mismatch, empty input, or ``labels`` empty or with duplicates.
    """
    _check_pair(predictions, golds, "macro_f1")
    if labels is None:
        label_list = _union_labels(golds, predictions)
    else:
        label_list = list(labels)
        if not label_list:
            raise InputError("macro_f1: `labels` is empty; pass at least one label or None")
        if len(set(label_list)) != len(label_list):
            raise InputError(f"macro_f1: `labels` has duplicates: {label_list!r}")
    tp: Counter[Hashable] = Counter()
    pred_count: Counter[Hashable] = Counter(predictions)
    gold_count: Counter[Hashable] = Counter(golds)
    for p, g in zip(predictions, golds, strict=True):
        if p == g:
            tp[g] += 1
    scores = []
    for label in label_list:
        # 2TP + FP + FN == |predicted as label| + |gold label|
        denom = pred_count[label] + gold_count[label]
        scores.append(_safe_div(2.0 * tp[label], denom))
    return float(sum(scores) / len(scores))


def matthews_corrcoef(predictions: Sequence[Hashable], golds: Sequence[Hashable]) -> float:
    """Multi-class Matthews correlation coefficient, as sklearn defines it.

    With the confusion matrix C (rows gold, columns predicted), t = row sums,
    p = column sums, c = trace and s = total::

        MCC = (c·s − t·p) / sqrt((s² − p·p) · (s² − t·t))

    Returns 0.0 when the denominator is 0 (e.g. all golds or all predictions are one class),
    as sklearn does. For two classes this is the usual binary MCC.

    Raises:
        InputError: length mismatch or empty input.
    """
    _check_pair(predictions, golds, "matthews_corrcoef")
    t_sum: Counter[Hashable] = Counter(golds)
    p_sum: Counter[Hashable] = Counter(predictions)
    n_correct = sum(1 for p, g in zip(predictions, golds, strict=True) if p == g)
    n = len(golds)
    # Python ints: exact, no overflow.
    t_dot_p = sum(count * p_sum[label] for label, count in t_sum.items())
    cov_tp = n_correct * n - t_dot_p
    cov_pp = n * n - sum(v * v for v in p_sum.values())
    cov_tt = n * n - sum(v * v for v in t_sum.values())
    if cov_pp * cov_tt == 0:
        return 0.0
    return float(cov_tp / math.sqrt(float(cov_tt) * float(cov_pp)))


def classification_scores(
    predictions: Sequence[Hashable], golds: Sequence[Hashable]
) -> dict[str, float]:
    """``{"accuracy", "macro_f1", "mcc"}`` for a classification task (see the functions)."""
    return {
        "accuracy": accuracy(predictions, golds),
        "macro_f1": macro_f1(predictions, golds),
        "mcc": matthews_corrcoef(predictions, golds),
    }


# --------------------------------------------------------------------------- regression


def _as_float_pair(
    predictions: Sequence[float], golds: Sequence[float], what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to two finite 1-D float64 arrays."""
    _check_pair(predictions, golds, what)
    try:
        x = np.asarray(predictions, dtype=np.float64)
        y = np.asarray(golds, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what}: predictions and golds must be numbers ({exc})") from exc
    if x.ndim != 1 or y.ndim != 1:
        raise InputError(f"{what}: predictions and golds must be flat sequences of numbers")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InputError(f"{what}: predictions or golds contain NaN or infinity")
    return x, y


def _pearson_arrays(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of two finite arrays; nan if either is constant."""
    if (x == x[0]).all() or (y == y[0]).all():
        return math.nan
    xm = x - x.mean()
    ym = y - y.mean()
    xm = xm / np.linalg.norm(xm)
    ym = ym / np.linalg.norm(ym)
    r = float(np.dot(xm, ym))
    return max(-1.0, min(1.0, r))


def pearson(predictions: Sequence[float], golds: Sequence[float]) -> float:
    """Pearson correlation coefficient (scipy's ``pearsonr(...).statistic``).

    Policy for the undefined case: returns ``nan`` when either side is constant (this
    includes a single pair), like scipy. Callers averaging it should check ``math.isnan``.

    Raises:
        InputError: length mismatch, empty input, non-numeric, NaN or infinite values.
    """
    x, y = _as_float_pair(predictions, golds, "pearson")
    return _pearson_arrays(x, y)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given the average of their ranks (scipy ``rankdata``)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    new_group = np.empty(len(x), dtype=bool)
    new_group[0] = True
    new_group[1:] = sorted_x[1:] != sorted_x[:-1]
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], len(x))  # exclusive
    # positions start..end-1 hold 1-based ranks start+1..end; their mean is (start+end+1)/2
    group_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = group_rank[np.cumsum(new_group) - 1]
    return ranks


def spearman(predictions: Sequence[float], golds: Sequence[float]) -> float:
    """Spearman rank correlation (scipy's ``spearmanr``): Pearson r of the average ranks.

    Ties receive the average of the ranks they span. Policy for the undefined case:
    returns ``nan`` when either side is constant (this includes a single pair), like scipy.

    Raises:
        InputError: length mismatch, empty input, non-numeric, NaN or infinite values.
    """
    x, y = _as_float_pair(predictions, golds, "spearman")
    return _pearson_arrays(_average_ranks(x), _average_ranks(y))


def regression_scores(predictions: Sequence[float], golds: Sequence[float]) -> dict[str, float]:
    """``{"pearson", "spearman", "average"}`` as GLUE reports STS-B.

    ``average`` is the mean of the two (nan if either is nan).
    """
    p = pearson(predictions, golds)
    s = spearman(predictions, golds)
    return {"pearson": p, "spearman": s, "average": (p + s) / 2.0}


# --------------------------------------------------------------------------- sequence labelling

_SCHEMES: dict[str, frozenset[str]] = {
    "BIO": frozenset("BI"),
    "IOB2": frozenset("BI"),
    "BIOES": frozenset("BIES"),
    "IOBES": frozenset("BIES"),
}

UNTYPED = "_"
"""Entity type given to untyped tags such as a bare ``"B"`` (seqeval uses the same)."""


def _scheme_prefixes(scheme: str) -> frozenset[str]:
    if not isinstance(scheme, str) or scheme.upper() not in _SCHEMES:
        raise InputError(
            f"unknown tagging scheme {scheme!r}; use one of 'BIO' (alias 'IOB2') "
            "or 'BIOES' (alias 'IOBES')"
        )
    return _SCHEMES[scheme.upper()]


def _parse_tag(tag: object, prefixes: frozenset[str], scheme: str, index: int) -> tuple[str, str]:
    """Split a tag into (prefix, type). "O" -> ("O", ""); bare "B" -> ("B", "_")."""
    if not isinstance(tag, str):
        raise InputError(f"tag at position {index} is {tag!r}, not a string")
    if tag == "O":
        return "O", ""
    prefix, sep, type_ = tag.partition("-")
    if prefix in prefixes and (not sep or type_):
        return prefix, type_ or UNTYPED
    allowed = ", ".join(sorted(prefixes))
    raise InputError(
        f"tag {tag!r} at position {index} is not a {scheme.upper()} tag; expected 'O' or "
        f"PREFIX-TYPE (or a bare PREFIX) with PREFIX one of {allowed}"
    )


def _chunk_ends(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """Whether a chunk ended between the previous and the current token (conlleval)."""
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag != "O" and prev_type != type_


def _chunk_starts(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """Whether a chunk starts at the current token (conlleval)."""
    if tag in ("B", "S"):
        return True
    if tag in ("I", "E") and prev_tag in ("E", "S", "O"):
        return True
    return tag != "O" and prev_type != type_


def get_entities(tags: Sequence[str], scheme: str = "BIO") -> list[tuple[str, int, int]]:
    """Entities of one tag sequence as ``(type, start, end_exclusive)``, in order.

    Decoding is lenient and conlleval-compatible, exactly like seqeval's default mode
    (``seqeval.metrics.sequence_labeling.get_entities``, which returns inclusive ends):

    * ``B-X`` (and ``S-X``) always starts an entity; an ``I-X`` (or ``E-X``) after ``O``,
      after an entity of another type, or after a finished ``E``/``S`` starts a new one;
    * an entity ends before ``O``, ``B``, ``S``, a change of type, and after ``E``/``S``.

    ``scheme`` is ``"BIO"`` (alias ``"IOB2"``) or ``"BIOES"`` (alias ``"IOBES"``),
    case-insensitive; it decides which prefixes are legal (B, I; or B, I, E, S). Tags are
    ``"O"``, ``PREFIX-TYPE`` or a bare ``PREFIX`` (its entities get type ``"_"``).

    Raises:
        InputError: unknown scheme, or a tag that is not of the scheme (``"X-PER"``,
            ``"E-PER"`` under BIO, ``"B-"``, a non-string).
    """
    prefixes = _scheme_prefixes(scheme)
    if isinstance(tags, str):
        raise InputError("get_entities: pass a sequence of tags, not a single string")
    parsed = [_parse_tag(t, prefixes, scheme, i) for i, t in enumerate(tags)]
    entities: list[tuple[str, int, int]] = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, (tag, type_) in enumerate([*parsed, ("O", "")]):
        if _chunk_ends(prev_tag, tag, prev_type, type_):
            entities.append((prev_type, begin, i))
        if _chunk_starts(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return entities


def entity_scores(
    gold_sequences: Sequence[Sequence[str]],
    predicted_sequences: Sequence[Sequence[str]],
    scheme: str = "BIO",
) -> dict[str, Any]:
    """Span-level precision / recall / F1 for NER (strict span + type match, micro-averaged).

    Entities come from :func:`get_entities` per sentence; an entity is correct when the
    prediction has one with the same type, start and end in the same sentence. Equals
    seqeval's ``precision_score`` / ``recall_score`` / ``f1_score`` in the default mode
    (with 0.0 where they are undefined).

    Returns:
        ``{"precision", "recall", "f1", "per_type", "num_gold", "num_predicted",
        "num_correct"}`` where ``per_type`` maps each type found in golds or predictions
        (sorted) to ``{"precision", "recall", "f1", "support"}``; support = gold count.

    Raises:
        InputError: no sentences, different numbers of sentences, a sentence whose
            predicted and gold lengths differ, unknown scheme, or a malformed tag.
    """
    _scheme_prefixes(scheme)
    _check_pair(predicted_sequences, gold_sequences, "entity_scores")
    gold: set[tuple[str, int, int, int]] = set()
    pred: set[tuple[str, int, int, int]] = set()
    for k, (g_tags, p_tags) in enumerate(zip(gold_sequences, predicted_sequences, strict=True)):
        if len(g_tags) != len(p_tags):
            raise InputError(
                f"entity_scores: sentence {k} has {len(g_tags)} gold tags but "
                f"{len(p_tags)} predicted tags; they must be aligned token by token"
            )
        gold.update((t, k, s, e) for t, s, e in get_entities(g_tags, scheme))
        pred.update((t, k, s, e) for t, s, e in get_entities(p_tags, scheme))
    correct = gold & pred

    def count(entities: set[tuple[str, int, int, int]]) -> Counter[str]:
        return Counter(ent[0] for ent in entities)

    n_gold_t, n_pred_t, n_correct_t = count(gold), count(pred), count(correct)
    per_type: dict[str, dict[str, float | int]] = {}
    for type_ in sorted(set(n_gold_t) | set(n_pred_t)):
        p = _safe_div(n_correct_t[type_], n_pred_t[type_])
        r = _safe_div(n_correct_t[type_], n_gold_t[type_])
        per_type[type_] = {
            "precision": p,
            "recall": r,
            "f1": _f1_from_pr(p, r),
            "support": n_gold_t[type_],
        }
    precision = _safe_div(len(correct), len(pred))
    recall = _safe_div(len(correct), len(gold))
    return {
        "precision": precision,
        "recall": recall,
        "f1": _f1_from_pr(precision, recall),
        "per_type": per_type,
        "num_gold": len(gold),
        "num_predicted": len(pred),
        "num_correct": len(correct),
    }


# --------------------------------------------------------------------------- CMRC 2018

CMRC_PUNCTUATION: tuple[str, ...] = (
    "-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=",
    "，", "。", "：", "？", "！", "“", "”", "；", "’", "《", "》", "……", "·", "、",
    "「", "」", "（", "）", "－", "～", "『", "』",
)  # fmt: skip
"""The official script's punctuation list. It is tested one character at a time, so the
two-character entry ``"……"`` never matches: a lone ``"…"`` is *not* punctuation there."""

_PUNCT_SET = frozenset(CMRC_PUNCTUATION)


def _is_cjk(char: str) -> bool:
    """The official test ``re.search('[\\u4e00-\\u9fa5]', char)`` for a single character."""
    return "\u4e00" <= char <= "\u9fa5"


def _word_split(text: str) -> list[str]:
    """Stand-in for ``nltk.word_tokenize`` on a run of non-Chinese characters."""
    return text.split()


def mixed_segmentation(text: str, rm_punc: bool = False) -> list[str]:
    """Split mixed Chinese/English text into segments, as the official CMRC 2018 script.

    The text is lowercased and stripped. Each character in U+4E00..U+9FA5 and each
    character of :data:`CMRC_PUNCTUATION` becomes its own segment; every other character
    (Latin letters, digits, spaces, punctuation not in the list such as ``,`` ``.`` or
    ``…``) is collected into a pending run (the script's ``temp_str``), which is tokenized
    when a Chinese/listed character or the end of the text is reached.

    ``rm_punc=True`` drops listed punctuation *without* flushing the pending run, so
    ``"abc-def"`` gives ``["abc", "-", "def"]`` but ``["abcdef"]`` with ``rm_punc`` —
    exactly as in the official script.

    Deviation: the official script tokenizes pending runs with ``nltk.word_tokenize``;
    here they are split on whitespace. The two agree on runs of plain words, numbers and
    spaces, but nltk also splits off ASCII punctuation and clitics (``"u.s.,"`` or
    ``"don't"``), so answers containing those may score slightly differently.
    """
    text = str(text).lower().strip()
    segments: list[str] = []
    pending: list[str] = []
    for char in text:
        is_punct = char in _PUNCT_SET
        if rm_punc and is_punct:
            continue
        if is_punct or _is_cjk(char):
            if pending:
                segments.extend(_word_split("".join(pending)))
                pending = []
            segments.append(char)
        else:
            pending.append(char)
    if pending:
        segments.extend(_word_split("".join(pending)))
    return segments


def remove_punctuation(text: str) -> str:
    """Lowercase, strip, and drop every character of :data:`CMRC_PUNCTUATION`."""
    return "".join(c for c in str(text).lower().strip() if c not in _PUNCT_SET)


def find_lcs(s1: Sequence[T], s2: Sequence[T]) -> tuple[Sequence[T], int]:
    """Longest common *substring* (contiguous) of two sequences, as the official script.

    Returns ``(s1[p - length:p], length)``; among several longest ones, the one ending
    earliest in ``s1`` wins. Works on strings and on lists of segments.
    """
    best, end = 0, 0
    prev = [0] * (len(s2) + 1)
    for i, a in enumerate(s1):
        cur = [0] * (len(s2) + 1)
        for j, b in enumerate(s2):
            if a == b:
                cur[j + 1] = prev[j] + 1
                if cur[j + 1] > best:
                    best, end = cur[j + 1], i + 1
        prev = cur
    return s1[end - best : end], best


def _check_answers(gold_answers: Sequence[str], what: str) -> None:
    if isinstance(gold_answers, str):
        raise InputError(f"{what}: gold_answers must be a list of strings, not one string")
    if len(gold_answers) == 0:
        raise InputError(f"{what}: gold_answers is empty; pass at least one gold answer")


def cmrc_f1(prediction: str, gold_answers: Sequence[str]) -> float:
    """CMRC 2018 F1 (0..1): the best over the gold answers of an LCS-based F1.

    Both sides are segmented with ``mixed_segmentation(..., rm_punc=True)``; with L the
    length of their longest common substring of segments, precision = L / |pred segments|,
    recall = L / |gold segments| and F1 their harmonic mean (0 when L = 0).

    Raises:
        InputError: ``gold_answers`` is empty or a single string.
    """
    _check_answers(gold_answers, "cmrc_f1")
    pred_segs = mixed_segmentation(prediction, rm_punc=True)
    best = 0.0
    for answer in gold_answers:
        gold_segs = mixed_segmentation(answer, rm_punc=True)
        _, lcs_len = find_lcs(gold_segs, pred_segs)
        if lcs_len == 0:
            continue
        best = max(best, _f1_from_pr(lcs_len / len(pred_segs), lcs_len / len(gold_segs)))
    return best


def cmrc_em(prediction: str, gold_answers: Sequence[str]) -> float:
    """CMRC 2018 exact match: 1.0 if ``remove_punctuation`` makes the prediction equal to
    any gold answer, else 0.0.

    Raises:
        InputError: ``gold_answers`` is empty or a single string.
    """
    _check_answers(gold_answers, "cmrc_em")
    pred = remove_punctuation(prediction)
    return 1.0 if any(remove_punctuation(a) == pred for a in gold_answers) else 0.0


def cmrc_scores(
    predictions: Mapping[str, str], golds: Mapping[str, Sequence[str]]
) -> dict[str, float | int]:
    """Corpus-level CMRC 2018 scores, as the official evaluation script reports them.

    Args:
        predictions: question id -> predicted answer text. Ids not in ``golds`` are ignored.
        golds: question id -> the gold answer texts of that question.

    Returns:
        ``{"em", "f1", "average", "total", "skipped"}``: EM and F1 summed over all gold
        questions, divided by their number and ×100; ``average`` = (em + f1) / 2;
        ``total`` = number of gold questions; ``skipped`` = gold questions with no
        prediction (each scores 0). As the official script, the gold id is stripped of
        surrounding whitespace before it is looked up in ``predictions`` and the
        prediction is converted with ``str``.

    Raises:
        InputError: ``golds`` is empty, or a question has no gold answer.
    """
    if len(golds) == 0:
        raise InputError("cmrc_scores: golds is empty; pass at least one question")
    em_sum = f1_sum = 0.0
    skipped = 0
    for qid, answers in golds.items():
        key = qid.strip()
        if key not in predictions:
            skipped += 1
            continue
        prediction = str(predictions[key])
        try:
            f1_sum += cmrc_f1(prediction, answers)
            em_sum += cmrc_em(prediction, answers)
        except InputError as exc:
            raise InputError(f"cmrc_scores: question {qid!r}: {exc}") from exc
    total = len(golds)
    em = 100.0 * em_sum / total
    f1 = 100.0 * f1_sum / total
    return {"em": em, "f1": f1, "average": (em + f1) * 0.5, "total": total, "skipped": skipped}
