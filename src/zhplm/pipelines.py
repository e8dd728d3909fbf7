"""Inference pipelines with transformers-style inputs and outputs.

`pipeline("fill-mask", model=DIR)` and `pipeline("feature-extraction", model=DIR)` load a
model directory (HF layout) and its tokenizer, encode a batch in one call of the Rust
tokenizer, sort it by length so padding stays small, run under `torch.inference_mode`
(in bf16 where the CPU runs it natively -- `dtype="auto"`, see `zhplm.env` -- with weights
cast to bf16 plus autocast), and return plain Python/numpy results.

A pipeline names the *head* it needs (`zhplm.modeling.auto`), never a model class:
`load_model` picks the family (BERT, ELECTRA) from the directory's `model_type`, so every
pipeline runs on every family that has its head. `replaced-token-detection` needs an
ELECTRA discriminator; fill-mask on ELECTRA takes the generator.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from zhplm.backends import Backend, load_backend
from zhplm.backends.torch_backend import TorchBackend
from zhplm.errors import ConfigError, InputError
from zhplm.modeling.auto import (
    ENCODER,
    MASKED_LM,
    QUESTION_ANSWERING,
    REPLACED_TOKEN_DETECTION,
    SEQUENCE_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
)
from zhplm.modeling.heads import REGRESSION, labels_of
from zhplm.modeling.lert_heads import HEADS_FILE as LERT_HEADS_FILE
from zhplm.modeling.lert_heads import LinguisticHeads
from zhplm.modeling.pretrained import PreTrainedModel
from zhplm.tokenization import Tokenizer

logger = logging.getLogger("zhplm")


class Pipeline:
    """Shared machinery: loading by head, tokenizer checks, truncation policy, batching,
    inference context. A subclass sets `head` (a head of `zhplm.modeling.auto`) and, when
    needed, `model_kwargs` for the model's constructor."""

    head: str = ENCODER
    model_kwargs: dict[str, Any] = {}

    def __init__(
        self,
        model: str | os.PathLike[str] | PreTrainedModel,
        tokenizer: Tokenizer | None = None,
        *,
        batch_size: int = 32,
        dtype: str = "auto",
        truncate: bool = True,
        backend: str | None = None,
        threads: int | None = None,
    ) -> None:
        if isinstance(model, (str, os.PathLike)):
            model_dir = Path(model)
            self.backend: Backend = load_backend(model_dir, self.head, backend=backend,
                                                 dtype=dtype, threads=threads,
                                                 **self.model_kwargs)
            self.tokenizer = tokenizer or Tokenizer.from_pretrained(model_dir)
        else:
            if tokenizer is None:
                raise InputError("pass `tokenizer=` together with an in-memory model")
            if backend == "onnxruntime":
                raise InputError("an in-memory model runs on torch; export it (zhplm export "
                                 "onnx) and pass the exported directory for onnxruntime")
            self.backend = TorchBackend.from_model(model, self.head, dtype)
            self.tokenizer = tokenizer
        self.dtype = self.backend.dtype  # "fp32" / "bf16" (torch), "fp32" / "int8" (ONNX)
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.truncate = truncate
        self.max_length = min(self.tokenizer.model_max_length,
                              self.backend.config.max_position_embeddings)

    @property
    def model(self) -> PreTrainedModel:
        """The PyTorch model (torch backend only)."""
        model = getattr(self.backend, "model", None)
        if model is None:
            raise InputError(f"this pipeline runs on {self.backend.name}; it has no PyTorch "
                             f"model (backend='torch' loads one)")
        return model

    @property
    def config(self) -> Any:
        """The model's config (`config.json`)."""
        return self.backend.config

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, each within `max_length` (truncated with a warning or refused)."""
        return self._encode_with_offsets(texts)[0]

    def _encode_with_offsets(self, texts: Sequence[str]
                             ) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
        """Token ids and character offsets per text (one tokenizer call), within
        `max_length`."""
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"input {i} is a {type(text).__name__}, expected a string")
            if not text.strip():
                raise InputError(f"input {i} is empty; pass text with at least one character")
        encoded = self.tokenizer(list(texts), return_offsets_mapping=True)
        ids: list[list[int]] = encoded["input_ids"]
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
        return ids, encoded["offset_mapping"]

    def _batches(self, ids: list[list[int]], token_types: list[list[int]] | None = None
                 ) -> Iterator[tuple[list[int], np.ndarray, np.ndarray, np.ndarray]]:
        """Yield (indices, input_ids, attention_mask, token_type_ids), grouping texts of
        similar length. Token types are the tokenizer's (zeros when not given)."""
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            width = len(ids[index[-1]])
            input_ids = np.full((len(index), width), pad, dtype=np.int64)
            attention = np.zeros((len(index), width), dtype=np.int64)
            types = np.zeros((len(index), width), dtype=np.int64)
            for row, i in enumerate(index):
                input_ids[row, : len(ids[i])] = ids[i]
                attention[row, : len(ids[i])] = 1
                if token_types is not None:
                    types[row, : len(ids[i])] = token_types[i][: len(ids[i])]
            yield index, input_ids, attention, types


class FeatureExtractionPipeline(Pipeline):
    """Hidden states per token, or one pooled vector per text (`pooling="cls"|"mean"`)."""

    head = ENCODER
    model_kwargs = {"add_pooling_layer": False}  # ELECTRA has no pooler and ignores this

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
        for index, input_ids, attention, types in self._batches(ids):
            hidden = self.backend.run(input_ids, attention, types)["last_hidden_state"]
            if pooling == "cls":
                vectors = hidden[:, 0]
            elif pooling == "mean":
                weights = attention[..., None].astype(hidden.dtype)
                vectors = (hidden * weights).sum(1) / weights.sum(1)
            else:
                vectors = hidden
            if normalize and pooling:
                norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
                vectors = vectors / np.maximum(norms, 1e-12)
            for row, i in enumerate(index):
                results[i] = vectors[row] if pooling else vectors[row, : len(ids[i])]
        if pooling:
            stacked = np.stack(results)  # type: ignore[arg-type]
            return stacked[0] if single else stacked
        return results[0] if single else results  # type: ignore[return-value]


class FillMaskPipeline(Pipeline):
    """Top-k predictions for each `[MASK]`, as transformers' fill-mask pipeline returns them.
    Any family's masked LM: a BERT MLM directory or an ELECTRA generator."""

    head = MASKED_LM

    def __init__(self, model: Any, tokenizer: Tokenizer | None = None, *, top_k: int = 5,
                 linguistic: bool | LinguisticHeads = False, **options: Any) -> None:
        """`linguistic=True` also predicts each mask's POS / NER / DEP label with LERT's
        heads saved beside the model (`lert_heads.safetensors`; or pass the heads)."""
        super().__init__(model, tokenizer, **options)
        self.top_k = top_k
        self.linguistic: LinguisticHeads | None = None
        if linguistic is not False and linguistic is not None:
            self.linguistic = self._linguistic_heads(model, linguistic)

    def _linguistic_heads(self, model: Any, heads: bool | LinguisticHeads) -> LinguisticHeads:
        if isinstance(heads, LinguisticHeads):
            loaded = heads
        elif isinstance(model, (str, os.PathLike)):
            if not LinguisticHeads.has_heads(model):
                raise ConfigError(
                    f"{model}: no LERT heads ({LERT_HEADS_FILE}) beside the model; "
                    f"linguistic=True needs a model pre-trained with objectives.lert (or "
                    f"converted from a LERT TF checkpoint)")
            loaded = LinguisticHeads.from_pretrained(model)
        else:
            raise InputError("linguistic=True with an in-memory model: pass the heads "
                             "(linguistic=LinguisticHeads.from_pretrained(DIR))")
        if self.backend.name != "torch":
            raise ConfigError("linguistic=True reads LERT's heads through the PyTorch model; "
                              "pass the model directory (or backend='torch'), not an ONNX "
                              "export")
        predictions = getattr(getattr(self.model, "cls", None), "predictions", None)
        if predictions is None or not hasattr(predictions, "transform"):
            raise ConfigError("linguistic predictions read BERT's cls.predictions.transform; "
                              f"this {type(self.model).__name__} has none")
        width = next(iter(loaded.tasks.values())).in_features
        if width != self.model.config.hidden_size:
            raise ConfigError(f"the LERT heads read {width}-wide states but the model's "
                              f"hidden_size is {self.model.config.hidden_size}")
        dtype = next(self.model.parameters()).dtype
        if isinstance(heads, LinguisticHeads) and next(heads.parameters()).dtype != dtype:
            loaded = copy.deepcopy(heads)  # the caller's heads stay as they are
        return loaded.to(dtype).eval()

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
        linguistic: bool | None = None,
    ) -> list[Any]:
        """For one text: a list of {score, token, token_str, sequence} (a list of such lists
        when the text has several masks). For a list of texts: one such result per text.
        With `linguistic`, each mask's result is instead {"tokens": that list, "pos": [{label,
        score}, ...], "ner": [...], "dep": [...]} (the tasks the heads were trained on).
        `linguistic=False` leaves the labels out of this call (None: as the pipeline was
        built); `True` needs a pipeline built with `linguistic=True`."""
        if linguistic and self.linguistic is None:
            raise InputError("linguistic=True needs LERT's heads: build the pipeline with "
                             "linguistic=True over a LERT model directory")
        heads = self.linguistic if linguistic is not False else None
        top_k = top_k or self.top_k
        tag_k = top_k  # labels per task, however few targets there are
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
        for index, input_ids, attention, types in self._batches(ids):
            rows, cols = np.nonzero(input_ids == mask_id)
            positions = rows * input_ids.shape[1] + cols
            if heads is not None:
                logits, tags = self._with_tags(input_ids, attention, types, positions, tag_k)
            else:
                logits = self.backend.run(input_ids, attention, types, positions)["logits"]
                tags = None
            probs = torch.from_numpy(logits).softmax(-1)
            if target_ids is not None:
                probs = probs[:, target_ids]
            scores, predictions = probs.topk(top_k)
            if target_ids is not None:
                predictions = target_ids[predictions]
            per_mask = zip(rows.tolist(), cols.tolist(), scores.tolist(),
                           predictions.tolist(), strict=True)
            grouped: dict[int, list[list[dict[str, Any]]]] = {}
            for k, (row, col, row_scores, row_preds) in enumerate(per_mask):
                text_ids = ids[index[row]]
                found = self._propositions(text_ids, col, row_scores, row_preds)
                if tags is not None:
                    found = {"tokens": found, **{task: top[k] for task, top in tags.items()}}
                grouped.setdefault(row, []).append(found)
            for row, i in enumerate(index):
                masks = grouped[row]
                results[i] = masks[0] if len(masks) == 1 else masks
        return results[0] if single else results

    def _with_tags(self, input_ids: np.ndarray, attention: np.ndarray, types: np.ndarray,
                   positions: np.ndarray, top_k: int
                   ) -> tuple[np.ndarray, dict[str, list[list[dict[str, Any]]]]]:
        """The masks' vocabulary logits and, per task, per mask, the `top_k` labels with
        their probabilities, from one encoder pass (LERT's heads read the MLM transform)."""
        assert self.linguistic is not None
        ids, mask, segments = (torch.from_numpy(a) for a in (input_ids, attention, types))
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                    enabled=self.dtype == "bf16"):
            hidden = self.model.base_model(ids, mask, segments).last_hidden_state
            rows = hidden.flatten(0, 1)[torch.from_numpy(positions)]
            logits = self.model.masked_lm_logits(rows).float().numpy()
            tag_logits = self.linguistic(self.model.cls.predictions.transform(rows))
        out: dict[str, list[list[dict[str, Any]]]] = {}
        for task, task_logits in tag_logits.items():
            names = self.linguistic.labels[task]
            scores, labels = task_logits.float().softmax(-1).topk(min(top_k, len(names)))
            out[task] = [[{"label": names[i], "score": p} for p, i in zip(ps, ls, strict=True)]
                         for ps, ls in zip(scores.tolist(), labels.tolist(), strict=True)]
        return logits, out

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


class TextClassificationPipeline(Pipeline):
    """Labels of texts or text pairs (`{"text": a, "text_pair": b}`), transformers-style:
    `[{"label", "score"}]`; `top_k=k` gives the k best per input (`None`: all labels).
    A regression head returns its value as `score`."""

    head = SEQUENCE_CLASSIFICATION

    def __init__(self, model: Any, tokenizer: Tokenizer | None = None, *, top_k: int | None = 1,
                 **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        self.top_k = top_k
        self.labels = labels_of(self.config)
        self.regression = self.config.extra.get("problem_type") == REGRESSION

    def _encode_items(self, items: list[Any]) -> tuple[list[list[int]], list[list[int]]]:
        """Ids and token types of texts and `{"text", "text_pair"}` dicts (mixed freely)."""
        firsts: list[str] = []
        seconds: list[str | None] = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                item = {"text": item}
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise InputError(f"input {i} must be a string or {{'text': ..., 'text_pair': ...}}")
            pair = item.get("text_pair")
            if not item["text"].strip() or (pair is not None and not str(pair).strip()):
                raise InputError(f"input {i} has an empty text or text_pair")
            firsts.append(item["text"])
            seconds.append(None if pair is None else str(pair))
        ids: list[list[int]] = [[] for _ in items]
        types: list[list[int]] = [[] for _ in items]
        singles = [i for i, b in enumerate(seconds) if b is None]
        if singles:
            for i, row in zip(singles, self._encode([firsts[i] for i in singles]), strict=True):
                ids[i], types[i] = row, [0] * len(row)
        pairs = [i for i, b in enumerate(seconds) if b is not None]
        if pairs:
            a, b = [firsts[i] for i in pairs], [seconds[i] for i in pairs]
            encoded = self.tokenizer(a, b, truncation=True, max_length=self.max_length)
            for n, i in enumerate(pairs):
                if encoded.encodings[n].overflowing and not self.truncate:
                    raise InputError(f"input {i} (a text pair) is longer than the model's "
                                     f"{self.max_length} positions; shorten it or allow "
                                     f"truncation")
                ids[i] = encoded["input_ids"][n]
                types[i] = encoded["token_type_ids"][n]
        return ids, types

    def __call__(self, inputs: Any, *, top_k: Any = "default") -> list[Any]:
        """One result per input: a dict (top_k=1) or a list of dicts (top_k=k or None)."""
        top_k = self.top_k if top_k == "default" else top_k
        single = isinstance(inputs, (str, dict))
        items = [inputs] if single else list(inputs)
        ids, token_types = self._encode_items(items)
        results: list[Any] = [None] * len(items)
        for index, input_ids, attention, types in self._batches(ids, token_types):
            logits = torch.from_numpy(self.backend.run(input_ids, attention, types)["logits"])
            for row, i in enumerate(index):
                results[i] = self._format(logits[row], top_k)
        return results if not single else (results if top_k == 1 else results[0])

    def _format(self, logits: Tensor, top_k: int | None) -> Any:
        if self.regression:
            return {"label": self.labels[0], "score": float(logits[0])}
        probs = logits.softmax(-1)
        k = len(self.labels) if top_k is None else min(top_k, len(self.labels))
        scores, best = probs.topk(k)
        ranked = [{"label": self.labels[int(j)], "score": float(p)}
                  for p, j in zip(scores, best, strict=True)]
        return ranked[0] if top_k == 1 else ranked


class TokenClassificationPipeline(Pipeline):
    """Entities in a text, transformers-style. `aggregation_strategy`:
    "none" (one dict per token: entity, score, index, word, start, end), "simple" (B-/I- runs
    grouped: entity_group, score = mean, word, start, end), "first" / "max" / "average"
    (sub-tokens of a word first agree on one label — the first's, the most confident one's,
    or the argmax of the averaged probabilities — then grouped as "simple"). `word` is the
    span of the original text, so Chinese entities read without spaces."""

    head = TOKEN_CLASSIFICATION
    STRATEGIES = ("none", "simple", "first", "max", "average")

    def __init__(self, model: Any, tokenizer: Tokenizer | None = None, *,
                 aggregation_strategy: str = "simple", ignore_labels: Sequence[str] = ("O",),
                 **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        if aggregation_strategy not in self.STRATEGIES:
            raise InputError(f"aggregation_strategy={aggregation_strategy!r}; use one of "
                             f"{', '.join(self.STRATEGIES)}")
        self.aggregation_strategy = aggregation_strategy
        self.ignore_labels = set(ignore_labels)
        self.labels = labels_of(self.config)

    def __call__(self, inputs: str | Sequence[str], *, aggregation_strategy: str | None = None
                 ) -> list[Any]:
        """A list of entities for one text; a list of such lists for several."""
        strategy = aggregation_strategy or self.aggregation_strategy
        if strategy not in self.STRATEGIES:
            raise InputError(f"aggregation_strategy={strategy!r}; use one of "
                             f"{', '.join(self.STRATEGIES)}")
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        ids, offsets = self._encode_with_offsets(texts)
        results: list[Any] = [None] * len(texts)
        for index, input_ids, attention, types in self._batches(ids):
            logits = torch.from_numpy(self.backend.run(input_ids, attention, types)["logits"])
            probs = logits.softmax(-1).numpy()
            for row, i in enumerate(index):
                n = len(ids[i])
                results[i] = self._entities(texts[i], ids[i], offsets[i][:n - 1],
                                            probs[row, :n], strategy)
        return results[0] if single else results

    def _entities(self, text: str, ids: list[int], offsets: list[tuple[int, int]],
                  probs: np.ndarray, strategy: str) -> list[dict[str, Any]]:
        tokens = [(j, offsets[j]) for j in range(1, len(offsets))
                  if offsets[j][1] > offsets[j][0]]  # real tokens (no [CLS]/[SEP])
        if strategy == "none":
            out = []
            for j, (start, end) in tokens:
                k = int(probs[j].argmax())
                if self.labels[k] not in self.ignore_labels:
                    out.append({"entity": self.labels[k], "score": float(probs[j, k]),
                                "index": j, "word": self.tokenizer.convert_ids_to_tokens(ids[j]),
                                "start": start, "end": end})
            return out
        pieces = self.tokenizer.convert_ids_to_tokens([ids[j] for j, _ in tokens])
        units = self._words(tokens, pieces, probs, strategy) if strategy != "simple" else [
            (start, end, int(probs[j].argmax()), float(probs[j].max()))
            for j, (start, end) in tokens]
        return self._group(text, units)

    @staticmethod
    def _words(tokens: list[tuple[int, tuple[int, int]]], pieces: list[str], probs: np.ndarray,
               strategy: str) -> list[tuple[int, int, int, float]]:
        """Sub-tokens joined into words (a `##` piece continues the word before it); one
        label and score per word."""
        words: list[list[tuple[int, tuple[int, int]]]] = []
        for (j, span), piece in zip(tokens, pieces, strict=True):
            if words and piece.startswith("##"):
                words[-1].append((j, span))
            else:
                words.append([(j, span)])
        out = []
        for word in words:
            rows = probs[[j for j, _ in word]]
            if strategy == "first":
                p = rows[0]
            elif strategy == "max":
                p = rows[int(rows.max(1).argmax())]
            else:
                p = rows.mean(0)
            k = int(p.argmax())
            out.append((word[0][1][0], word[-1][1][1], k, float(p[k])))
        return out

    def _group(self, text: str, units: list[tuple[int, int, int, float]]
               ) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = []
        current: dict[str, Any] | None = None
        for start, end, k, score in units:
            label = self.labels[k]
            prefix, kind = (label.split("-", 1) + [""])[:2] if "-" in label else ("", label)
            if label in self.ignore_labels:
                current = None
                continue
            if current is not None and kind == current["entity_group"] and prefix in ("I", "E"):
                current["end"], current["scores"] = end, current["scores"] + [score]
            else:
                current = {"entity_group": kind, "scores": [score], "start": start, "end": end}
                groups.append(current)
            if prefix in ("E", "S"):  # BIOES: the entity ends here
                current = None
        return [{"entity_group": g["entity_group"], "score": float(np.mean(g["scores"])),
                 "word": text[g["start"]:g["end"]], "start": g["start"], "end": g["end"]}
                for g in groups]


class QuestionAnsweringPipeline(Pipeline):
    """Answers cut from the context: `{"score", "start", "end", "answer"}` per question.
    Long contexts are split into windows (`doc_stride`) and the best span over all windows
    wins; `score` is its softmax probability among the n-best spans."""

    head = QUESTION_ANSWERING

    def __init__(self, model: Any, tokenizer: Tokenizer | None = None, *,
                 max_seq_length: int = 384, doc_stride: int = 128, max_query_length: int = 64,
                 max_answer_length: int = 30, n_best: int = 20, **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        self.settings = {"max_seq_length": min(max_seq_length, self.max_length),
                         "doc_stride": doc_stride, "max_query_length": max_query_length}
        self.max_answer_length = max_answer_length
        self.n_best = n_best

    def __call__(self, inputs: Any = None, *, question: Any = None, context: Any = None
                 ) -> Any:
        """`qa(question=..., context=...)`, `qa({"question", "context"})` or a list of those."""
        from zhplm.tasks.examples import QAExample
        from zhplm.tasks.mrc import build_qa_features, postprocess_qa

        if inputs is None:
            if question is None or context is None:
                raise InputError("give question= and context= (or a list of such dicts)")
            inputs = ({"question": question, "context": context} if isinstance(question, str)
                      else [{"question": q, "context": c}
                            for q, c in zip(question, context, strict=True)])
        single = isinstance(inputs, dict)
        items = [inputs] if single else list(inputs)
        examples = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not str(item.get("question", "")).strip() or \
                    not str(item.get("context", "")).strip():
                raise InputError(f"input {i} needs a non-empty 'question' and 'context'")
            examples.append(QAExample(qid=str(i), question=item["question"],
                                      context=item["context"]))
        features = build_qa_features(examples, self.tokenizer, training=False, **self.settings)
        lengths = features.attention_mask.sum(1)
        starts = np.full(features.input_ids.shape, -1e4, dtype=np.float32)
        ends = np.full(features.input_ids.shape, -1e4, dtype=np.float32)
        ids = [row[:n].tolist() for row, n in zip(features.input_ids, lengths, strict=True)]
        for index, input_ids, attention, types in self._batches(
                ids, features.token_type_ids.tolist()):
            out = self.backend.run(input_ids, attention, types)
            width = input_ids.shape[1]
            starts[index, :width] = out["start_logits"]
            ends[index, :width] = out["end_logits"]
        decoded = postprocess_qa(examples, features, starts, ends, n_best=self.n_best,
                                 max_answer_length=self.max_answer_length)
        results = [{"score": r["score"], "start": r["start"], "end": r["end"],
                    "answer": r["answer"]} for r in (decoded[e.qid] for e in examples)]
        return results[0] if single else results


class ReplacedTokenDetectionPipeline(Pipeline):
    """ELECTRA's discriminator read out: for each token of a text (special tokens excluded),
    the probability that it was replaced, `sigmoid(logit)`, as
    `{"token", "start", "end", "score", "replaced"}` (`replaced`: score > `threshold`;
    `start`/`end`: character offsets into the text). Needs an ELECTRA discriminator
    directory (`DIR/discriminator`); other models have no replaced-token head."""

    head = REPLACED_TOKEN_DETECTION

    def __init__(self, model: Any, tokenizer: Tokenizer | None = None, *,
                 threshold: float = 0.5, **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        self.threshold = self._check_threshold(threshold)

    @staticmethod
    def _check_threshold(threshold: float) -> float:
        if not 0.0 <= float(threshold) <= 1.0:
            raise InputError(f"threshold={threshold} must be a probability in [0, 1]")
        return float(threshold)

    def __call__(self, inputs: str | Sequence[str], *, threshold: float | None = None
                 ) -> list[Any]:
        """For one text a list of per-token dicts; for a list of texts a list of such lists."""
        threshold = self.threshold if threshold is None else self._check_threshold(threshold)
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        ids, offsets = self._encode_with_offsets(texts)
        results: list[Any] = [None] * len(texts)
        for index, input_ids, attention, types in self._batches(ids):
            logits = torch.from_numpy(self.backend.run(input_ids, attention, types)["logits"])
            probs = logits.sigmoid()
            for row, i in enumerate(index):
                n = len(ids[i])
                results[i] = self._tokens(ids[i], offsets[i][:n - 1],
                                          probs[row, :n].tolist(), threshold)
        return results[0] if single else results

    def _tokens(self, ids: list[int], offsets: list[tuple[int, int]], probs: list[float],
                threshold: float) -> list[dict[str, Any]]:
        """One dict per text token: [CLS], [SEP] (no span in the text) are left out."""
        positions = [j for j in range(1, len(offsets)) if offsets[j][1] > offsets[j][0]]
        pieces = self.tokenizer.convert_ids_to_tokens([ids[j] for j in positions])
        return [{"token": piece, "start": offsets[j][0], "end": offsets[j][1],
                 "score": probs[j], "replaced": probs[j] > threshold}
                for j, piece in zip(positions, pieces, strict=True)]


TASKS: dict[str, type[Pipeline]] = {
    "feature-extraction": FeatureExtractionPipeline,
    "fill-mask": FillMaskPipeline,
    "text-classification": TextClassificationPipeline,
    "token-classification": TokenClassificationPipeline,
    "ner": TokenClassificationPipeline,
    "question-answering": QuestionAnsweringPipeline,
    "replaced-token-detection": ReplacedTokenDetectionPipeline,
}


def pipeline(task: str, model: str | os.PathLike[str] | PreTrainedModel, **options: Any) -> Any:
    """Build a pipeline for `task` over a local model directory (or an in-memory model).

    Options: `tokenizer`, `batch_size` (32), `dtype` ("auto": bf16 where the CPU runs it
    natively, else fp32; or "fp32", "bf16"), `truncate`
    (True: over-long inputs are cut with a warning; False: they raise), and per task
    `top_k` for fill-mask and text-classification, `linguistic` for fill-mask (LERT's POS /
    NER / DEP of each mask), `aggregation_strategy` for
    token-classification, `threshold` (0.5) for replaced-token-detection.

    The model directory may hold any family with the task's head (`zhplm.modeling.auto`):
    BERT, or ELECTRA (the discriminator for every task but fill-mask, which takes the
    generator).
    """
    if task not in TASKS:
        raise InputError(f"unknown pipeline task {task!r}; choose one of {', '.join(TASKS)}")
    return TASKS[task](model, **options)
