"""What every task provides, and the module the trainer drives while fine-tuning.

A task turns examples into `Features`, computes its loss on a batch, turns model outputs
into predictions, scores predictions with its official metric and writes them to a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from zhplm.tasks.batching import Batch, Features
from zhplm.tokenization import Tokenizer


class Task(Protocol):
    """The interface of `TextTask`, `TaggingTask` and `QATask`."""

    kind: str  # "classification", "pair", "regression", "ner", "pos", "mrc"
    main_metric: str  # the dev metric that picks the best checkpoint (higher is better)
    head: str  # the model head it trains (`zhplm.modeling.auto`), in any family
    labels: list[str]

    def encode(self, examples: Sequence[Any], tokenizer: Tokenizer, max_seq_length: int
               ) -> Features:
        """Token ids and targets of `examples`."""

    def count(self, batch: Batch) -> float:
        """What the batch's summed loss is divided by (examples, tokens, ...)."""

    def loss(self, model: nn.Module, batch: Batch, normalizer: Tensor
             ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss (already divided by `normalizer`) and summed statistics."""

    def predict(self, model: nn.Module, examples: Sequence[Any], features: Features,
                batch_size: int, pad_id: int) -> list[Any] | dict[str, Any]:
        """Predictions for `examples` (one per example; a dict by id for QA)."""

    def score(self, examples: Sequence[Any], predictions: Any) -> dict[str, float]:
        """The official metrics of the task (needs gold labels)."""

    def write_predictions(self, path: Path, examples: Sequence[Any], predictions: Any) -> None:
        """Write predictions in the task's file format."""


class TaskModule(nn.Module):
    """The trainer's `TrainModule` for fine-tuning: a model with a task head + its task."""

    def __init__(self, model: nn.Module, task: Task) -> None:
        super().__init__()
        self.model = model
        self.task = task

    def normalizers(self, batches: list[Batch]) -> dict[str, Tensor]:
        """Global divisor of the summed loss."""
        return {"task": torch.tensor(sum(self.task.count(b) for b in batches),
                                     dtype=torch.float64)}

    def forward(self, batch: Batch, normalizers: dict[str, Tensor]) -> tuple[Tensor, dict]:
        """Loss of one micro-batch and summed statistics (`task_loss_sum`, ...)."""
        loss, stats = self.task.loss(self.model, batch,
                                     normalizers["task"].to(torch.float32).clamp(min=1))
        stats["tokens"] = torch.tensor(float(batch.num_tokens))
        return loss, stats


def classification_stats(logits: Tensor, labels: Tensor, loss_sum: Tensor
                         ) -> dict[str, Tensor]:
    """Summed statistics of a cross-entropy head over the labelled positions."""
    keep = labels != -100
    correct = (logits.argmax(-1)[keep] == labels[keep]).sum().float()
    return {"task_loss_sum": loss_sum.detach(), "task_correct": correct,
            "task_count": keep.sum().float()}
