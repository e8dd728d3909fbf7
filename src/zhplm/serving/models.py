"""The models a server holds: which task a directory implies, loading its pipeline, measuring
inputs in tokens, and running a batch of inputs (in the batch worker's thread)."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zhplm.errors import ConfigError, InputError


@dataclass
class Settings:
    """Server options (the `zhplm serve` flags)."""

    max_batch_tokens: int = 16384
    max_batch_requests: int = 32
    max_client_batch_size: int = 32
    max_input_length: int | None = None  # None: each model's max positions
    truncate: bool = True  # False (--no-truncate): over-long inputs get 422
    payload_limit: int = 2_000_000
    max_concurrent_requests: int = 512
    api_key: str | None = None
    dtype: str = "auto"
    backend: str | None = None
    shutdown_timeout: float | None = None  # wait this long for queues to drain (None: all)

    def __post_init__(self) -> None:
        for name in ("max_batch_tokens", "max_batch_requests", "max_client_batch_size",
                     "payload_limit"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} {getattr(self, name)}: must be >= 1")
        if self.max_concurrent_requests < 0:
            raise ConfigError(f"--max-concurrent-requests {self.max_concurrent_requests}: "
                              f"must be >= 0")


def infer_task(model_dir: str | os.PathLike[str]) -> str:
    """The task a model directory implies (`zhplm.backends.model_task`: an export's recorded
    task, else its `config.json` architectures; a bare encoder -> feature-extraction)."""
    from zhplm.backends.base import EXPORT_FILE, model_task

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file() and not (model_dir / EXPORT_FILE).is_file():
        hint = ""
        if (model_dir / "discriminator").is_dir() or (model_dir / "generator").is_dir():
            hint = (f"; an ELECTRA pair: serve {model_dir / 'discriminator'} (replaced-token "
                    f"detection) or {model_dir / 'generator'} (fill-mask)")
        raise ConfigError(f"--model {model_dir}: no config.json, not a model directory{hint}")
    return model_task(model_dir)


def parse_model_spec(spec: str) -> tuple[str, Path]:
    """`NAME=DIR` or `DIR` (named after the directory) -> (name, directory)."""
    name, sep, path = spec.partition("=")
    if sep and name and "/" not in name and not Path(spec).exists():
        return name, Path(path)
    directory = Path(spec)
    return directory.resolve().name or str(directory), directory


def to_jsonable(value: Any) -> Any:
    """numpy arrays and scalars -> lists and Python numbers, recursively."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


@dataclass
class ServedModel:
    """A loaded pipeline under a name, with the task it serves."""

    name: str
    path: Path
    task: str
    pipeline: Any
    truncate: bool = True
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Requests are measured with a copy of the tokenizer: the pipeline's own is busy
        # (and locked) in the batch worker, and a request must not wait for a batch.
        self._tokenizer = copy.deepcopy(self.pipeline.tokenizer)

    @property
    def max_length(self) -> int:
        """Tokens per input (special tokens included) before truncation applies."""
        return int(self.pipeline.max_length)

    def describe(self) -> dict[str, Any]:
        """What /info shows of this model."""
        described = {"name": self.name, "path": str(self.path), "task": self.task,
                     "backend": self.pipeline.backend.name, "dtype": self.pipeline.dtype,
                     "max_input_length": self.max_length, "truncate": self.truncate}
        labels = getattr(self.pipeline, "labels", None)
        if labels is not None:
            described["labels"] = list(labels)
        return described

    # -- in the event loop, or a request's thread (tokenizer only) -------------------
    def measure(self, inputs: Sequence[Any]) -> tuple[list[int], bool]:
        """Tokens per input (capped at `max_length`) and whether any input is truncated.
        Raises InputError for an empty input, or an over-long one when truncation is off."""
        tokenizer = self._tokenizer
        if self.task == "question-answering":
            encoded = tokenizer([x["question"] for x in inputs], [x["context"] for x in inputs])
            return [len(ids) for ids in encoded["input_ids"]], False  # windows, never cut
        firsts = [x if isinstance(x, str) else x["text"] for x in inputs]
        seconds = [None if isinstance(x, str) else x.get("text_pair") for x in inputs]
        for i, (a, b) in enumerate(zip(firsts, seconds, strict=True)):
            if not a.strip() or (b is not None and not b.strip()):
                raise InputError(f"input {i} is empty; pass text with at least one character")
        lengths = [0] * len(inputs)
        singles = [i for i, b in enumerate(seconds) if b is None]
        pairs = [i for i, b in enumerate(seconds) if b is not None]
        if singles:
            encoded = tokenizer([firsts[i] for i in singles])["input_ids"]
            for i, ids in zip(singles, encoded, strict=True):
                lengths[i] = len(ids)
        if pairs:
            encoded = tokenizer([firsts[i] for i in pairs], [seconds[i] for i in pairs])
            for i, ids in zip(pairs, encoded["input_ids"], strict=True):
                lengths[i] = len(ids)
        limit = self.max_length
        for i, n in enumerate(lengths):
            if n > limit and not self.truncate:
                raise InputError(f"input {i} has {n} tokens, more than the {limit} this "
                                 f"server accepts (--max-input-length); shorten it (the "
                                 f"server runs with --no-truncate)")
        return [min(n, limit) for n in lengths], any(n > limit for n in lengths)

    def tokenize(self, texts: Sequence[str], add_special_tokens: bool = True
                 ) -> list[list[dict[str, Any]]]:
        """Tokens of each text as TEI's /tokenize gives them: id, text, special, and the
        character span start/stop in the text (None for special tokens)."""
        tokenizer = self._tokenizer
        encoded = tokenizer(list(texts), add_special_tokens=add_special_tokens,
                            return_offsets_mapping=True, return_special_tokens_mask=True)
        out = []
        for ids, offsets, special in zip(encoded["input_ids"], encoded["offset_mapping"],
                                         encoded["special_tokens_mask"], strict=True):
            pieces = tokenizer.convert_ids_to_tokens(ids) if ids else []
            out.append([{"id": i, "text": piece, "special": bool(s),
                         "start": None if s else start, "stop": None if s else stop}
                        for i, piece, (start, stop), s in zip(ids, pieces, offsets, special,
                                                              strict=True)])
        return out

    # -- in the batch worker's thread ---------------------------------------------------
    def run(self, inputs: list[Any], options: dict[str, Any]) -> list[Any]:
        """The pipeline over a list of inputs: one JSON-ready result per input."""
        pipe = self.pipeline
        if self.task == "feature-extraction":
            vectors = pipe(inputs, pooling=options.get("pooling", "mean"),
                           normalize=options.get("normalize", True))
            return [row.tolist() for row in vectors]
        if self.task == "fill-mask":
            out = pipe(inputs, top_k=options.get("top_k"), targets=options.get("targets"),
                       linguistic=options.get("linguistic", False))
        elif self.task == "text-classification":
            out = pipe(inputs, top_k=options.get("top_k"))
        elif self.task == "token-classification":
            out = pipe(inputs, aggregation_strategy=options.get("aggregation_strategy"))
        elif self.task == "question-answering":
            out = pipe(inputs)
        elif self.task == "replaced-token-detection":
            out = pipe(inputs, threshold=options.get("threshold"))
        else:  # pragma: no cover - HEAD_OF_TASK is closed
            raise ConfigError(f"unknown task {self.task}")
        return to_jsonable(out)


def _serves_linguistic(directory: Path, settings: Settings) -> bool:
    """Whether a fill-mask model has LERT's heads and runs on torch (they need PyTorch)."""
    from zhplm.backends.base import EXPORT_FILE
    from zhplm.modeling.lert_heads import LinguisticHeads

    on_torch = settings.backend == "torch" or (
        settings.backend is None and not (directory / EXPORT_FILE).is_file())
    return on_torch and LinguisticHeads.has_heads(directory)


def load_models(specs: Sequence[str], settings: Settings) -> list[ServedModel]:
    """Load each `--model` (`DIR` or `NAME=DIR`) with the pipeline its directory implies."""
    from zhplm.pipelines import pipeline

    if not specs:
        raise ConfigError("give at least one --model DIR (or NAME=DIR)")
    models: list[ServedModel] = []
    for spec in specs:
        name, directory = parse_model_spec(spec)
        if any(m.name == name for m in models):
            raise ConfigError(f"--model {spec}: the name {name!r} is taken; name it "
                              f"(--model NAME=DIR)")
        if not directory.is_dir():
            raise ConfigError(f"--model {spec}: {directory} is not a directory")
        task = infer_task(directory)
        options: dict[str, Any] = {}
        if task == "fill-mask" and _serves_linguistic(directory, settings):
            options["linguistic"] = True  # LERT: requests may ask for POS / NER / DEP
        pipe = pipeline(task, model=directory, dtype=settings.dtype, backend=settings.backend,
                        truncate=settings.truncate, **options)
        if settings.max_input_length is not None:
            if settings.max_input_length < 3:
                raise ConfigError("--max-input-length must be >= 3 (two special tokens + one)")
            pipe.max_length = min(pipe.max_length, settings.max_input_length)
            if task == "question-answering":
                pipe.settings["max_seq_length"] = min(pipe.settings["max_seq_length"],
                                                      pipe.max_length)
        models.append(ServedModel(name, directory, task, pipe, truncate=settings.truncate))
    return models
