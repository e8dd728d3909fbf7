"""Inference pipelines with transformers-style inputs and outputs.

`pipeline("fill-mask", model=DIR)` and `pipeline("feature-extraction", model=DIR)` load a
model directory (HF layout) and its tokenizer, encode a batch in one call of the Rust
tokenizer, sort it by length so padding stays small, run under `torch.inference_mode`
(optionally in bf16, which uses AMX on CPUs that have it: weights cast to bf16 plus
autocast), and return plain Python/numpy results.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from zhplm.errors import InputError
from zhplm.modeling.bert import BertForMaskedLM, BertModel
from zhplm.modeling.pretrained import PreTrainedModel
from zhplm.tokenization import Tokenizer

logger = logging.getLogger("zhplm")

DTYPES = {"fp32": None, "float32": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


class Pipeline:
    """Shared machinery: tokenizer checks, truncation policy, batching, inference context."""

    model_class: type[PreTrainedModel] = BertModel
    model_kwargs: dict[str, Any] = {}

    def __init__(
        self,
        model: str | os.PathLike[str] | PreTrainedModel,
        tokenizer: Tokenizer | None = None,
        *,
        batch_size: int = 32,
        dtype: str = "fp32",
        truncate: bool = True,
    ) -> None:
        if dtype not in DTYPES:
            raise InputError(f"dtype={dtype!r} is not supported; use one of {sorted(DTYPES)}")
        if isinstance(model, (str, os.PathLike)):
            model_dir = Path(model)
            # A model we load ourselves is cast to bf16 outright (faster than autocast,
            # which keeps LayerNorm in fp32); an in-memory model is left as given.
            self.model = self.model_class.from_pretrained(model_dir, dtype=DTYPES[dtype],
                                                          **self.model_kwargs)
            self.tokenizer = tokenizer or Tokenizer.from_pretrained(model_dir)
        else:
            if tokenizer is None:
                raise InputError("pass `tokenizer=` together with an in-memory model")
            self.model, self.tokenizer = model.eval(), tokenizer
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.autocast_dtype = DTYPES[dtype]
        self.batch_size = batch_size
        self.truncate = truncate
        self.max_length = min(self.tokenizer.model_max_length,
                              self.model.config.max_position_embeddings)

    @contextmanager
    def _inference(self) -> Iterator[None]:
        with torch.inference_mode(), torch.autocast(
            "cpu", dtype=torch.bfloat16, enabled=self.autocast_dtype is not None
        ):
            yield

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, each within `max_length` (truncated with a warning or refused)."""
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"input {i} is a {type(text).__name__}, expected a string")
            if not text.strip():
                raise InputError(f"input {i} is empty; pass text with at least one character")
        ids: list[list[int]] = self.tokenizer(list(texts))["input_ids"]
        sep = self.tokenizer.sep_token_id
        for i, row in enumerate(ids):
            if len(row) <= self.max_length:
                continue
            if not self.truncate:
                raise InputError(
                    f"input {i} has {len(row)} tokens, more than the model's "
                    f"{self.max_length} positions; shorten it, or allow truncation "
                    f"(truncate=True; on the command line drop --no-truncate)"
                )
            logger.warning("input %d has %d tokens; truncated to the model's %d positions",
                           i, len(row), self.max_length)
            ids[i] = row[: self.max_length - 1] + [sep]
        return ids

    def _batches(self, ids: list[list[int]]) -> Iterator[tuple[list[int], Tensor, Tensor]]:
        """Yield (indices, input_ids, attention_mask), grouping texts of similar length."""
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            width = len(ids[index[-1]])
            input_ids = np.full((len(index), width), pad, dtype=np.int64)
            attention = np.zeros((len(index), width), dtype=np.int64)
            for row, i in enumerate(index):
                input_ids[row, : len(ids[i])] = ids[i]
                attention[row, : len(ids[i])] = 1
            yield index, torch.from_numpy(input_ids), torch.from_numpy(attention)


class FeatureExtractionPipeline(Pipeline):
    """Hidden states per token, or one pooled vector per text (`pooling="cls"|"mean"`)."""

    model_kwargs = {"add_pooling_layer": False}

    def __call__(
        self,
        inputs: str | Sequence[str],
        *,
        pooling: str | None = None,
        normalize: bool = False,
    ) -> np.ndarray | list[np.ndarray]:
        """Without pooling: a [tokens, hidden] array per text (special tokens included).
        With pooling: a [hidden] vector per text, stacked to [texts, hidden] for a list."""
        if pooling not in (None, "none", "cls", "mean"):
            raise InputError(f"pooling={pooling!r} is not supported; use 'cls', 'mean' or None")
        pooling = None if pooling == "none" else pooling
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        ids = self._encode(texts)
        results: list[np.ndarray | None] = [None] * len(texts)
        with self._inference():
            for index, input_ids, attention in self._batches(ids):
                hidden = self.model(input_ids, attention).last_hidden_state.float()
                if pooling == "cls":
                    vectors = hidden[:, 0]
                elif pooling == "mean":
                    weights = attention.unsqueeze(-1).to(hidden.dtype)
                    vectors = (hidden * weights).sum(1) / weights.sum(1)
                else:
                    vectors = hidden
                if normalize and pooling:
                    vectors = torch.nn.functional.normalize(vectors, dim=-1)
                array = vectors.numpy()
                for row, i in enumerate(index):
                    results[i] = array[row] if pooling else array[row, : len(ids[i])]
        if pooling:
            stacked = np.stack(results)  # type: ignore[arg-type]
            return stacked[0] if single else stacked
        return results[0] if single else results  # type: ignore[return-value]


class FillMaskPipeline(Pipeline):
    """Top-k predictions for each `[MASK]`, as transformers' fill-mask pipeline returns them."""

    model_class = BertForMaskedLM

    def __init__(self, model: Any, tokenizer: Tokenizer | None = None, *, top_k: int = 5,
                 **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        self.top_k = top_k

    def target_ids(self, targets: str | Sequence[str]) -> list[int]:
        """Vocabulary ids of `targets`; a word outside the vocab maps to its first piece."""
        targets = [targets] if isinstance(targets, str) else list(targets)
        vocab = self.tokenizer.get_vocab()
        ids: list[int] = []
        for target in targets:
            if target in vocab:
                ids.append(vocab[target])
                continue
            pieces = self.tokenizer(target, add_special_tokens=False)["input_ids"]
            if not pieces:
                logger.warning("target %r is not in the vocabulary; ignored", target)
                continue
            logger.warning("target %r is not in the vocabulary; using %r", target,
                           self.tokenizer.convert_ids_to_tokens([pieces[0]])[0])
            ids.append(pieces[0])
        if not ids:
            raise InputError(f"none of the targets {targets!r} can be mapped to the vocabulary")
        return sorted(set(ids))

    def __call__(
        self,
        inputs: str | Sequence[str],
        *,
        top_k: int | None = None,
        targets: str | Sequence[str] | None = None,
    ) -> list[Any]:
        """For one text: a list of {score, token, token_str, sequence} (a list of such lists
        when the text has several masks). For a list of texts: one such result per text."""
        top_k = top_k or self.top_k
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        target_ids = torch.tensor(self.target_ids(targets)) if targets is not None else None
        if target_ids is not None:
            top_k = min(top_k, len(target_ids))
        ids = self._encode(texts)
        mask_id = self.tokenizer.mask_token_id
        for i, row in enumerate(ids):
            if mask_id not in row:
                raise InputError(
                    f"input {i} has no {self.tokenizer.mask_token} token (or it was cut by "
                    f"truncation); put {self.tokenizer.mask_token} where a word should be filled"
                )
        results: list[Any] = [None] * len(texts)
        with self._inference():
            for index, input_ids, attention in self._batches(ids):
                hidden = self.model.bert(input_ids, attention).last_hidden_state
                rows, cols = torch.nonzero(input_ids == mask_id, as_tuple=True)
                probs = self.model.cls(hidden[rows, cols]).float().softmax(-1)
                if target_ids is not None:
                    probs = probs[:, target_ids]
                scores, predictions = probs.topk(top_k)
                if target_ids is not None:
                    predictions = target_ids[predictions]
                per_mask = zip(rows.tolist(), cols.tolist(), scores.tolist(),
                               predictions.tolist(), strict=True)
                grouped: dict[int, list[list[dict[str, Any]]]] = {}
                for row, col, row_scores, row_preds in per_mask:
                    text_ids = ids[index[row]]
                    grouped.setdefault(row, []).append(
                        self._propositions(text_ids, col, row_scores, row_preds)
                    )
                for row, i in enumerate(index):
                    masks = grouped[row]
                    results[i] = masks[0] if len(masks) == 1 else masks
        return results[0] if single else results

    def _propositions(self, ids: list[int], position: int, scores: list[float],
                      predictions: list[int]) -> list[dict[str, Any]]:
        single_mask = ids.count(self.tokenizer.mask_token_id) == 1
        out = []
        for score, token in zip(scores, predictions, strict=True):
            filled = list(ids)
            filled[position] = token
            out.append({
                "score": score,
                "token": token,
                "token_str": self.tokenizer.decode([token]),
                "sequence": self.tokenizer.decode(filled, skip_special_tokens=single_mask),
            })
        return out


TASKS: dict[str, type[Pipeline]] = {
    "feature-extraction": FeatureExtractionPipeline,
    "fill-mask": FillMaskPipeline,
}


def pipeline(task: str, model: str | os.PathLike[str] | PreTrainedModel, **options: Any) -> Any:
    """Build a pipeline for `task` over a local model directory (or an in-memory model).

    Options: `tokenizer`, `batch_size` (32), `dtype` ("fp32" or "bf16"), `truncate`
    (True: over-long inputs are cut with a warning; False: they raise), and per task
    `top_k` for fill-mask.
    """
    if task not in TASKS:
        raise InputError(f"unknown pipeline task {task!r}; choose one of {', '.join(TASKS)}")
    return TASKS[task](model, **options)
