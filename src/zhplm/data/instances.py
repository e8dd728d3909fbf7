"""Training instances, built at training time from a token dataset, seeded per epoch.

- `full_sentences` (RoBERTa): consecutive sentences packed up to `seq_length` across
  document boundaries with no padding waste: a sentence that does not fit is continued in
  the next sequence.
- `nsp` (BERT): segment A, then its true continuation or (p=0.5) a random span of another
  document; label 0 = continuation, 1 = random (HF's convention).
- `sop` (ALBERT): two consecutive segments, swapped with p=0.5; label 1 = swapped.
- `sentence_order` (StructBERT's sentence structural objective): segment B is, with
  p=1/3 each, the text right after A (label 0), the text right before A (label 1) or a
  random span of another document (label 2). The label is drawn first and A is then placed
  so that the needed neighbour exists: the chunk of consecutive sentences that NSP would
  split into A and its continuation is split the same way, and for "previous" the two
  halves swap roles (A = the later half, B = the earlier one). Every chunk therefore has
  both neighbours, whether it opens or closes its document, and the labels stay balanced.
  A one-sentence chunk is cut at a random token; the rare chunk of a single token that
  drew label 0/1 gives no instance. A corpus of one document only yields labels 0 and 1.
  Over-long pairs are trimmed at their outer ends so that A and B stay adjacent.

`short_seq_prob` draws a shorter target length now and then, as BERT does, so the model
also sees short inputs. Instances are numpy arrays, padded to `seq_length`.

A segment is a tuple of per-token arrays of equal length: `(ids, word_starts)`, or
`(ids, word_starts, linguistic)` from an annotated dataset (LERT; `linguistic` is uint8
`[len, 3]`, pos / ner / dep label ids, 255 = unknown). Every cut and join handles any number
of arrays, and the random draws do not depend on it: the same documents give the same
instances with or without labels, which then come out as `Instances.linguistic` (255 at
[CLS], [SEP] and padding).
"""

from __future__ import annotations

import random
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


def _truncate_pair(a: Segment, b: Segment, max_tokens: int,
                   rng: random.Random) -> tuple[Segment, Segment]:
    """BERT's truncate_seq_pair: trim the longer side, from the front or back at random."""
    a_start, a_stop, b_start, b_stop = 0, len(a[0]), 0, len(b[0])
    while (a_stop - a_start) + (b_stop - b_start) > max_tokens:
        if a_stop - a_start > b_stop - b_start:
            if rng.random() < 0.5:
                a_start += 1
            else:
                a_stop -= 1
        elif rng.random() < 0.5:
            b_start += 1
        else:
            b_stop -= 1
    return _cut(a, a_start, a_stop), _cut(b, b_start, b_stop)


def _truncate_adjacent(first: Segment, second: Segment,
                       max_tokens: int) -> tuple[Segment, Segment]:
    """Trim the longer of two adjacent spans (`first` right before `second`) at its outer end
    (the front of `first`, the back of `second`), so the spans stay adjacent."""
    f_len, s_len = len(first[0]), len(second[0])
    while f_len + s_len > max_tokens:  # as _truncate_pair: the longer side (ties: `second`)
        if f_len > s_len:
            f_len -= 1
        else:
            s_len -= 1
    return _cut(first, len(first[0]) - f_len), _cut(second, 0, s_len)


def _sentence_order_pair(chunk: list[Segment], documents: Callable[[int], list[Segment]],
                         doc_ids: Sequence[int], d: int, max_tokens: int,
                         rng: random.Random) -> tuple[Segment, Segment, int, int] | None:
    """(A, B, label, unused) for one chunk of `sentence_order`: label 0 = B follows A,
    1 = B precedes A, 2 = B is from another document; `unused` trailing sentences of the
    chunk go back to the document. None when the chunk cannot be split (one token)."""
    label = rng.randrange(3) if len(doc_ids) > 1 else rng.randrange(2)
    a_end = 1 if len(chunk) < 2 else rng.randint(1, len(chunk) - 1)
    if label == 2:  # as NSP's random case
        a = _concat(chunk[:a_end])
        other = doc_ids[(d + rng.randint(1, len(doc_ids) - 1)) % len(doc_ids)]
        other_sentences = [s for s in documents(other) if len(s[0])] or [a]
        start = rng.randint(0, len(other_sentences) - 1)
        b = _concat(other_sentences[start:])
        a, b = _truncate_pair(a, b, max_tokens, rng)
        return a, b, label, len(chunk) - a_end
    if len(chunk) >= 2:
        first, second = _concat(chunk[:a_end]), _concat(chunk[a_end:])
    else:  # one sentence: cut it in two
        sentence = chunk[0]
        if len(sentence[0]) < 2:
            return None
        cut = rng.randint(1, len(sentence[0]) - 1)
        first, second = _cut(sentence, 0, cut), _cut(sentence, cut)
    first, second = _truncate_adjacent(first, second, max_tokens)
    return (first, second, 0, 0) if label == 0 else (second, first, 1, 0)


def _full_sentences(documents: Callable[[int], list[Segment]], doc_ids: Sequence[int],
                    config: InstanceConfig, writer: _Writer, rng: random.Random) -> None:
    max_tokens = config.seq_length - 2

    def target() -> int:
        return rng.randint(2, max_tokens) if rng.random() < config.short_seq_prob else max_tokens

    chunk: list[Segment] = []
    length, goal = 0, target()
    for doc in doc_ids:
        for sentence in documents(doc):
            while len(sentence[0]):
                take = min(len(sentence[0]), goal - length)
                chunk.append(_cut(sentence, 0, take))
                length += take
                sentence = _cut(sentence, take)
                if length == goal:  # full: a sentence that does not fit continues in the next
                    writer.add(chunk)
                    chunk, length, goal = [], 0, target()
    if chunk:
        writer.add(chunk)


def _sentence_pairs(documents: Callable[[int], list[Segment]], doc_ids: Sequence[int],
                    config: InstanceConfig, writer: _Writer, rng: random.Random) -> None:
    max_tokens = config.seq_length - 3
    nsp = config.kind == "nsp"
    order = config.kind == "sentence_order"
    for d, doc in enumerate(doc_ids):
        sentences = [s for s in documents(doc) if len(s[0])]
        goal = rng.randint(2, max_tokens) if rng.random() < config.short_seq_prob else max_tokens
        chunk: list[Segment] = []
        length, i = 0, 0
        while i < len(sentences):
            chunk.append(sentences[i])
            length += len(sentences[i][0])
            if order and (i == len(sentences) - 1 or length >= goal):
                pair = _sentence_order_pair(chunk, documents, doc_ids, d, max_tokens, rng)
                if pair is not None:
                    a, b, label, unused = pair
                    i -= unused  # put the unused segments back
                    writer.add([a], [b], label)
                chunk, length = [], 0
                goal = rng.randint(2, max_tokens) if rng.random() < config.short_seq_prob \
                    else max_tokens
            elif i == len(sentences) - 1 or length >= goal:
                a_end = 1 if len(chunk) < 2 else rng.randint(1, len(chunk) - 1)
                a = _concat(chunk[:a_end])
                if nsp and (len(chunk) == 1 or rng.random() < 0.5) and len(doc_ids) > 1:
                    label = 1
                    other = doc_ids[(d + rng.randint(1, len(doc_ids) - 1)) % len(doc_ids)]
                    other_sentences = [s for s in documents(other) if len(s[0])] or [a]
                    start = rng.randint(0, len(other_sentences) - 1)
                    b = _concat(other_sentences[start:])
                    i -= len(chunk) - a_end  # put the unused segments back
                elif len(chunk) >= 2:
                    b, label = _concat(chunk[a_end:]), 0
                else:  # one long segment: split it in two
                    if len(a[0]) < 2:
                        chunk, length, i = [], 0, i + 1
                        continue
                    cut = rng.randint(1, len(a[0]) - 1)
                    a, b, label = _cut(a, 0, cut), _cut(a, cut), 0
                if not nsp and rng.random() < 0.5:
                    a, b, label = b, a, 1
                a, b = _truncate_pair(a, b, max_tokens, rng)
                if len(a[0]) and len(b[0]):
                    writer.add([a], [b], label)
                chunk, length = [], 0
                goal = rng.randint(2, max_tokens) if rng.random() < config.short_seq_prob \
                    else max_tokens
            i += 1


def build_instances(
    documents: Callable[[int], list[Segment]],
    doc_ids: Sequence[int],
    config: InstanceConfig,
    special: SpecialIds,
    seed: int,
) -> Instances:
    """Instances from the documents `doc_ids` (visited in a seeded random order)."""
    rng = random.Random(seed)
    order = list(doc_ids)
    rng.shuffle(order)
    writer = _Writer(config.seq_length, special)
    if config.kind == "full_sentences":
        _full_sentences(documents, order, config, writer, rng)
    else:
        _sentence_pairs(documents, order, config, writer, rng)
    return writer.finish()
