"""Extractive question answering (SQuAD v1.1, CMRC 2018, DRCD): features and answer decoding.

:func:`build_qa_features` turns :class:`~zhplm.tasks.examples.QAExample` s into windows laid out
``[CLS] question [SEP] context-window [SEP]`` (token types 0 then 1), as Google's BERT
``run_squad.py``: the question is cut to ``max_query_length`` tokens, the context is tokenized
once (with character offsets into the original text) and cut into windows of at most
``max_seq_length - len(question) - 3`` tokens whose starts are ``doc_stride`` tokens apart,
until the end of the context is covered. Training targets are the token positions of the
first gold answer found in the context in each window that contains it whole, else ``0``/``0``
(the [CLS] index); an answer whose ``answer_start`` is -1 or misses its text is relocated, and
an example none of whose answers occurs in its context gives no training windows at all.

:func:`postprocess_qa` turns the model's start/end logits back into answer strings cut from the
original context (so casing, accents and spacing are preserved) and
:func:`predictions_to_json` gives the ``{qid: answer}`` file the official SQuAD/CMRC scripts
read.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zhplm.errors import InputError
from zhplm.tasks.examples import QAExample
from zhplm.tokenization import Tokenizer

__all__ = ["QAFeatures", "build_qa_features", "postprocess_qa", "predictions_to_json"]

logger = logging.getLogger("zhplm")

Offset = tuple[int, int]
_STAT_KEYS = (
    "examples",
    "features",
    "answers",
    "answers_relocated",
    "answers_first_not_found",
    "answers_not_found",
    "answers_unrecoverable",
    "answers_outside_windows",
)
_MAX_NAMED = 3  # how many qids a warning names per problem


@dataclass
class QAFeatures:
    """Model inputs for ``N`` windows (features) built from a list of :class:`QAExample`.

    ``input_ids``, ``token_type_ids`` and ``attention_mask`` are int64 ``[N, L]`` arrays padded
    (with the [PAD] id, token type 0, mask 0) to the longest window of this set, not to
    ``max_seq_length``; a collate function may re-pad a batch to its own longest row.
    ``start_positions``/``end_positions`` (int64 ``[N]``) are the token indices of the answer in
    the window, ``0`` (the [CLS] index) when the answer is not wholly inside the window, when
    the example has no answer, or when features were built with ``training=False``.
    ``example_index`` (int64 ``[N]``) points into the example list the features came from
    (with ``training=True``, examples whose answers are not in their context have no rows).
    ``offsets[i]`` has ``L`` entries: ``(char_start, char_end)`` into that example's ``context``
    for a context token, ``None`` for question, special and padding tokens.
    ``stats`` counts examples, features and answer problems (see :func:`build_qa_features`).
    """

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    start_positions: np.ndarray
    end_positions: np.ndarray
    example_index: np.ndarray
    offsets: list[list[Offset | None]]
    stats: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def _where(example: QAExample) -> str:
    return example.source or f"qid {example.qid!r}"


def _occurrences(context: str, text: str) -> list[int]:
    """Every start offset of `text` in `context` (overlapping ones included)."""
    hits, pos = [], context.find(text)
    while pos >= 0:
        hits.append(pos)
        pos = context.find(text, pos + 1)
    return hits


def _locate(
    example: QAExample, stats: dict[str, int], named: dict[str, list[str]]
) -> Offset | None:
    """Character span ``[start, end)`` of the gold answer to train on, or None (drop the
    example) when none of its non-blank answers occurs in the context.

    The answers are tried in order and the first one whose text occurs in the context is used
    (official dev files list up to three; a first answer that is not in the context is skipped
    and counted). One found at its ``answer_start`` stays there; otherwise (``-1``, an offset
    past the end or at other text) it is moved to the occurrence nearest to ``answer_start``,
    or to the first occurrence when ``answer_start`` is negative. Leading and trailing
    whitespace of the answer is left out of the span (no token can hold it), and an answer
    whose edge whitespace is not in the context is looked for without it.
    """
    stats["answers"] += 1
    context = example.context
    label = _where(example)
    skipped = False
    for k, text in enumerate(example.answers):
        if not text.strip():
            continue
        start = example.answer_starts[k] if k < len(example.answer_starts) else -1
        if not (start >= 0 and context.startswith(text, start)):
            hits = _occurrences(context, text)
            if not hits and text.strip() != text:  # "北京 " where the context has no space
                text = text.strip()
                hits = _occurrences(context, text)
            if not hits:
                skipped = True
                continue
            stats["answers_relocated"] += 1
            named["answers_relocated"].append(label)
            claimed = start
            start = hits[0] if claimed < 0 else min(hits, key=lambda p: (abs(p - claimed), p))
        if skipped:
            stats["answers_first_not_found"] += 1
            named["answers_first_not_found"].append(label)
        end = start + len(text)
        stripped = text.lstrip()
        start += len(text) - len(stripped)
        end -= len(stripped) - len(stripped.rstrip())
        return start, end
    stats["answers_not_found"] += 1
    named["answers_not_found"].append(label)
    return None


def build_qa_features(
    examples: Sequence[QAExample],
    tokenizer: Tokenizer,
    *,
    max_seq_length: int = 512,
    doc_stride: int = 128,
    max_query_length: int = 64,
    training: bool = True,
) -> QAFeatures:
    """Tokenize ``examples`` into sliding windows over their contexts.

    Each question is cut to ``max_query_length`` tokens; each context is split into windows of
    at most ``max_seq_length - len(question) - 3`` tokens, the start of window ``k + 1`` being
    ``doc_stride`` tokens after that of window ``k`` (as in Google's BERT; a stride longer than
    a window is shortened to the window so no token is skipped), until the window reaching the
    last context token. An example with an empty context gets one window without context tokens.

    With ``training=True`` one gold answer per example is located -- the first whose text
    occurs in the context -- and counted in ``stats`` (one count per example/question):

    * ``answers``: examples with a non-blank answer (an example without answers trains as
      no-answer: every window targets [CLS]);
    * ``answers_relocated``: the answer is not at its ``answer_start`` (``-1``, past the end,
      or at other text) but elsewhere in the context; the occurrence nearest to
      ``answer_start`` is used, the first one when ``answer_start`` is negative;
    * ``answers_first_not_found``: the first answer is not in the context, a later one is used;
    * ``answers_not_found``: none of the answers is in the context; the example is DROPPED
      (it gives no windows, so ``examples`` > the examples in ``example_index``);
    * ``answers_unrecoverable``: the text is found but does not start and end on token
      boundaries, so the covering token span's text differs (that span is still the target);
    * ``answers_outside_windows``: no window holds the whole answer (e.g. longer than a window).

    Nonzero problem counts are logged as ONE warning on the ``zhplm`` logger (naming the file
    and a few qids), never one line per answer. With ``training=False`` answers and their
    offsets are ignored, every example gets its windows and all positions are 0 (evaluation
    scores predicted texts against all gold texts, so it never needs ``answer_start``).

    Raises:
        InputError: ``doc_stride`` or ``max_query_length`` is not positive, or
            ``max_seq_length`` leaves no room for a context token after a question + 3 specials.
    """
    if doc_stride < 1:
        raise InputError(f"doc_stride={doc_stride} must be a positive number of tokens (e.g. 128)")
    if max_query_length < 1:
        raise InputError(f"max_query_length={max_query_length} must be positive (e.g. 64)")
    if max_seq_length < 4:
        raise InputError(
            f"max_seq_length={max_seq_length} must exceed the question length + 3 special tokens"
            " ([CLS] [SEP] [SEP]); use e.g. 384 or 512"
        )
    examples = list(examples)
    stats = dict.fromkeys(_STAT_KEYS, 0)
    stats["examples"] = len(examples)
    named: dict[str, list[str]] = {k: [] for k in _STAT_KEYS}
    if not examples:
        return _no_features(stats)

    questions = tokenizer([e.question for e in examples], add_special_tokens=False)["input_ids"]
    contexts = tokenizer(
        [e.context for e in examples], add_special_tokens=False, return_offsets_mapping=True
    )
    ctx_ids, ctx_offsets = contexts["input_ids"], contexts["offset_mapping"]

    # (example, question ids, window start, window end, start position, end position)
    windows: list[tuple[int, list[int], int, int, int, int]] = []
    for i, example in enumerate(examples):
        q = questions[i][:max_query_length]
        room = max_seq_length - len(q) - 3
        if room < 1:
            raise InputError(
                f"max_seq_length={max_seq_length} leaves no room for context after the "
                f"{len(q)}-token question of {_where(example)} (+3 special tokens); use "
                f"max_seq_length >= {len(q) + 4} (> max_query_length + 3 = "
                f"{max_query_length + 3} fits every question) or lower max_query_length"
            )
        n = len(ctx_ids[i])
        span = None  # answer token span (first, last), inclusive, in context tokens
        if training and any(text.strip() for text in example.answers):
            chars = _locate(example, stats, named)
            if chars is None:  # no answer in the context: no training windows
                continue
            offs = ctx_offsets[i]
            first = bisect_right([o[1] for o in offs], chars[0])
            last = bisect_left([o[0] for o in offs], chars[1]) - 1
            if first > last:  # no token overlaps the answer (e.g. only control chars)
                stats["answers_unrecoverable"] += 1
                named["answers_unrecoverable"].append(_where(example))
            else:
                span = (first, last)
                cut = example.context[offs[first][0] : offs[last][1]]
                if cut != example.context[chars[0] : chars[1]]:
                    stats["answers_unrecoverable"] += 1
                    named["answers_unrecoverable"].append(_where(example))
        inside = False
        a = 0
        while True:
            b = min(a + room, n)
            start = end = 0
            if span is not None and a <= span[0] and span[1] < b:
                start, end = len(q) + 2 + span[0] - a, len(q) + 2 + span[1] - a
                inside = True
            windows.append((i, q, a, b, start, end))
            if b >= n:
                break
            a += min(doc_stride, room)
        if span is not None and not inside:
            stats["answers_outside_windows"] += 1
            named["answers_outside_windows"].append(_where(example))

    n_feat = len(windows)
    if not n_feat:  # every example was dropped
        _warn(stats, named, examples)
        return _no_features(stats)
    length = max(len(q) + 3 + b - a for _, q, a, b, _, _ in windows)
    input_ids = np.full((n_feat, length), tokenizer.pad_token_id, dtype=np.int64)
    token_type_ids = np.zeros((n_feat, length), dtype=np.int64)
    attention_mask = np.zeros((n_feat, length), dtype=np.int64)
    offsets: list[list[Offset | None]] = []
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    for row, (i, q, a, b, _, _) in enumerate(windows):
        ids = [cls_id, *q, sep_id, *ctx_ids[i][a:b], sep_id]
        input_ids[row, : len(ids)] = ids
        token_type_ids[row, len(q) + 2 : len(ids)] = 1
        attention_mask[row, : len(ids)] = 1
        offsets.append(
            [None] * (len(q) + 2) + list(ctx_offsets[i][a:b]) + [None] * (length - len(ids) + 1)
        )
    stats["features"] = n_feat
    _warn(stats, named, examples)
    return QAFeatures(
        input_ids=input_ids,
        token_type_ids=token_type_ids,
        attention_mask=attention_mask,
        start_positions=np.array([w[4] for w in windows], dtype=np.int64),
        end_positions=np.array([w[5] for w in windows], dtype=np.int64),
        example_index=np.array([w[0] for w in windows], dtype=np.int64),
        offsets=offsets,
        stats=stats,
    )


def _no_features(stats: dict[str, int]) -> QAFeatures:
    empty = np.zeros((0, 0), dtype=np.int64)
    none = np.zeros(0, dtype=np.int64)
    return QAFeatures(empty, empty.copy(), empty.copy(), none, none.copy(), none.copy(), [], stats)


def _file_of(examples: Sequence[QAExample]) -> str:
    """The file all examples come from (their sources are ``"path:qid"``), else ``""``."""
    files = {
        e.source[: -len(e.qid) - 1] if e.source.endswith(f":{e.qid}") else e.source
        for e in examples
    }
    return files.pop() if len(files) == 1 else ""


def _warn(
    stats: dict[str, int], named: dict[str, list[str]], examples: Sequence[QAExample]
) -> None:
    problems = [
        (
            "answers_relocated",
            "not at their answer_start (-1 or a wrong offset; moved to the nearest occurrence, "
            "or the first for -1)",
        ),
        ("answers_first_not_found", "with a first answer not in the context (a later used)"),
        ("answers_not_found", "with no answer in their context (dropped from training)"),
        ("answers_unrecoverable", "not on token boundaries (trained on the covering tokens)"),
        ("answers_outside_windows", "not inside any window (trained as no-answer)"),
    ]
    where = _file_of(examples)
    prefix = f"{where}:" if where else ""
    parts = []
    for key, what in problems:
        if stats[key]:
            shown = ", ".join(
                label.removeprefix(prefix) if prefix else label for label in named[key][:_MAX_NAMED]
            )
            parts.append(f"{stats[key]} {what}, e.g. {shown}")
    if parts:
        logger.warning(
            "%sQA training features: of %d answered questions, %s",
            f"{where}: " if where else "",
            stats["answers"],
            "; ".join(parts),
        )


def _as_array(logits: Any, name: str, n_features: int) -> np.ndarray:
    if hasattr(logits, "detach"):  # a torch tensor (possibly bf16, on a GPU)
        logits = logits.detach().float().cpu().numpy()
    arr = np.asarray(logits, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != n_features:
        raise InputError(
            f"{name} has shape {tuple(arr.shape)}; expected ({n_features}, sequence length), "
            "one row per feature in the order of the features"
        )
    return arr


def postprocess_qa(
    examples: Sequence[QAExample],
    features: QAFeatures,
    start_logits: Any,
    end_logits: Any,
    *,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, dict[str, Any]]:
    """Pick the best answer span of every example from the model's logits.

    ``start_logits``/``end_logits`` are ``[N, L']`` (numpy, torch or nested lists) with one row
    per feature of ``features`` (built from ``examples``); ``L'`` may differ from the feature
    width (e.g. re-padded batches) but must hold every real token. For every feature of an
    example the ``n_best`` highest start and end indices are paired; a pair is a candidate when
    both are context tokens, ``end >= start`` and it spans at most ``max_answer_length`` tokens.
    Its score is ``start_logit + end_logit``. The candidates of an example are ranked, those
    with the same text merged (keeping the best), the top ``n_best`` kept, and ``score`` is the
    softmax probability of the best one among them (as the n-best file of Google's
    ``run_squad.py``; transformers' QA pipeline normalises differently).

    Returns ``{qid: {"answer", "score", "start", "end"}}`` where ``answer`` is
    ``context[start:end]`` of the original context. An example without any candidate gets
    ``{"answer": "", "score": 0.0, "start": 0, "end": 0}``.
    """
    if n_best < 1:
        raise InputError(f"n_best={n_best} must be positive (e.g. 20)")
    if max_answer_length < 1:
        raise InputError(f"max_answer_length={max_answer_length} must be positive (e.g. 30)")
    examples = list(examples)
    n_feat = len(features)
    starts = _as_array(start_logits, "start_logits", n_feat)
    ends = _as_array(end_logits, "end_logits", n_feat)
    if starts.shape != ends.shape:
        raise InputError(
            f"start_logits {starts.shape} and end_logits {ends.shape} must have the same shape"
        )
    if n_feat and int(features.example_index.max()) >= len(examples):
        raise InputError(
            f"features refer to example {int(features.example_index.max())} but only "
            f"{len(examples)} examples were given; pass the examples the features were built from"
        )
    qids = [e.qid for e in examples]
    if len(set(qids)) != len(qids):
        dup = next(q for i, q in enumerate(qids) if q in qids[:i])
        raise InputError(f"qid {dup!r} occurs more than once; predictions are keyed by qid")

    # candidates[example] = list of (score, char_start, char_end)
    candidates: list[list[tuple[float, int, int]]] = [[] for _ in examples]
    width = starts.shape[1]
    real = features.attention_mask.sum(axis=1) if n_feat else np.zeros(0, dtype=np.int64)
    for f in range(n_feat):
        if int(real[f]) > width:
            raise InputError(
                f"logits have {width} columns but feature {f} has {int(real[f])} tokens; "
                "pass logits for the whole sequence"
            )
        offs = features.offsets[f][:width]
        size = len(offs)
        char_start = np.array([-1 if o is None else o[0] for o in offs], dtype=np.int64)
        char_end = np.array([-1 if o is None else o[1] for o in offs], dtype=np.int64)
        sl, el = starts[f, :size], ends[f, :size]
        top_s = np.argsort(-sl, kind="stable")[:n_best]
        top_e = np.argsort(-el, kind="stable")[:n_best]
        s, e = np.meshgrid(top_s, top_e, indexing="ij")
        s, e = s.ravel(), e.ravel()
        ok = (char_start[s] >= 0) & (char_start[e] >= 0) & (e >= s)
        ok &= e - s + 1 <= max_answer_length
        s, e = s[ok], e[ok]
        score = sl[s] + el[e]
        bucket = candidates[int(features.example_index[f])]
        bucket.extend(
            zip(score.tolist(), char_start[s].tolist(), char_end[e].tolist(), strict=True)
        )

    results: dict[str, dict[str, Any]] = {}
    for i, example in enumerate(examples):
        ranked = sorted(candidates[i], key=lambda c: -c[0])
        seen: set[str] = set()
        kept: list[tuple[float, int, int]] = []
        for cand in ranked:
            text = example.context[cand[1] : cand[2]]
            if text in seen:
                continue
            seen.add(text)
            kept.append(cand)
            if len(kept) == n_best:
                break
        if not kept:
            results[example.qid] = {"answer": "", "score": 0.0, "start": 0, "end": 0}
            continue
        best = kept[0][0]
        total = math.fsum(math.exp(c[0] - best) for c in kept)
        _, begin, end = kept[0]
        results[example.qid] = {
            "answer": example.context[begin:end],
            "score": 1.0 / total,
            "start": begin,
            "end": end,
        }
    return results


def predictions_to_json(results: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The ``{qid: answer}`` prediction file of the official SQuAD / CMRC 2018 / DRCD scripts."""
    return {qid: r["answer"] for qid, r in results.items()}
