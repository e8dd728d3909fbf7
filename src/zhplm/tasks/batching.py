"""Features (token ids per example), dynamic padding, and length-grouped batches.

Every task encodes its examples into `Features`: unpadded token ids per feature plus the
targets. Training batches come from `BatchStream` (the trainer's `BatchSource`): each epoch
a seeded shuffle, then chunks of 50 batches sorted by length (so a batch pads to little),
then the batch order shuffled; the position is saved in checkpoints, so a resumed run sees
the same batches. Evaluation batches are simply sorted by length.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

IGNORE_INDEX = -100
GROUP_BATCHES = 50


@dataclass
class Features:
    """Token ids of N features and their targets.

    `labels` is one value per feature (class id or regression target), or one array per
    feature with a label per token (`IGNORE_INDEX` where nothing is predicted), or None.
    `extra` holds further per-feature arrays (e.g. QA `start_positions`/`end_positions`).
    `example_index[i]` is the example feature i came from; `task_data` is whatever the task
    needs to read predictions back (tagging: sub-token -> word maps; QA: windows + offsets).
    """

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray]
    example_index: np.ndarray
    labels: np.ndarray | list[np.ndarray] | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    task_data: Any = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        """Number of tokens of each feature."""
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64,
                           count=len(self.input_ids))


@dataclass
class Batch:
    """A padded batch (to the longest feature in it)."""

    input_ids: Tensor
    token_type_ids: Tensor
    attention_mask: Tensor
    labels: Tensor | None
    extra: dict[str, Tensor]
    num_tokens: int


def collate(features: Features, indices: Sequence[int], pad_id: int) -> Batch:
    """Pad the chosen features to the longest of them."""
    indices = [int(i) for i in indices]
    lengths = [len(features.input_ids[i]) for i in indices]
    width = max(lengths)
    input_ids = np.full((len(indices), width), pad_id, dtype=np.int64)
    token_types = np.zeros((len(indices), width), dtype=np.int64)
    attention = np.zeros((len(indices), width), dtype=np.int64)
    token_labels = None
    if isinstance(features.labels, list):
        token_labels = np.full((len(indices), width), IGNORE_INDEX, dtype=np.int64)
    for row, (i, n) in enumerate(zip(indices, lengths, strict=True)):
        input_ids[row, :n] = features.input_ids[i]
        token_types[row, :n] = features.token_type_ids[i]
        attention[row, :n] = 1
        if token_labels is not None:
            token_labels[row, :n] = features.labels[i]  # type: ignore[index]
    labels: Tensor | None = None
    if token_labels is not None:
        labels = torch.from_numpy(token_labels)
    elif features.labels is not None:
        labels = torch.from_numpy(np.asarray(features.labels)[indices])
    return Batch(
        input_ids=torch.from_numpy(input_ids),
        token_type_ids=torch.from_numpy(token_types),
        attention_mask=torch.from_numpy(attention),
        labels=labels,
        extra={k: torch.from_numpy(np.asarray(v)[indices]) for k, v in features.extra.items()},
        num_tokens=int(sum(lengths)),
    )


def length_grouped_batches(lengths: np.ndarray, batch_size: int,
                           rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, sort within chunks of `GROUP_BATCHES` batches by length, shuffle the batches.
    Every index appears once; the last batch may be smaller."""
    order = rng.permutation(len(lengths))
    chunk = batch_size * GROUP_BATCHES
    batches: list[np.ndarray] = []
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_batches(features: Features, batch_size: int, pad_id: int
                 ) -> Iterator[tuple[np.ndarray, Batch]]:
    """(indices, batch) over all features, grouped by length for little padding."""
    order = np.argsort(features.lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        yield index, collate(features, index, pad_id)


class BatchStream:
    """Training batches for the trainer: epochs of length-grouped batches, resumable.

    One optimiser step takes the next batch of the epoch, split into `micro_batches`
    pieces for gradient accumulation. Fine-tuning runs in one process.
    """

    def __init__(self, features: Features, batch_size: int, pad_id: int, seed: int) -> None:
        self.features = features
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._cached: tuple[int, list[np.ndarray]] | None = None

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps in one pass over the features."""
        return -(-len(self.features) // self.batch_size)

    def _batches(self) -> list[np.ndarray]:
        if self._cached is None or self._cached[0] != self.epoch:
            rng = np.random.default_rng((self.seed, self.epoch))
            batches = length_grouped_batches(self.features.lengths, self.batch_size, rng)
            self._cached = (self.epoch, batches)
        return self._cached[1]

    def next_step(self, micro_batches: int) -> list[Batch]:
        """The micro-batches of the next optimiser step."""
        batches = self._batches()
        if self.position >= len(batches):
            self.epoch, self.position = self.epoch + 1, 0
            batches = self._batches()
        index = batches[self.position]
        self.position += 1
        parts = [p for p in np.array_split(index, micro_batches) if len(p)]
        return [collate(self.features, part, self.pad_id) for part in parts]

    def state_dict(self) -> dict[str, int]:
        """Position to resume from."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a saved position."""
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
