"""Where a pipeline's model runs: PyTorch or ONNX Runtime, behind one small interface.

A backend takes token arrays and gives named output arrays (`Backend.run`); pipelines build
inputs and read outputs and never touch `torch.nn.Module`. `load_backend(DIR, head)` picks
ONNX Runtime for a directory exported by `zhplm export onnx` (it holds `model.onnx`) and
PyTorch for a model directory; `backend="torch" | "onnxruntime"` chooses explicitly.
"""

from zhplm.backends.base import (
    HEAD_OF_TASK,
    ONNX_FILE,
    ONNX_INT8_FILE,
    OUTPUT_NAMES,
    Backend,
    is_onnx_dir,
    load_backend,
)

__all__ = ["HEAD_OF_TASK", "ONNX_FILE", "ONNX_INT8_FILE", "OUTPUT_NAMES", "Backend",
           "is_onnx_dir", "load_backend"]
