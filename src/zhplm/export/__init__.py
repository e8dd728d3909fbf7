"""Model export: `export_onnx` (ONNX graph + config + tokenizer, validated against PyTorch).

Imported lazily so `import zhplm.export` does not load torch or onnxruntime.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ExportValidationError", "export_onnx"]


def __getattr__(name: str) -> Any:
    if name == "export_onnx":
        from zhplm.export.onnx import export_onnx
        return export_onnx
    if name == "ExportValidationError":
        from zhplm.export.validation import ExportValidationError
        return ExportValidationError
    raise AttributeError(f"module 'zhplm.export' has no attribute {name!r}")
