"""Instance building: RoBERTa full-sentence packing, BERT NSP pairs, ALBERT SOP pairs."""

import numpy as np
import pytest

from zhplm.data.instances import InstanceConfig, SpecialIds, build_instances
from zhplm.errors import ConfigError

SPECIAL = SpecialIds(cls=101, sep=102, pad=0, mask=103, vocab_size=50_000, first_normal=104)


def synthetic_corpus(n_docs=300, seed=0):
    """Documents whose token ids are unique and increasing, so order and origin are visible:
    document d, sentence s, token t has id 1000 + running index."""
    rng = np.random.default_rng(seed)
    docs, next_id = [], 1000
    for _ in range(n_docs):
        sentences = []
        for _ in range(int(rng.integers(1, 9))):
            length = int(rng.integers(3, 40))
            ids = np.arange(next_id, next_id + length)
            next_id += length
            sentences.append((ids, np.ones(length, np.uint8)))
        docs.append(sentences)
    return docs


def real_tokens(instances, i):
    row = instances.input_ids[i, : instances.lengths[i]]
    return row[(row != SPECIAL.cls) & (row != SPECIAL.sep)]


def test_full_sentences_pack_every_token_once_with_little_padding():
    docs = synthetic_corpus()
    config = InstanceConfig("full_sentences", seq_length=64, short_seq_prob=0.0)
    inst = build_instances(docs.__getitem__, range(len(docs)), config, SPECIAL, seed=1)
    total = sum(len(ids) for doc in docs for ids, _ in doc)
    packed = np.concatenate([real_tokens(inst, i) for i in range(len(inst))])
    assert len(packed) == total and len(np.unique(packed)) == total  # nothing lost or repeated
    assert (inst.lengths <= 64).all()
    assert (inst.input_ids[:, 0] == SPECIAL.cls).all()
    assert all(inst.input_ids[i, inst.lengths[i] - 1] == SPECIAL.sep for i in range(len(inst)))
    fill = inst.lengths[:-1].mean() / 64
    assert fill > 0.95, f"padding waste too high: {fill:.3f}"
    assert inst.sentence_labels is None


def test_short_seq_prob_makes_some_short_sequences():
    docs = synthetic_corpus()
    config = InstanceConfig("full_sentences", seq_length=64, short_seq_prob=0.3)
    inst = build_instances(docs.__getitem__, range(len(docs)), config, SPECIAL, seed=2)
    share_short = (inst.lengths < 40).mean()
    assert 0.1 < share_short < 0.5


def _segments(inst, i):
    row = inst.input_ids[i, : inst.lengths[i]]
    seps = np.flatnonzero(row == SPECIAL.sep)
    return row[1 : seps[0]], row[seps[0] + 1 : seps[1]], inst.token_type_ids[i, : inst.lengths[i]]


def _doc_of(docs):
    owner = {}
    for d, doc in enumerate(docs):
        for ids, _ in doc:
            for t in ids:
                owner[int(t)] = d
    return owner


def test_nsp_half_random_next_from_another_document():
    docs = synthetic_corpus(600)
    owner = _doc_of(docs)
    config = InstanceConfig("nsp", seq_length=64, short_seq_prob=0.0)
    inst = build_instances(docs.__getitem__, range(len(docs)), config, SPECIAL, seed=3)
    labels = inst.sentence_labels
    assert 0.40 < labels.mean() < 0.65  # BERT: 50 % random, plus single-sentence documents
    for i in range(len(inst)):
        a, b, types = _segments(inst, i)
        assert len(a) and len(b) and len(a) + len(b) <= 61
        assert types[: len(a) + 2].sum() == 0 and types[len(a) + 2 :].all()
        same_doc = owner[int(a[0])] == owner[int(b[0])]
        if labels[i] == 0:
            assert same_doc and b[0] > a[-1]  # the true continuation
        else:
            assert not same_doc


def test_sop_swaps_half_of_consecutive_segments():
    docs = synthetic_corpus(600)
    owner = _doc_of(docs)
    config = InstanceConfig("sop", seq_length=64, short_seq_prob=0.0)
    inst = build_instances(docs.__getitem__, range(len(docs)), config, SPECIAL, seed=4)
    assert 0.45 < inst.sentence_labels.mean() < 0.55
    for i in range(len(inst)):
        a, b, _ = _segments(inst, i)
        assert owner[int(a[0])] == owner[int(b[0])]
        assert (a[0] < b[0]) == (inst.sentence_labels[i] == 0)


def test_seeded_and_dynamic():
    docs = synthetic_corpus(100)
    config = InstanceConfig("full_sentences", seq_length=32)
    one = build_instances(docs.__getitem__, range(100), config, SPECIAL, seed=5)
    two = build_instances(docs.__getitem__, range(100), config, SPECIAL, seed=5)
    other = build_instances(docs.__getitem__, range(100), config, SPECIAL, seed=6)
    assert np.array_equal(one.input_ids, two.input_ids)
    assert not np.array_equal(one.input_ids[:5], other.input_ids[:5])


def test_bad_instance_config():
    with pytest.raises(ConfigError, match="data.kind"):
        InstanceConfig(kind="paragraphs")
    with pytest.raises(ConfigError, match="seq_length"):
        InstanceConfig(seq_length=4)
