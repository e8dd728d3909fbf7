"""Epochs as index arrays over the memory-mapped shards (issue 21): every token once, every
instance kind, deterministic, the same batches for any number of collation workers and ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zhplm.data.collate import PretrainBatch, PretrainCollator
from zhplm.data.epochs import Corpus, DocumentSet, PackedEpoch, build_epoch
from zhplm.data.instances import INSTANCE_KINDS, InstanceConfig, SpecialIds
from zhplm.data.masking import MaskingConfig
from zhplm.data.permutation import Permutation
from zhplm.data.shards import TokenDataset
from zhplm.data.stream import InstanceStream
from zhplm.tokenization import Tokenizer


@pytest.fixture(scope="module")
def parts(small_dataset, zh_vocab_dir) -> tuple[TokenDataset, SpecialIds]:
    special = SpecialIds.from_tokenizer(Tokenizer.from_pretrained(zh_vocab_dir))
    return TokenDataset(small_dataset), special


def member_counts(dataset: TokenDataset, docs: DocumentSet, vocab_size: int) -> np.ndarray:
    counts = np.zeros(vocab_size, np.int64)
    for doc in docs.ids(np.arange(len(docs))):
        for sentence in dataset.document(int(doc)):
            counts += np.bincount(sentence[0], minlength=vocab_size)
    return counts


def test_permutation_is_a_seeded_bijection():
    for n in (0, 1, 2, 3, 7, 64, 1000, 4099):
        values = Permutation(n, (5, n))[np.arange(n)]
        assert sorted(values.tolist()) == list(range(n))
    a, b = Permutation(1000, (1, 0))[np.arange(1000)], Permutation(1000, (1, 1))[np.arange(1000)]
    assert not np.array_equal(a, b) and not np.array_equal(a, np.arange(1000))
    assert np.array_equal(a, Permutation(1000, (1, 0))[np.arange(1000)])
    with pytest.raises(IndexError):
        Permutation(10, 0)[np.array([10])]


def test_document_split_matches_every_kth_rule():
    train, dev = DocumentSet.split(1003, 0.01)
    assert dev.ids(np.arange(len(dev))).tolist() == list(range(99, 1003, 100))
    kept = [i for i in range(1003) if i % 100 != 99]
    assert train.ids(np.arange(len(train))).tolist() == kept
    assert train.rank(np.array(kept)).tolist() == list(range(len(kept)))
    assert train.between(95, 205).tolist() == [i for i in kept if 95 <= i < 205]


@pytest.mark.parametrize("epoch", [0, 1])
def test_packed_epoch_holds_every_token_once(parts, epoch):
    dataset, special = parts
    train, _ = DocumentSet.split(dataset.num_documents, 0.05)
    config = InstanceConfig("full_sentences", 64, 0.1)
    index = build_epoch(Corpus(dataset.shards, train), config, special, seed=3, epoch=epoch)
    assert isinstance(index, PackedEpoch)
    instances = index.instances(index.ids(np.arange(len(index))))
    ids = instances.input_ids
    real = ids[ids >= special.first_normal]
    expected = member_counts(dataset, train, special.vocab_size)
    expected[: special.first_normal] = 0
    assert np.array_equal(np.bincount(real, minlength=special.vocab_size), expected)
    assert (instances.lengths <= 64).all()
    short = (instances.lengths < 64).mean()
    assert 0.03 < short < 0.25  # short_seq_prob 0.1 (and the last instance)
    assert index.nbytes < 3 * len(index) + 1024  # ~1.8 bytes per instance, not per token
    other = build_epoch(Corpus(dataset.shards, train), config, special, 3, epoch + 1)
    assert not np.array_equal(other.instances(other.ids(np.arange(8))).input_ids, ids[:8])


@pytest.mark.parametrize("kind", [k for k in INSTANCE_KINDS if k != "full_sentences"])
def test_pair_epoch_chunks_cover_every_sentence_once(parts, kind):
    dataset, special = parts
    train, _ = DocumentSet.split(dataset.num_documents, 0.05)
    corpus = Corpus(dataset.shards, train)
    index = build_epoch(corpus, InstanceConfig(kind, 128, 0.1), special, seed=4, epoch=0)
    covered = np.zeros(int(corpus.sentence_offsets[-1]), np.int64)
    for first, used in zip(index.first, index.used, strict=True):
        covered[first:first + used] += 1
    assert covered.max() == 1
    member = np.zeros_like(covered, dtype=bool)
    shard = dataset.shards[0]
    for doc in train.ids(np.arange(len(train))):
        member[shard.documents[doc]:shard.documents[doc + 1]] = True
    lengths = np.diff(shard.sentences)
    assert not covered[~member].any()
    missed = member & (covered == 0)
    assert (lengths[missed] == 1).all()  # only one-token chunks give no instance
    instances = index.instances(index.ids(np.arange(len(index))))
    labels = np.bincount(instances.sentence_labels) / len(instances)
    if kind == "sop":
        assert abs(labels[0] - 0.5) < 0.05
    if kind == "sentence_order":
        assert np.abs(labels - 1 / 3).max() < 0.05
    assert (instances.lengths <= 128).all()
    assert index.nbytes <= 14 * len(index)  # 13 bytes per instance


def test_annotated_epoch_keeps_labels_with_their_tokens(annotated_dataset, zh_vocab_dir):
    special = SpecialIds.from_tokenizer(Tokenizer.from_pretrained(zh_vocab_dir))
    dataset = TokenDataset(annotated_dataset)
    corpus = Corpus(dataset.shards, DocumentSet(dataset.num_documents))
    index = build_epoch(corpus, InstanceConfig("full_sentences", 64, 0.0), special, 1, 0)
    starts, lengths = index.spans(np.arange(len(index)))
    instances = index.instances(np.arange(len(index)))
    shard = dataset.shards[0]
    for row in range(0, len(index), 17):  # contiguous stream: tokens and labels from one read
        start, n = int(starts[row]) % len(shard.tokens), int(lengths[row])
        if start + n > len(shard.tokens):
            continue
        assert np.array_equal(instances.input_ids[row, 1:n + 1], shard.tokens[start:start + n])
        assert np.array_equal(instances.linguistic[row, 1:n + 1],
                              shard.linguistic[start:start + n])
        assert (instances.linguistic[row, [0, n + 1]] == 255).all()


def test_index_building_is_deterministic(parts):
    dataset, special = parts
    corpus = Corpus(dataset.shards, DocumentSet(dataset.num_documents))
    for kind in INSTANCE_KINDS:
        config = InstanceConfig(kind, 64, 0.1)
        a, b = (build_epoch(corpus, config, special, 9, 2) for _ in range(2))
        positions = np.arange(0, len(a), 7)
        assert np.array_equal(a.ids(positions), b.ids(positions))
        x, y = a.instances(a.ids(positions)), b.instances(b.ids(positions))
        assert np.array_equal(x.input_ids, y.input_ids)


def small_stream(parts, workers: int, rank: int = 0, world: int = 1, micro: int = 8,
                 kind: str = "sentence_order") -> InstanceStream:
    dataset, special = parts
    corpus = Corpus(dataset.shards, DocumentSet.of(range(40)))  # epochs of a few steps
    config = InstanceConfig(kind, 64, 0.1)
    collate = PretrainCollator(MaskingConfig(strategy="wwm"), special, seed=5,
                               word_order_ratio=0.05)
    return InstanceStream(lambda e: build_epoch(corpus, config, special, 5, e), collate,
                          micro, rank, world, workers=workers, prefetch=2)


def rows(batch: PretrainBatch) -> list[tuple]:
    """Each row's real tokens, its masked positions / labels / uniforms (relative to the row)
    and its sentence label: what a batch says about each instance, whatever its padding."""
    width = batch.input_ids.shape[1]
    out = []
    for r in range(batch.input_ids.shape[0]):
        n = int(batch.attention_mask[r].sum())
        picked = (batch.mlm_positions // width) == r
        out.append((batch.input_ids[r, :n].tolist(), batch.token_type_ids[r, :n].tolist(),
                    (batch.mlm_positions[picked] % width).tolist(),
                    batch.mlm_labels[picked].tolist(), batch.mlm_uniforms[picked].tolist(),
                    None if batch.sentence_labels is None else int(batch.sentence_labels[r])))
    return out


def test_batches_are_identical_for_0_1_2_workers_across_epochs(parts):
    first = small_stream(parts, 0)
    steps = 2 * len(first.epoch_index(0)) // 16 + 2
    reference = [first.next_step(2) for _ in range(steps)]
    assert first.epoch >= 2  # the run crossed epoch boundaries
    for workers in (1, 2):
        stream = small_stream(parts, workers)
        try:
            for step in range(steps):
                batches = stream.next_step(2)
                for got, want in zip(batches, reference[step], strict=True):
                    assert torch.equal(got.input_ids, want.input_ids)
                    assert torch.equal(got.mlm_positions, want.mlm_positions)
                    assert torch.equal(got.mlm_uniforms, want.mlm_uniforms)
                    assert torch.equal(got.order_positions, want.order_positions)
                    assert torch.equal(got.sentence_labels, want.sentence_labels)
        finally:
            stream.close()


def test_resumed_stream_continues_exactly(parts):
    whole = small_stream(parts, 0)
    expected = [rows(whole.next_step(1)[0]) for _ in range(12)]
    stream = small_stream(parts, 2)
    for _ in range(5):
        stream.next_step(1)
    state = stream.state_dict()
    stream.close()
    again = small_stream(parts, 1)
    again.load_state_dict(state)
    try:
        assert [rows(again.next_step(1)[0]) for _ in range(7)] == expected[5:]
    finally:
        again.close()


@pytest.mark.parametrize("kind", ["full_sentences", "nsp"])
def test_two_ranks_equal_one_rank_and_read_only_their_slice(parts, kind):
    one = small_stream(parts, 0, micro=16, kind=kind)
    ranks = [small_stream(parts, 0, rank=r, world=2, micro=8, kind=kind) for r in range(2)]
    read: list[list[int]] = [[], []]
    for r, stream in enumerate(ranks):  # record which instances each rank cuts
        original = stream.epoch_index(0).reader.read

        def spy(refs, r=r, original=original):  # noqa: ANN001, ANN202
            read[r].extend(refs.ids.tolist())
            return original(refs)
        stream.epoch_index(0).reader.read = spy
    for _ in range(3):
        together = rows(one.next_step(1)[0])
        apart = rows(ranks[0].next_step(1)[0]) + rows(ranks[1].next_step(1)[0])
        assert together == apart
    assert len(read[0]) == len(read[1]) == 3 * 8 and not set(read[0]) & set(read[1])
    whole, half = one.epoch_index(0).nbytes, ranks[0].epoch_index(0).nbytes
    if kind == "nsp":  # 13 bytes per instance, and each rank keeps its half of them
        assert half <= whole / 2 + 64
        with pytest.raises(IndexError):
            ranks[0].epoch_index(0).refs_at(np.arange(8, 16))  # rank 1's positions
