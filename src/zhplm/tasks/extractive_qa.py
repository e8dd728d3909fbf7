"""Extractive MRC as a fine-tuning task: SQuAD-format data, start/end heads, CMRC 2018 EM/F1.

Windows and answer decoding come from `zhplm.tasks.mrc`; this module adapts them to the
shared `Features`/trainer path and scores with the official CMRC 2018 metric (used for DRCD
too).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

from zhplm.config import atomic_write_text
from zhplm.errors import DataError
from zhplm.modeling.auto import QUESTION_ANSWERING
from zhplm.tasks.batching import Batch, Features, eval_batches
from zhplm.tasks.examples import QAExample
from zhplm.tasks.metrics import cmrc_scores
from zhplm.tasks.mrc import QAFeatures, build_qa_features, postprocess_qa, predictions_to_json
from zhplm.tokenization import Tokenizer


class QATask:
    """Extractive QA: the loss is the mean of start and end cross-entropies."""

    kind = "mrc"
    main_metric = "f1"
    head = QUESTION_ANSWERING

    def __init__(self, *, doc_stride: int = 128, max_query_length: int = 64, n_best: int = 20,
                 max_answer_length: int = 30) -> None:
        self.labels: list[str] = []
        self.doc_stride = doc_stride
        self.max_query_length = max_query_length
        self.n_best = n_best
        self.max_answer_length = max_answer_length

    def encode(self, examples: Sequence[QAExample], tokenizer: Tokenizer, max_seq_length: int,
               *, training: bool = True) -> Features:
        """Windows of the examples. Training: targets from the first gold answer found in the
        context (relocated when its answer_start is -1 or wrong); an example with no answer
        in its context gives no windows (counted in `task_data.stats`, one warning).
        `training=False` (dev/test): every example's windows, answers ignored."""
        qa = build_qa_features(examples, tokenizer, max_seq_length=max_seq_length,
                               doc_stride=self.doc_stride,
                               max_query_length=self.max_query_length, training=training)
        if training and examples and not len(qa):
            first = examples[0].source or f"qid {examples[0].qid!r}"
            raise DataError(f"{first}: none of the {len(examples)} training questions has an "
                            "answer text that occurs in its context; nothing to train on -- "
                            "check that the file's answers are cut from their contexts")
        lengths = qa.attention_mask.sum(1)
        features = Features(
            input_ids=[row[:n].astype(np.int32) for row, n in zip(qa.input_ids, lengths,
                                                                  strict=True)],
            token_type_ids=[row[:n].astype(np.int8) for row, n in zip(qa.token_type_ids,
                                                                      lengths, strict=True)],
            example_index=qa.example_index,
            extra={"start_positions": qa.start_positions, "end_positions": qa.end_positions},
            task_data=qa,
        )
        return features

    def encode_eval(self, examples: Sequence[QAExample], tokenizer: Tokenizer,
                    max_seq_length: int) -> Features:
        """Windows of every example for prediction (dev/test): no example is dropped, gold
        answers and their offsets are not used (scoring compares texts)."""
        return self.encode(examples, tokenizer, max_seq_length, training=False)

    def count(self, batch: Batch) -> float:
        """Windows in the batch."""
        return float(batch.input_ids.shape[0])

    def loss(self, model: nn.Module, batch: Batch, normalizer: Tensor
             ) -> tuple[Tensor, dict[str, Tensor]]:
        """(CE(start) + CE(end)) / 2, summed over windows and divided by `normalizer`."""
        out = model(batch.input_ids, batch.attention_mask, batch.token_type_ids)
        start, end = batch.extra["start_positions"], batch.extra["end_positions"]
        loss_sum = (F.cross_entropy(out.start_logits.float(), start, reduction="sum")
                    + F.cross_entropy(out.end_logits.float(), end, reduction="sum")) / 2
        correct = ((out.start_logits.argmax(-1) == start) & (out.end_logits.argmax(-1) == end))
        return loss_sum / normalizer, {
            "task_loss_sum": loss_sum.detach(), "task_correct": correct.sum().float(),
            "task_count": loss_sum.new_tensor(float(start.shape[0]))}

    def predict(self, model: nn.Module, examples: Sequence[QAExample], features: Features,
                batch_size: int, pad_id: int) -> dict[str, dict[str, Any]]:
        """`{qid: {answer, score, start, end}}` from the n-best spans over all windows."""
        qa: QAFeatures = features.task_data
        width = qa.input_ids.shape[1]
        starts = np.full((len(features), width), -1e4, dtype=np.float32)
        ends = np.full((len(features), width), -1e4, dtype=np.float32)
        for index, batch in eval_batches(features, batch_size, pad_id):
            out = model(batch.input_ids, batch.attention_mask, batch.token_type_ids)
            n = batch.input_ids.shape[1]
            starts[index, :n] = out.start_logits.float().numpy()
            ends[index, :n] = out.end_logits.float().numpy()
        return postprocess_qa(examples, qa, starts, ends, n_best=self.n_best,
                              max_answer_length=self.max_answer_length)

    def score(self, examples: Sequence[QAExample], predictions: dict[str, dict[str, Any]]
              ) -> dict[str, float]:
        """CMRC 2018 EM and F1 (x100) against every gold answer text (the official
        algorithm; answer_start is never used, so answers not in the context still count)."""
        scores = cmrc_scores(predictions_to_json(predictions),
                             {e.qid: list(e.answers) for e in examples})
        return {"em": float(scores["em"]), "f1": float(scores["f1"]),
                "average": float(scores["average"])}

    def write_predictions(self, path: Path, examples: Sequence[QAExample],
                          predictions: dict[str, dict[str, Any]]) -> None:
        """`{qid: answer}` JSON, the format the official scripts read."""
        atomic_write_text(path, json.dumps(predictions_to_json(predictions),
                                           ensure_ascii=False, indent=1) + "\n")
