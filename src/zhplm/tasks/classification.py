"""Single-sentence and sentence-pair classification, and regression (one output, MSE).

Inputs are `[CLS] text_a [SEP] (text_b [SEP])`, truncated longest-first to
`max_seq_length`; the head is the family's sequence classifier (BERT: pooled [CLS];
ELECTRA: first token).
Metrics: accuracy (+ macro-F1, MCC) for classes; Pearson/Spearman for regression.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zhplm.config import atomic_write_text
from zhplm.errors import DataError
from zhplm.modeling.auto import SEQUENCE_CLASSIFICATION
from zhplm.tasks.base import classification_stats
from zhplm.tasks.batching import Batch, Features, eval_batches
from zhplm.tasks.examples import TextExample
from zhplm.tasks.metrics import classification_scores, regression_scores
from zhplm.tokenization import Tokenizer

logger = logging.getLogger("zhplm")


class TextTask:
    """Classification (`kind` "classification" or "pair") or "regression" over TextExamples."""

    head = SEQUENCE_CLASSIFICATION

    def __init__(self, kind: str, labels: Sequence[str]) -> None:
        self.kind = kind
        self.regression = kind == "regression"
        self.labels = ["LABEL_0"] if self.regression else list(labels)
        self.label_ids = {label: i for i, label in enumerate(self.labels)}
        self.main_metric = "pearson" if self.regression else "accuracy"

    def encode(self, examples: Sequence[TextExample], tokenizer: Tokenizer,
               max_seq_length: int) -> Features:
        """Tokenize (one batch call), truncating longest-first; count what was truncated."""
        if not examples:
            raise DataError("no examples to encode")
        texts_a = [e.text_a for e in examples]
        pairs = [e.text_b for e in examples]
        has_pair = any(b is not None for b in pairs)
        if has_pair and not all(b is not None for b in pairs):
            missing = next(e for e in examples if e.text_b is None)
            raise DataError(f"{missing.source}: text_b is missing while other examples have one")
        encoded = tokenizer(texts_a, pairs if has_pair else None, truncation=True,
                            max_length=max_seq_length)
        truncated = sum(bool(e.overflowing) for e in encoded.encodings)
        if truncated:
            logger.warning("%d of %d examples are longer than max_seq_length=%d tokens and "
                           "were truncated", truncated, len(examples), max_seq_length)
        labels = None
        if all(e.label is not None for e in examples):
            if self.regression:
                labels = np.asarray([float(e.label) for e in examples], dtype=np.float32)
            else:
                labels = np.asarray([self.label_ids[str(e.label)] for e in examples],
                                    dtype=np.int64)
        return Features(
            input_ids=[np.asarray(x, dtype=np.int32) for x in encoded["input_ids"]],
            token_type_ids=[np.asarray(x, dtype=np.int8) for x in encoded["token_type_ids"]],
            example_index=np.arange(len(examples)),
            labels=labels,
        )

    def count(self, batch: Batch) -> float:
        """Examples in the batch."""
        return float(batch.input_ids.shape[0])

    def loss(self, model: nn.Module, batch: Batch, normalizer: Tensor
             ) -> tuple[Tensor, dict[str, Tensor]]:
        """Cross-entropy (or MSE for regression), summed and divided by `normalizer`."""
        logits = model(batch.input_ids, batch.attention_mask, batch.token_type_ids).logits
        logits = logits.float()
        if self.regression:
            loss_sum = F.mse_loss(logits.squeeze(-1), batch.labels.float(), reduction="sum")
            stats = {"task_loss_sum": loss_sum.detach(),
                     "task_count": torch.tensor(float(logits.shape[0]))}
        else:
            loss_sum = F.cross_entropy(logits, batch.labels, reduction="sum")
            stats = classification_stats(logits, batch.labels, loss_sum)
        return loss_sum / normalizer, stats

    def logits(self, model: nn.Module, features: Features, batch_size: int, pad_id: int
               ) -> np.ndarray:
        """Model outputs for every feature, in feature order ([N, num_labels])."""
        out = np.zeros((len(features), len(self.labels)), dtype=np.float32)
        for index, batch in eval_batches(features, batch_size, pad_id):
            logits = model(batch.input_ids, batch.attention_mask, batch.token_type_ids).logits
            out[index] = logits.float().numpy()
        return out

    def predict(self, model: nn.Module, examples: Sequence[TextExample], features: Features,
                batch_size: int, pad_id: int) -> list[dict[str, Any]]:
        """`{"label", "score"}` per example (`score` is the softmax probability); for
        regression `{"label": value, "score": value}`."""
        logits = self.logits(model, features, batch_size, pad_id)
        if self.regression:
            return [{"label": float(v), "score": float(v)} for v in logits[:, 0]]
        probs = torch.from_numpy(logits).softmax(-1).numpy()
        best = probs.argmax(-1)
        return [{"label": self.labels[int(k)], "score": float(probs[i, k])}
                for i, k in enumerate(best)]

    def score(self, examples: Sequence[TextExample], predictions: list[dict[str, Any]]
              ) -> dict[str, float]:
        """Accuracy / macro-F1 / MCC, or Pearson / Spearman, against the gold labels."""
        predicted = [p["label"] for p in predictions]
        if self.regression:
            return regression_scores(predicted, [float(e.label) for e in examples])
        return classification_scores(predicted, [str(e.label) for e in examples])

    def write_predictions(self, path: Path, examples: Sequence[TextExample],
                          predictions: list[dict[str, Any]]) -> None:
        """TSV with a header: `id`, `label`, `score`."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
        writer.writerow(["id", "label", "score"])
        for example, prediction in zip(examples, predictions, strict=True):
            writer.writerow([example.guid, prediction["label"], f"{prediction['score']:.6f}"])
        atomic_write_text(path, buffer.getvalue())
