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
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from zhplm.errors import ConfigError

INSTANCE_KINDS = ("full_sentences", "nsp", "sop", "sentence_order")
Segment = tuple[np.ndarray, np.ndarray]  # (token ids, word starts)


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

    def __len__(self) -> int:
        return len(self.lengths)


class _Writer:
    """Collects sequences into preallocated arrays."""

    def __init__(self, seq_length: int, special: SpecialIds) -> None:
        self.seq_length = seq_length
        self.special = special
        self.rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.labels: list[int] = []

    def add(self, a: Sequence[Segment], b: Sequence[Segment] = (), label: int | None = None):
        s = self.special
        parts_ids = [np.array([s.cls])] + [x for x, _ in a] + [np.array([s.sep])]
        parts_ws = [np.ones(1, np.uint8)] + [w for _, w in a] + [np.ones(1, np.uint8)]
        types = [np.zeros(sum(len(x) for x in parts_ids), np.uint8)]
        if b:
            b_ids = [x for x, _ in b] + [np.array([s.sep])]
            parts_ids += b_ids
            parts_ws += [w for _, w in b] + [np.ones(1, np.uint8)]
            types.append(np.ones(sum(len(x) for x in b_ids), np.uint8))
        self.rows.append((np.concatenate(parts_ids), np.concatenate(parts_ws),
                          np.concatenate(types)))
        if label is not None:
            self.labels.append(label)

    def finish(self) -> Instances:
        n, width = len(self.rows), self.seq_length
        ids = np.full((n, width), self.special.pad, dtype=np.int32)
        word_starts = np.zeros((n, width), dtype=np.uint8)
        types = np.zeros((n, width), dtype=np.uint8)
        lengths = np.zeros(n, dtype=np.int32)
        for i, (row_ids, row_ws, row_types) in enumerate(self.rows):
            length = len(row_ids)
            ids[i, :length], word_starts[i, :length], types[i, :length] = row_ids, row_ws, \
                row_types
            lengths[i] = length
        labels = np.asarray(self.labels, dtype=np.int64) if self.labels else None
        return Instances(ids, types, word_starts, lengths, labels)


def _concat(segments: Sequence[Segment]) -> Segment:
    return (np.concatenate([x for x, _ in segments]),
            np.concatenate([w for _, w in segments]))


def _truncate_pair(a: Segment, b: Segment, max_tokens: int, rng: random.Random) -> tuple:
    """BERT's truncate_seq_pair: trim the longer side, from the front or back at random."""
    a_ids, a_ws = a
    b_ids, b_ws = b
    while len(a_ids) + len(b_ids) > max_tokens:
        if len(a_ids) > len(b_ids):
            a_ids, a_ws = (a_ids[1:], a_ws[1:]) if rng.random() < 0.5 else (a_ids[:-1], a_ws[:-1])
        else:
            b_ids, b_ws = (b_ids[1:], b_ws[1:]) if rng.random() < 0.5 else (b_ids[:-1], b_ws[:-1])
    return (a_ids, a_ws), (b_ids, b_ws)


def _truncate_adjacent(first: Segment, second: Segment, max_tokens: int) -> tuple:
    """Trim the longer of two adjacent spans (`first` right before `second`) at its outer end
    (the front of `first`, the back of `second`), so the spans stay adjacent."""
    (f_ids, f_ws), (s_ids, s_ws) = first, second
    f_len, s_len = len(f_ids), len(s_ids)
    while f_len + s_len > max_tokens:  # as _truncate_pair: the longer side (ties: `second`)
        if f_len > s_len:
            f_len -= 1
        else:
            s_len -= 1
    start = len(f_ids) - f_len
    return (f_ids[start:], f_ws[start:]), (s_ids[:s_len], s_ws[:s_len])


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
        ids, ws = chunk[0]
        if len(ids) < 2:
            return None
        cut = rng.randint(1, len(ids) - 1)
        first, second = (ids[:cut], ws[:cut]), (ids[cut:], ws[cut:])
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
        for ids, ws in documents(doc):
            while len(ids):
                take = min(len(ids), goal - length)
                chunk.append((ids[:take], ws[:take]))
                length += take
                ids, ws = ids[take:], ws[take:]
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
                    ids, ws = a
                    if len(ids) < 2:
                        chunk, length, i = [], 0, i + 1
                        continue
                    cut = rng.randint(1, len(ids) - 1)
                    a, b, label = (ids[:cut], ws[:cut]), (ids[cut:], ws[cut:]), 0
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
