"""The backend interface, the output names per head, and `load_backend`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from zhplm.config import ModelConfig
from zhplm.errors import ConfigError, InputError
from zhplm.modeling.auto import (
    ENCODER,
    FAMILIES,
    MASKED_LM,
    PRETRAINING,
    QUESTION_ANSWERING,
    REPLACED_TOKEN_DETECTION,
    SEQUENCE_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
    check_role,
    family,
    head_of_architecture,
)

ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model_int8.onnx"
EXPORT_FILE = "onnx_export.json"
BACKENDS = ("torch", "onnxruntime")

# A pipeline task (and `zhplm export onnx --task`) -> the model head it runs.
HEAD_OF_TASK = {
    "feature-extraction": ENCODER,
    "fill-mask": MASKED_LM,
    "text-classification": SEQUENCE_CLASSIFICATION,
    "token-classification": TOKEN_CLASSIFICATION,
    "question-answering": QUESTION_ANSWERING,
    "replaced-token-detection": REPLACED_TOKEN_DETECTION,
}
# The outputs of each head, with optimum's names (those of an exported graph, too).
OUTPUT_NAMES = {
    ENCODER: ("last_hidden_state",),
    MASKED_LM: ("logits",),
    SEQUENCE_CLASSIFICATION: ("logits",),
    TOKEN_CLASSIFICATION: ("logits",),
    QUESTION_ANSWERING: ("start_logits", "end_logits"),
    REPLACED_TOKEN_DETECTION: ("logits",),
}
PER_TOKEN_HEADS = (ENCODER, MASKED_LM, TOKEN_CLASSIFICATION, QUESTION_ANSWERING,
                   REPLACED_TOKEN_DETECTION)


class Backend(Protocol):
    """A model for one head: token arrays in, named float32 arrays out."""

    name: str  # "torch" or "onnxruntime"
    dtype: str  # what it computes in: "fp32", "bf16", "int8"
    head: str
    config: ModelConfig

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray,
            token_type_ids: np.ndarray, positions: np.ndarray | None = None
            ) -> dict[str, np.ndarray]:
        """Outputs by name (`OUTPUT_NAMES[head]`) for int64 `[batch, seq]` inputs.
        `positions` (flat indices into batch x seq) asks for per-token outputs at those
        positions only, as `[len(positions), ...]` (fill-mask reads the masks' rows)."""
        ...


def is_onnx_dir(model_dir: str | os.PathLike[str]) -> bool:
    """Whether `model_dir` is an export of `zhplm export onnx` (holds model.onnx)."""
    return (Path(model_dir) / ONNX_FILE).is_file()


def exported_task(model_dir: Path) -> str | None:
    """The task an ONNX directory was exported for (its onnx_export.json), if recorded."""
    path = model_dir / EXPORT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("task")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not readable JSON ({exc}); export the model again with "
                          f"zhplm export onnx") from None


def load_backend(model_dir: str | os.PathLike[str], head: str, *, backend: str | None = None,
                 dtype: str = "auto", threads: int | None = None,
                 **model_kwargs: Any) -> Backend:
    """The backend that runs `head` of `model_dir`: ONNX Runtime for an exported directory
    (`dtype="int8"` takes its `model_int8.onnx`), PyTorch otherwise; `backend` forces one."""
    model_dir = Path(model_dir)
    if backend is not None and backend not in BACKENDS:
        raise InputError(f"backend={backend!r}; use one of {', '.join(BACKENDS)}")
    onnx = is_onnx_dir(model_dir)
    if backend == "onnxruntime" or (backend is None and onnx):
        if not onnx:
            raise ConfigError(f"{model_dir} has no {ONNX_FILE}; export it first: zhplm export "
                              f"onnx --model {model_dir} --out OUT")
        from zhplm.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model_dir, head, dtype=dtype, threads=threads)
    if dtype == "int8":
        raise InputError("dtype='int8' runs an exported model_int8.onnx; export with zhplm "
                         "export onnx --quantize int8 and pass that directory")
    from zhplm.backends.torch_backend import TorchBackend

    return TorchBackend.from_dir(model_dir, head, dtype=dtype, **model_kwargs)


def task_of_head(head: str, family_name: str) -> str | None:
    """The task a saved head stands for (`pretraining`: BERT's MLM + NSP -> fill-mask,
    ELECTRA's discriminator -> replaced-token-detection)."""
    if head == PRETRAINING:
        return "replaced-token-detection" if family_name == "electra" else "fill-mask"
    return next((task for task, h in HEAD_OF_TASK.items() if h == head), None)


def servable_tasks(model_dir: Path, config: ModelConfig) -> list[str]:
    """The tasks a model directory can serve (and be exported for): its saved head's task,
    then feature-extraction (every tower but an ELECTRA generator has the encoder). A
    directory whose `architectures` zhplm does not know may take any head of its family; a
    head not in the weights is then newly initialised (as the loader warns)."""
    family_name = family(config)
    heads = FAMILIES[family_name]
    architectures = config.extra.get("architectures") or []
    saved = [h for h in map(head_of_architecture, architectures) if h is not None]
    if saved:
        tasks = [task_of_head(h, family_name) for h in saved] + ["feature-extraction"]
    else:
        tasks = [task for task, head in HEAD_OF_TASK.items() if head in heads]
    result = []
    for task in dict.fromkeys(t for t in tasks if t is not None):
        if HEAD_OF_TASK[task] not in heads:
            continue
        try:
            check_role(model_dir, config, HEAD_OF_TASK[task])
        except ConfigError:
            continue
        result.append(task)
    return result


def model_task(model_dir: str | os.PathLike[str]) -> str:
    """The task a directory implies: an ONNX export's recorded task, else the first of
    `servable_tasks` (a bare encoder: feature-extraction)."""
    model_dir = Path(model_dir)
    task = exported_task(model_dir)
    if task in HEAD_OF_TASK:
        return task
    tasks = servable_tasks(model_dir, ModelConfig.from_pretrained(model_dir))
    return tasks[0] if tasks else "feature-extraction"
