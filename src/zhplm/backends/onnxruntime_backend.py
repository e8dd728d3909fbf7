"""ONNX Runtime backend: a directory from `zhplm export onnx`, on the CPU provider."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from zhplm.backends.base import (
    HEAD_OF_TASK,
    ONNX_FILE,
    ONNX_INT8_FILE,
    OUTPUT_NAMES,
    exported_task,
)
from zhplm.config import ModelConfig
from zhplm.errors import CheckpointError, ConfigError, InputError


class OnnxRuntimeBackend:
    """An `onnxruntime.InferenceSession` over `model.onnx` (`dtype="int8"`: over
    `model_int8.onnx`) whose outputs carry optimum's names."""

    name = "onnxruntime"

    def __init__(self, model_dir: str | os.PathLike[str], head: str, dtype: str = "auto",
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        model_dir = Path(model_dir)
        if dtype not in ("auto", "fp32", "int8"):
            raise InputError(f"dtype={dtype!r}: an ONNX directory runs in fp32 (model.onnx) or "
                             f"int8 (model_int8.onnx); bf16 needs the torch backend")
        self.dtype = "int8" if dtype == "int8" else "fp32"
        self.head = head
        self.config = ModelConfig.from_pretrained(model_dir)
        task = exported_task(model_dir)
        if task is not None and HEAD_OF_TASK.get(task) != head:
            wanted = next((t for t, h in HEAD_OF_TASK.items() if h == head), head)
            raise ConfigError(f"{model_dir} was exported for {task}; export the model again "
                              f"with --task {wanted} for this pipeline")
        path = model_dir / (ONNX_INT8_FILE if self.dtype == "int8" else ONNX_FILE)
        if not path.is_file():
            raise ConfigError(f"{path} does not exist; export with zhplm export onnx "
                              f"--quantize int8" if self.dtype == "int8" else
                              f"{path} does not exist; export with zhplm export onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or _torch_threads()
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise CheckpointError(f"{path}: ONNX Runtime cannot load it ({exc}); export the "
                                  f"model again") from None
        self.inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        missing = [n for n in OUTPUT_NAMES[head] if n not in outputs]
        if missing:
            raise ConfigError(f"{path} has outputs {outputs}, not {', '.join(missing)}; this "
                              f"pipeline needs a {head} export")
        self.path = path

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray,
            token_type_ids: np.ndarray, positions: np.ndarray | None = None
            ) -> dict[str, np.ndarray]:
        given = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "token_type_ids": token_type_ids}
        feed = {name: np.ascontiguousarray(given[name], dtype=np.int64) for name in self.inputs}
        names = list(OUTPUT_NAMES[self.head])
        arrays = dict(zip(names, self.session.run(names, feed), strict=True))
        if positions is not None:
            arrays = {k: v.reshape(-1, *v.shape[2:])[positions] for k, v in arrays.items()}
        return {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}


def _torch_threads() -> int:
    """The thread count torch would use (OMP_NUM_THREADS, else the cores)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else (os.cpu_count() or 1)
