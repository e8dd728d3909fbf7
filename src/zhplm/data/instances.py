"""Training instances: their configuration and form, and how a pair of segments is trimmed.

An epoch's instances are described by an index over the memory-mapped shards and cut from
them when a batch needs them (:mod:`zhplm.data.epochs`); this module holds what they are:

- `full_sentences` (RoBERTa): consecutive sentences packed up to `seq_length` across
  document boundaries with no padding waste: a sentence that does not fit is continued in
  the next sequence.
- `nsp` (BERT): segment A, then its true continuation or (p=0.5) a random span of another
  document; label 0 = continuation, 1 = random (HF's convention). A chunk of one sentence
  always takes its B from another document.
- `sop` (ALBERT): two consecutive segments, swapped with p=0.5; label 1 = swapped.
- `sentence_order` (StructBERT's sentence structural objective): segment B is, with
  p=1/3 each, the text right after A (label 0), the text right before A (label 1) or a
  random span of another document (label 2). The chunk of consecutive sentences that NSP would
  split into A and its continuation is split the same way, and for "previous" the two halves
  swap roles (A = the later half, B = the earlier one). Every chunk therefore has both
  neighbours, whether it opens or closes its document, and the labels stay balanced. A
  one-sentence chunk is cut at a random token; a chunk of a single token that drew label
  0/1 gives no instance. A corpus of one document only yields labels 0 and 1. Over-long pairs
  are trimmed at their outer ends so that A and B stay adjacent.

`short_seq_prob` draws a shorter target length now and then, as BERT does, so the model
also sees short inputs. :func:`assemble` writes instances as numpy arrays padded to
`seq_length` (:class:`Instances`); :func:`build_instances` builds every instance of a few
documents at once (held-out sets, tests).

A segment is a tuple of per-token arrays of equal length: `(ids, word_starts)`, or
`(ids, word_starts, linguistic)` from an annotated dataset (LERT; `linguistic` is uint8
`[len, 3]`, pos / ner / dep label ids, 255 = unknown). Every cut and join handles any number
of arrays, and the random draws do not depend on it: the same documents give the same
instances with or without labels, which then come out as `Instances.linguistic` (255 at
[CLS], [SEP] and padding).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from zhplm.errors import ConfigError

INSTANCE_KINDS = ("full_sentences", "nsp", "sop", "sentence_order")
Segment = tuple[np.ndarray, ...]
"""(token ids, word starts) or (token ids, word starts, linguistic labels [len, 3] uint8)."""

UNKNOWN_LABEL = 255
"""The linguistic label id of special tokens, padding and unknown labels."""


@dataclass
class InstanceConfig:
    """How sequences are formed."""

    kind: str = "full_sentences"
    seq_length: int = 128
    short_seq_prob: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in INSTANCE_KINDS:
            raise ConfigError(f"data.kind={self.kind!r}; use one of {', '.join(INSTANCE_KINDS)}")
        if self.seq_length < 8:
            raise ConfigError(f"data.seq_length must be >= 8, got {self.seq_length}")
        if not 0 <= self.short_seq_prob <= 1:
            raise ConfigError(f"data.short_seq_prob must be in [0, 1], got {self.short_seq_prob}")


@dataclass(frozen=True)
class SpecialIds:
    """Ids the instance builder and the masker need."""

    cls: int
    sep: int
    pad: int
    mask: int
    vocab_size: int
    first_normal: int

    @classmethod
    def from_tokenizer(cls, tokenizer) -> SpecialIds:  # noqa: ANN001 - zhplm.Tokenizer
        ids = [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id,
               tokenizer.mask_token_id, tokenizer.unk_token_id]
        return cls(cls=ids[0], sep=ids[1], pad=ids[2], mask=ids[3],
                   vocab_size=tokenizer.vocab_size, first_normal=max(ids) + 1)


@dataclass
class Instances:
    """A set of sequences: `[CLS] A [SEP] (B [SEP])`, padded to a common width."""

    input_ids: np.ndarray        # [n, seq_length] int32
    token_type_ids: np.ndarray   # [n, seq_length] uint8
    word_starts: np.ndarray      # [n, seq_length] uint8 (1 = token starts a word)
    lengths: np.ndarray          # [n] int32, real tokens per sequence
    sentence_labels: np.ndarray | None = None  # [n] int64 for nsp / sop / sentence_order
    # [n, seq_length, 3] uint8 pos / ner / dep label ids (LERT), 255 = unknown / special / pad;
    # present when the segments carry linguistic labels (an annotated dataset)
    linguistic: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.lengths)


class _Writer:
    """Collects sequences into preallocated arrays."""

    def __init__(self, seq_length: int, special: SpecialIds) -> None:
        self.seq_length = seq_length
        self.special = special
        # per row: ids, word starts, token types, linguistic labels (None without)
        self.rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = []
        self.labels: list[int] = []

    def _special(self, token: int, segment: Segment) -> Segment:
        """A one-token segment for [CLS] / [SEP], shaped like ``segment`` (labels 255)."""
        special: Segment = (np.array([token]), np.ones(1, np.uint8))
        if len(segment) > 2:
            special += (np.full((1,) + segment[2].shape[1:], UNKNOWN_LABEL, np.uint8),)
        return special

    def add(self, a: Sequence[Segment], b: Sequence[Segment] = (),
            label: int | None = None) -> None:
        """One sequence ``[CLS] a... [SEP] (b... [SEP])`` (and its sentence label)."""
        s = self.special
        parts = [self._special(s.cls, a[0]), *a, self._special(s.sep, a[0])]
        types = [np.zeros(sum(len(p[0]) for p in parts), np.uint8)]
        if b:
            b_parts = [*b, self._special(s.sep, b[0])]
            parts += b_parts
            types.append(np.ones(sum(len(p[0]) for p in b_parts), np.uint8))
        row = _concat(parts)
        self.rows.append((row[0], row[1], np.concatenate(types),
                          row[2] if len(row) > 2 else None))
        if label is not None:
            self.labels.append(label)

    def finish(self) -> Instances:
        """The collected sequences, padded to ``seq_length``."""
        n, width = len(self.rows), self.seq_length
        ids = np.full((n, width), self.special.pad, dtype=np.int32)
        word_starts = np.zeros((n, width), dtype=np.uint8)
        types = np.zeros((n, width), dtype=np.uint8)
        lengths = np.zeros(n, dtype=np.int32)
        labelled = [row[3] for row in self.rows if row[3] is not None]
        linguistic = None
        if labelled:
            if len(labelled) != n:
                raise ValueError("some segments carry linguistic labels and others do not")
            linguistic = np.full((n, width, *labelled[0].shape[1:]), UNKNOWN_LABEL, np.uint8)
        for i, (row_ids, row_ws, row_types, row_ling) in enumerate(self.rows):
            length = len(row_ids)
            ids[i, :length], word_starts[i, :length], types[i, :length] = row_ids, row_ws, \
                row_types
            if linguistic is not None:
                linguistic[i, :length] = row_ling
            lengths[i] = length
        labels = np.asarray(self.labels, dtype=np.int64) if self.labels else None
        return Instances(ids, types, word_starts, lengths, labels, linguistic)


def _cut(segment: Segment, start: int, stop: int | None = None) -> Segment:
    """Tokens ``start:stop`` of every array of ``segment``."""
    return tuple(array[start:stop] for array in segment)


def _concat(segments: Sequence[Segment]) -> Segment:
    """The segments joined, array by array."""
    return tuple(np.concatenate(arrays) for arrays in zip(*segments, strict=True))


def _trims(first: int, second: int, max_tokens: int) -> tuple[int, int]:
    """How many tokens BERT's truncate_seq_pair removes from each side: one at a time from
    the longer (ties: the second) until the pair fits."""
    excess = first + second - max_tokens
    if excess <= 0:
        return 0, 0
    gap = abs(first - second)
    if excess <= gap:
        return (excess, 0) if first > second else (0, excess)
    rest = excess - gap
    first_cut = rest // 2 + (gap if first > second else 0)
    return first_cut, excess - first_cut


def truncate_pair(a: Segment, b: Segment, max_tokens: int,
                  rng: np.random.Generator) -> tuple[Segment, Segment]:
    """BERT's truncate_seq_pair: trim the longer side, each token from the front or the back
    at random (the front share of each side's trims is binomial, as the token-by-token
    loop's)."""
    a_cut, b_cut = _trims(len(a[0]), len(b[0]), max_tokens)
    a_front = int(rng.binomial(a_cut, 0.5)) if a_cut else 0
    b_front = int(rng.binomial(b_cut, 0.5)) if b_cut else 0
    return (_cut(a, a_front, len(a[0]) - (a_cut - a_front)),
            _cut(b, b_front, len(b[0]) - (b_cut - b_front)))


def truncate_adjacent(first: Segment, second: Segment,
                      max_tokens: int) -> tuple[Segment, Segment]:
    """Trim the longer of two adjacent spans (`first` right before `second`) at its outer end
    (the front of `first`, the back of `second`), so the spans stay adjacent."""
    f_cut, s_cut = _trims(len(first[0]), len(second[0]), max_tokens)
    return _cut(first, f_cut), _cut(second, 0, len(second[0]) - s_cut)


def assemble(rows: Sequence[tuple[Sequence[Segment], Sequence[Segment], int | None]],
             seq_length: int, special: SpecialIds) -> Instances:
    """Instances ``[CLS] a... [SEP] (b... [SEP])`` from (a segments, b segments, label) rows
    (label None: no sentence label), padded to ``seq_length``."""
    writer = _Writer(seq_length, special)
    for a, b, label in rows:
        writer.add(a, b, label)
    return writer.finish()


def build_instances(
    documents: Callable[[int], list[Segment]],
    doc_ids: Sequence[int],
    config: InstanceConfig,
    special: SpecialIds,
    seed: int,
) -> Instances:
    """Every instance of epoch 0 of the documents `doc_ids` (read with `documents`), seeded,
    in index order; for small sets (held-out instances, tests)."""
    from zhplm.data.epochs import Corpus, build_epoch

    corpus = Corpus.from_documents([documents(int(d)) for d in doc_ids])
    epoch = build_epoch(corpus, config, special, seed, 0)
    return epoch.instances(np.arange(len(epoch)))
