"""StructBERT's sentence structural objective (`data.kind: sentence_order`), on the built-in
corpus: segment B is the next text (label 0), the previous text (1) or another document (2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from zhplm.data.instances import INSTANCE_KINDS, InstanceConfig, SpecialIds, build_instances
from zhplm.data.shards import TokenDataset
from zhplm.errors import ConfigError
from zhplm.tokenization import Tokenizer

NEXT, PREVIOUS, RANDOM = 0, 1, 2
SEQ_LENGTH = 64


class Corpus:
    """Every document's tokens (sentences joined) in one int64 array, documents separated by
    -1, so a token sequence can be looked up by its bytes without crossing documents."""

    def __init__(self, dataset: TokenDataset) -> None:
        ids, starts, offsets = [], [], []
        position = 0
        for index in range(dataset.num_documents):
            doc_ids = [np.asarray(x, np.int64) for x, _ in dataset.document(index)]
            doc_starts = [np.asarray(w, np.int64) for _, w in dataset.document(index)]
            offsets.append(position)
            ids += doc_ids + [np.array([-1])]
            starts += doc_starts + [np.array([-1])]
            position += sum(len(x) for x in doc_ids) + 1
        self.ids = np.concatenate(ids)
        self.word_starts = np.concatenate(starts)
        self.offsets = np.array(offsets)
        self._bytes = self.ids.tobytes()

    def find(self, tokens: np.ndarray) -> list[int]:
        """Every token position where `tokens` occurs (within one document)."""
        pattern = np.asarray(tokens, np.int64).tobytes()
        found, at = [], self._bytes.find(pattern)
        while at >= 0:
            if at % 8 == 0:
                found.append(at // 8)
            at = self._bytes.find(pattern, at + 1)
        return found

    def document_of(self, position: int) -> int:
        return int(np.searchsorted(self.offsets, position, side="right") - 1)


@pytest.fixture(scope="module")
def dataset(small_dataset: Path) -> TokenDataset:
    return TokenDataset(small_dataset)


@pytest.fixture(scope="module")
def special(zh_vocab_dir: Path) -> SpecialIds:
    return SpecialIds.from_tokenizer(Tokenizer.from_pretrained(zh_vocab_dir))


@pytest.fixture(scope="module")
def corpus(dataset: TokenDataset) -> Corpus:
    return Corpus(dataset)


def build(dataset: TokenDataset, special: SpecialIds, seed: int, **options):
    config = InstanceConfig("sentence_order", seq_length=SEQ_LENGTH, **options)
    return build_instances(dataset.document, range(dataset.num_documents), config, special, seed)


@pytest.fixture(scope="module")
def instances(dataset: TokenDataset, special: SpecialIds):
    return build(dataset, special, seed=11)


def segments(inst, i: int, special: SpecialIds):
    """(A ids, B ids, A word starts, B word starts) of instance `i`, checking the layout
    `[CLS] A [SEP] B [SEP]` with token types 0 / 1 and padding after it."""
    length = int(inst.lengths[i])
    row, types = inst.input_ids[i], inst.token_type_ids[i]
    assert row[0] == special.cls and row[length - 1] == special.sep
    seps = np.flatnonzero(row[:length] == special.sep)
    a_end = int(seps[0])  # [CLS] / [SEP] never occur inside a segment
    assert list(seps) == [a_end, length - 1]
    assert 0 < a_end - 1 and a_end + 1 < length - 1  # both segments are non-empty
    assert not types[: a_end + 1].any() and (types[a_end + 1 : length] == 1).all()
    assert (row[length:] == special.pad).all() and not types[length:].any()
    ws = inst.word_starts[i]
    return row[1:a_end], row[a_end + 1 : length - 1], ws[1:a_end], ws[a_end + 1 : length - 1]


def test_kind_is_accepted_and_listed():
    assert "sentence_order" in INSTANCE_KINDS
    assert InstanceConfig(kind="sentence_order").kind == "sentence_order"
    with pytest.raises(ConfigError, match="sentence_order"):
        InstanceConfig(kind="sentence_structure")


def test_labels_are_balanced(instances):
    assert len(instances) > 3000
    assert instances.sentence_labels.dtype == np.int64
    assert set(np.unique(instances.sentence_labels)) == {NEXT, PREVIOUS, RANDOM}
    shares = np.bincount(instances.sentence_labels, minlength=3) / len(instances)
    assert np.all(np.abs(shares - 1 / 3) <= 0.02), shares


def test_layout(instances, special):
    assert (instances.lengths <= SEQ_LENGTH).all()
    for i in range(len(instances)):
        segments(instances, i, special)


def _adjacent(
    corpus: Corpus,
    first: np.ndarray,
    second: np.ndarray,
    first_ws: np.ndarray,
    second_ws: np.ndarray,
) -> bool:
    """Whether `first` is immediately followed by `second` in one document (word starts too)."""
    joined_ws = np.concatenate([first_ws, second_ws]).astype(np.int64)
    for at in corpus.find(np.concatenate([first, second])):
        if np.array_equal(corpus.word_starts[at : at + len(joined_ws)], joined_ws):
            return True
    return False


def test_previous_and_next_are_the_neighbouring_tokens(instances, special, corpus):
    checked = {NEXT: 0, PREVIOUS: 0}
    for i, label in enumerate(instances.sentence_labels):
        if label == RANDOM:
            continue
        a, b, a_ws, b_ws = segments(instances, i, special)
        if label == PREVIOUS:  # B is exactly the text right before A's first token
            assert _adjacent(corpus, b, a, b_ws, a_ws), i
        else:  # B is exactly the text right after A's last token
            assert _adjacent(corpus, a, b, a_ws, b_ws), i
        checked[label] += 1
    assert min(checked.values()) > 1000


def test_random_comes_from_another_document(instances, special, corpus):
    checked = 0
    for i, label in enumerate(instances.sentence_labels):
        if label != RANDOM:
            continue
        a, b, _, _ = segments(instances, i, special)
        a_docs = {corpus.document_of(at) for at in corpus.find(a)}
        b_docs = {corpus.document_of(at) for at in corpus.find(b)}
        assert a_docs and b_docs  # both are real spans of the corpus
        # Some document holding B is not A's: B cannot be A's own document (identical
        # documents, e.g. repeated reviews, hold both).
        assert not (len(a_docs) == 1 and a_docs == b_docs), i
        checked += 1
    assert checked > 1000


def test_deterministic_per_seed(dataset, special, instances):
    again = build(dataset, special, seed=11)
    other = build(dataset, special, seed=12)
    for field in ("input_ids", "token_type_ids", "word_starts", "lengths", "sentence_labels"):
        assert np.array_equal(getattr(instances, field), getattr(again, field)), field
    assert not np.array_equal(instances.sentence_labels[:50], other.sentence_labels[:50])


def test_single_document_uses_only_neighbours(dataset, special):
    config = InstanceConfig("sentence_order", seq_length=32, short_seq_prob=0.0)
    longest = max(
        range(dataset.num_documents), key=lambda d: sum(len(x) for x, _ in dataset.document(d))
    )
    inst = build_instances(dataset.document, [longest], config, special, seed=0)
    assert len(inst) and set(inst.sentence_labels.tolist()) <= {NEXT, PREVIOUS}
