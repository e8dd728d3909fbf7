"""StructBERT's word structural objective: shuffled trigrams on the built-in corpus."""

import numpy as np
import pytest
import torch

from zhplm.data.collate import PretrainCollator
from zhplm.data.instances import SpecialIds, build_instances
from zhplm.data.shards import TokenDataset
from zhplm.data.word_order import shuffle_trigrams
from zhplm.errors import ConfigError
from zhplm.pretraining import PretrainRecipe
from zhplm.tokenization import Tokenizer


def batches(dataset_dir, vocab_dir, count=1024, ratio=0.05, seq_length=128):
    tokenizer = Tokenizer.from_pretrained(vocab_dir)
    dataset = TokenDataset(dataset_dir)
    special = SpecialIds.from_tokenizer(tokenizer)
    recipe = PretrainRecipe()
    recipe.data.seq_length = seq_length
    instances = build_instances(dataset.document, list(range(dataset.num_documents)),
                                recipe.data.instance_config(), special, 5)
    plain = PretrainCollator(recipe.masking, special, 5)
    shuffled = PretrainCollator(recipe.masking, special, 5, word_order_ratio=ratio)
    for start in range(0, min(count, len(instances)), 64):
        index = list(range(start, min(count, len(instances), start + 64)))
        yield tokenizer, plain(instances, index, 0), shuffled(instances, index, 0)


def test_trigrams_cover_five_percent_and_restore_the_input(small_dataset, zh_vocab_dir):
    covered = real = 0
    for tokenizer, plain, batch in batches(small_dataset, zh_vocab_dir):
        # the MLM part is untouched: same masks, same targets
        assert torch.equal(plain.mlm_positions, batch.mlm_positions)
        assert torch.equal(plain.mlm_labels, batch.mlm_labels)
        flat = batch.input_ids.flatten().clone()
        positions = batch.order_positions
        assert len(set(positions.tolist())) == len(positions)  # trigrams never overlap
        assert not set(positions.tolist()) & set(batch.mlm_positions.tolist())
        specials = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id}
        assert not any(int(t) in specials for t in plain.input_ids.flatten()[positions])
        # oracle: put the targets back and the sequence is the MLM-masked input again
        flat[positions] = batch.order_labels
        assert torch.equal(flat.view_as(batch.input_ids), plain.input_ids)
        # every trigram is three consecutive positions, reordered (never the identity)
        for start in positions.view(-1, 3):
            assert start.tolist() == list(range(int(start[0]), int(start[0]) + 3))
        covered += len(positions)
        real += int(batch.attention_mask.sum())
    assert covered / real == pytest.approx(0.05, abs=0.01)


def test_every_permutation_but_the_identity_is_drawn():
    ids = np.arange(100, 130)
    seen = set()
    for seed in range(200):
        out = shuffle_trigrams(ids, np.zeros(30, dtype=bool), 0.1, np.random.default_rng(seed))
        for start in out.positions[::3]:
            order = tuple(int(x) - 100 - int(start) for x in out.input_ids[start:start + 3])
            seen.add(order)
    assert seen == {(0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)}
    blocked = np.ones(30, dtype=bool)
    assert len(shuffle_trigrams(ids, blocked, 0.1, np.random.default_rng(0)).positions) == 0
    with pytest.raises(ConfigError, match="ratio"):
        shuffle_trigrams(ids, blocked, 1.5, np.random.default_rng(0))
