"""Batches for pre-training: dynamic masking per instance, padding to the longest sequence.

Every instance is masked with its own generator, seeded by (seed, epoch, instance id), so
masks change every epoch (dynamic masking, RoBERTa) yet do not depend on how instances are
split over ranks, micro-batches, collation workers or restarts. Instances with linguistic
labels (LERT) also give the labels of the masked tokens (`PretrainBatch.linguistic_labels`),
read without any draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from zhplm.data.instances import UNKNOWN_LABEL, Instances, SpecialIds
from zhplm.data.masking import MaskingConfig, build_strategy, mask_sequence
from zhplm.data.word_order import shuffle_trigrams


@dataclass
class PretrainBatch:
    """One micro-batch. MLM targets are flat positions into `[batch * seq]`."""

    input_ids: Tensor
    token_type_ids: Tensor
    attention_mask: Tensor
    mlm_positions: Tensor
    mlm_labels: Tensor
    mlm_uniforms: Tensor  # one U[0, 1) per predicted position (ELECTRA's generator samples)
    sentence_labels: Tensor | None
    num_tokens: int
    # StructBERT's word order: flat positions of shuffled trigram tokens, their original ids
    order_positions: Tensor | None = None
    order_labels: Tensor | None = None
    # LERT: int64 [num_masked, 3] pos / ner / dep label ids of the tokens at `mlm_positions`
    # (row for row with `mlm_labels`), -1 = unknown; None when the instances have no labels
    linguistic_labels: Tensor | None = None


class PretrainCollator:
    """Masks and pads instances into a `PretrainBatch`."""

    def __init__(self, masking: MaskingConfig, special: SpecialIds, seed: int,
                 word_order_ratio: float = 0.0) -> None:
        """`word_order_ratio` > 0 also shuffles trigrams covering that share of each
        sequence (StructBERT's word structural objective), after the MLM masking."""
        self.masking = masking
        self.word_order_ratio = word_order_ratio
        self.strategy = build_strategy(masking)
        self.special = special
        self.seed = seed

    def __call__(self, instances: Instances, indices: Sequence[int], epoch: int,
                 keys: Sequence[int] | None = None) -> PretrainBatch:
        """Rows ``indices`` of ``instances``, masked; row ``j``'s generator is seeded by
        (seed, epoch, ``keys[j]``), by default its index (an epoch's instance id)."""
        width = int(instances.lengths[list(indices)].max())
        n = len(indices)
        keys = indices if keys is None else keys
        input_ids = np.full((n, width), self.special.pad, dtype=np.int64)
        positions: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        uniforms: list[np.ndarray] = []
        order_positions: list[np.ndarray] = []
        order_labels: list[np.ndarray] = []
        linguistic: list[np.ndarray] = []
        for row, (index, key) in enumerate(zip(indices, keys, strict=True)):
            length = int(instances.lengths[index])
            ids = instances.input_ids[index, :length]
            special_mask = (ids == self.special.cls) | (ids == self.special.sep)
            rng = np.random.default_rng((self.seed, epoch, int(key)))
            masked = mask_sequence(
                ids, special_mask, instances.word_starts[index, :length], self.strategy,
                self.masking, rng, mask_token_id=self.special.mask,
                vocab_size=self.special.vocab_size, first_normal_id=self.special.first_normal,
            )
            uniforms.append(rng.random(len(masked.positions)))  # drawn after the mask
            corrupted = masked.input_ids
            if self.word_order_ratio:  # after the mask and the uniforms: those stay as they are
                blocked = special_mask.copy()
                blocked[masked.positions] = True
                shuffled = shuffle_trigrams(corrupted, blocked, self.word_order_ratio, rng)
                corrupted = shuffled.input_ids
                order_positions.append(shuffled.positions + row * width)
                order_labels.append(shuffled.labels.astype(np.int64))
            input_ids[row, :length] = corrupted
            positions.append(np.asarray(masked.positions, dtype=np.int64) + row * width)
            labels.append(np.asarray(masked.labels, dtype=np.int64))
            if instances.linguistic is not None:  # read only: no random draw
                linguistic.append(instances.linguistic[index, np.asarray(masked.positions,
                                                                         dtype=np.int64)])
        lengths = instances.lengths[list(indices)]
        attention = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
        sentence_labels = None
        if instances.sentence_labels is not None:
            sentence_labels = torch.from_numpy(instances.sentence_labels[list(indices)])
        return PretrainBatch(
            input_ids=torch.from_numpy(input_ids),
            token_type_ids=torch.from_numpy(
                instances.token_type_ids[list(indices), :width].astype(np.int64)),
            attention_mask=torch.from_numpy(attention),
            mlm_positions=torch.from_numpy(np.concatenate(positions)),
            mlm_labels=torch.from_numpy(np.concatenate(labels)),
            mlm_uniforms=torch.from_numpy(np.concatenate(uniforms)),
            sentence_labels=sentence_labels,
            num_tokens=int(lengths.sum()),
            order_positions=torch.from_numpy(np.concatenate(order_positions)).long()
            if self.word_order_ratio else None,
            order_labels=torch.from_numpy(np.concatenate(order_labels))
            if self.word_order_ratio else None,
            linguistic_labels=None if instances.linguistic is None
            else torch.from_numpy(_linguistic_targets(linguistic)),
        )


def _linguistic_targets(rows: list[np.ndarray]) -> np.ndarray:
    """int64 [num_masked, tasks] label ids from the instances' uint8 labels, 255 -> -1."""
    labels = np.concatenate(rows).astype(np.int64)
    labels[labels == UNKNOWN_LABEL] = -1
    return labels
