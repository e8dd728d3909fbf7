"""Export a model directory to ONNX, validated against PyTorch on real text.

`export_onnx(MODEL_DIR, OUT, task=...)` loads the directory through `modeling.auto.load_model`
with the head the task needs, wraps it in a small module that returns exactly optimum's
outputs for that task (`last_hidden_state`; `logits`; `start_logits` + `end_logits`), exports
it with inputs `input_ids`, `attention_mask`, `token_type_ids` (int64, dynamic axes
`batch_size` and `sequence_length`), and then runs PyTorch and onnxruntime
(CPUExecutionProvider) side by side on real sentences at batch 1/3/8 x length 5/37/128
(`export.validation`). Any output further than `atol` from PyTorch raises
`ExportValidationError` with the table of max diffs; nothing is written then.

OUT is written as a whole (`config.save_dir_atomically`): `model.onnx` (+ `model_int8.onnx`
with `quantize="int8"`), the source `config.json` byte for byte, the tokenizer files, and
`onnx_export.json` (task, opset, inputs/outputs, validation table, sizes, zhplm version).

Exporter path: the TorchScript exporter (`torch.onnx.export(..., dynamo=False)`), chosen
after trying both on torch 2.13:

* the dynamo exporter (torch.export + onnxscript, torch's default) cannot export the model as
  it is: `modeling.bert.attention_bias` skips the mask when nothing is padded
  (`if bool(mask.all())`, so SDPA takes its fastest kernel), a data-dependent branch that
  torch.export refuses (`GuardOnDataDependentSymNode`). It exports correctly only with that
  function patched out, and then took 12.5 s on MiniLM-L6 against 3.5 s;
* the TorchScript exporter traces the branch taken by the example, so the example batch
  always has a padded row: the trace then holds the masked path, which is also exact when
  nothing is padded. Dynamic axes come out as the symbolic `batch_size` / `sequence_length`
  (the position-embedding slice and the head reshapes follow `input_ids.shape`), and SDPA
  with the boolean padding mask becomes MatMul/Softmax with an additive mask (opset >= 14).
  Validation at shapes unlike the example's (2 x 16), with and without padding, matched to
  ~5e-6 on MiniLM.

The TorchScript exporter is deprecated in torch; when it goes, the dynamo path needs the
mask branch made export-friendly in `modeling/bert.py` (e.g. under `torch.compiler.
is_exporting()`).

`optimize="O1"|"O2"`: onnxruntime's transformer optimizer (`model_type="bert"`, the config's
heads and hidden size, `opt_level` 1 or 2) rewrites `model.onnx`; the fused graph is validated
the same way (the raw export first, so an error says which step broke).
`quantize="int8"`: `quantize_dynamic` (per channel, QInt8 weights, `reduce_range` unless the
CPU has VNNI / AMX-INT8) writes `model_int8.onnx`, which is checked to run; its diffs are
recorded, not enforced. Its quality is then measured against `model.onnx` on real held-out
text through the zhplm pipelines (`export.quality`: fill-mask top-1 agreement, cosine,
label agreement, ...; `calibration_text=FILE` to use your own texts) and saved as
`int8_quality`; a miss of the targets is reported (`verdict`), not raised.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from zhplm.backends.base import (
    EXPORT_FILE,
    HEAD_OF_TASK,
    ONNX_FILE,
    ONNX_INT8_FILE,
    OUTPUT_NAMES,
    servable_tasks,
)
from zhplm.config import CONFIG_NAME, ModelConfig, atomic_write_text, save_dir_atomically
from zhplm.errors import ConfigError, ZhplmError
from zhplm.export.validation import (
    INPUT_NAMES,
    ExportValidationError,
    compare,
    format_table,
    has_cjk,
    validation_batches,
    worst,
)

FEATURE_EXTRACTION = "feature-extraction"
FILL_MASK = "fill-mask"
TEXT_CLASSIFICATION = "text-classification"
TOKEN_CLASSIFICATION = "token-classification"
REPLACED_TOKEN_DETECTION = "replaced-token-detection"

# task -> (model head, output names): the pipelines' tasks and optimum's output names
TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    task: (head, OUTPUT_NAMES[head]) for task, head in HEAD_OF_TASK.items()}
OPTIMIZE_LEVELS = {"none": 0, "O1": 1, "O2": 2}
QUANTIZE_KINDS = ("int8",)
MODEL_FILE = ONNX_FILE
INT8_FILE = ONNX_INT8_FILE
REPORT_FILE = EXPORT_FILE
EXPORT_EXAMPLE = (2, 16)  # batch, length of the traced example: unlike every checked shape
MIN_OPSET = 14  # scaled_dot_product_attention has a TorchScript symbolic from opset 14


def resolve_task(model_dir: Path, config: ModelConfig, task: str | None) -> str:
    """`task`, checked against what the directory can serve, or the default one."""
    if task is not None and task not in TASKS:
        raise ConfigError(f"task {task!r} is not an ONNX export task; choose one of: "
                          f"{', '.join(TASKS)}")
    tasks = servable_tasks(model_dir, config)
    if task is None:
        return tasks[0] if tasks else FEATURE_EXTRACTION
    if task not in tasks:
        architectures = ", ".join(config.extra.get("architectures") or []) or "no architectures"
        raise ConfigError(
            f"{model_dir} ({config.model_type}, {architectures}) cannot be exported for "
            f"task {task!r}; it can serve: {', '.join(tasks) or 'nothing'}. "
            + ("Replaced-token detection needs an ELECTRA discriminator directory. "
               if task == REPLACED_TOKEN_DETECTION else "")
            + "For a task head the directory does not hold, fine-tune it first "
              "(`zhplm finetune`) and export the fine-tuned directory")
    return task


def _import_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise ZhplmError(f"ONNX export needs the onnx and onnxruntime packages ({exc}); "
                         f"install them: pip install 'onnx>=1.16' 'onnxruntime>=1.18'") from None
    return onnx, onnxruntime


class TaskGraph(nn.Module):
    """The loaded model, returning exactly `output_names` (fp32) as the graph's outputs."""

    def __init__(self, model: nn.Module, output_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.output_names = tuple(output_names)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor
                ) -> Tensor | tuple[Tensor, ...]:
        out = self.model(input_ids, attention_mask, token_type_ids)
        tensors = tuple(getattr(out, name).float() for name in self.output_names)
        return tensors[0] if len(tensors) == 1 else tensors


def output_axes(task: str, name: str) -> dict[int, str]:
    """Dynamic axes of an output: [B] + [S] unless the output is per sequence."""
    if task == TEXT_CLASSIFICATION:
        return {0: "batch_size"}
    return {0: "batch_size", 1: "sequence_length"}


def output_shape(task: str, name: str, config: ModelConfig, num_labels: int | None
                 ) -> list[str | int]:
    """The declared shape of an output (symbolic dims by name)."""
    if task == FEATURE_EXTRACTION:
        return ["batch_size", "sequence_length", config.hidden_size]
    if task == FILL_MASK:
        return ["batch_size", "sequence_length", config.vocab_size]
    if task == TEXT_CLASSIFICATION:
        return ["batch_size", num_labels or 0]
    if task == TOKEN_CLASSIFICATION:
        return ["batch_size", "sequence_length", num_labels or 0]
    return ["batch_size", "sequence_length"]


def cpu_has_vnni(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU has int8 dot-product instructions (avx512_vnni / avx_vnni / amx_int8);
    without them onnxruntime's dynamic quantization needs `reduce_range` (7-bit weights)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def _session(path: Path, onnxruntime: Any) -> Any:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options,
                                        providers=["CPUExecutionProvider"])


def _onnx_runner(session: Any, output_names: Sequence[str]) -> Any:
    def run(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return session.run(list(output_names), inputs)
    return run


def _torch_runner(graph: Any) -> Any:
    def run(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            out = graph(*(torch.from_numpy(inputs[name]) for name in INPUT_NAMES))
        out = out if isinstance(out, tuple) else (out,)
        return [t.detach().cpu().numpy() for t in out]
    return run


def _validate(path: Path, step: str, onnxruntime: Any, torch_run: Any,
              output_names: Sequence[str], batches: list[Any], atol: float
              ) -> dict[str, dict[str, float]]:
    """Compare `path` with PyTorch; raise ExportValidationError beyond `atol`."""
    try:
        session = _session(path, onnxruntime)
        table = compare(torch_run, _onnx_runner(session, output_names), output_names, batches)
    except ExportValidationError:
        raise
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ExportValidationError(f"{step}: onnxruntime cannot run {path.name}: {exc}"
                                    ) from exc
    if not worst(table) <= atol:
        raise ExportValidationError(
            f"{step}: the ONNX graph differs from PyTorch by more than atol={atol:g} "
            f"(max |onnx - torch| = {worst(table):.3g}); nothing was written.\n"
            f"{format_table(table, atol)}\n"
            + ("Try --optimize none (the fusions changed the numbers) or "
               if "optimiz" in step else "Try ")
            + "another --opset; raise --atol only if the difference is acceptable", table)
    return table


def _export_graph(graph: Any, path: Path, task: str, output_names: Sequence[str],
                  opset: int, tokenizer_batch: dict[str, np.ndarray]) -> None:
    """torch.onnx.export (TorchScript path; see the module docstring)."""
    example = tuple(torch.from_numpy(tokenizer_batch[name]) for name in INPUT_NAMES)
    axes = {0: "batch_size", 1: "sequence_length"}
    dynamic_axes: dict[str, dict[int, str]] = {name: axes for name in INPUT_NAMES}
    dynamic_axes.update({name: output_axes(task, name) for name in output_names})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the traced mask branch
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(graph, example, str(path), input_names=list(INPUT_NAMES),
                          output_names=list(output_names), dynamic_axes=dynamic_axes,
                          opset_version=opset, do_constant_folding=True, dynamo=False)


def _optimize(path: Path, level: int, config: ModelConfig) -> dict[str, int]:
    """onnxruntime's transformer fusions, in place; returns the fused operators' counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimized = optimize_model(str(path), model_type="bert",
                                   num_heads=config.num_attention_heads,
                                   hidden_size=config.hidden_size, opt_level=level,
                                   use_gpu=False)
    tmp = path.with_name(f".{path.name}.optimized")
    optimized.save_model_to_file(str(tmp))
    os.replace(tmp, path)
    stats = optimized.get_fused_operator_statistics() or {}
    return {op: int(n) for op, n in stats.items() if n}


def _quantize(src: Path, dst: Path) -> bool:
    """Dynamic int8 quantization; returns the `reduce_range` used."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    reduce_range = not cpu_has_vnni()
    root = logging.getLogger()
    root.addFilter(_no_preprocess_advice)  # advice for static quantization, not ours
    try:
        quantize_dynamic(str(src), str(dst), per_channel=True, reduce_range=reduce_range,
                         weight_type=QuantType.QInt8,
                         # fused contrib ops (--optimize) have no ONNX shape inference
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.removeFilter(_no_preprocess_advice)
    return reduce_range


def _no_preprocess_advice(record: logging.LogRecord) -> bool:
    """Drop onnxruntime's "Please consider to run pre-processing" warning."""
    return not record.getMessage().startswith("Please consider to run pre-processing")


def _copy_source_files(model_dir: Path, out: Path) -> list[str]:
    """config.json and the tokenizer files, unchanged."""
    from zhplm.modeling.pretrained import TOKENIZER_FILES

    copied = []
    for name in (CONFIG_NAME, *TOKENIZER_FILES):
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, out / name)
            copied.append(name)
    return copied


def export_onnx(model_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                task: str | None = None, opset: int = 17, optimize: str = "none",
                quantize: str | None = None, atol: float = 1e-4,
                calibration_text: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Export `model_dir` for `task` to `out_dir` (written whole, or not at all) and return
    the report also saved as `onnx_export.json`. With `quantize="int8"` the int8 model is
    compared with fp32 on held-out text (`calibration_text`: a file, one text per line;
    default the built-in corpus's test split) and the result saved as `int8_quality`.
    Raises `ConfigError` for a task the model
    cannot serve or a bad option, `ExportValidationError` when onnxruntime's outputs are
    further than `atol` from PyTorch's."""
    import zhplm
    from zhplm.modeling.auto import load_model
    from zhplm.modeling.heads import labels_of
    from zhplm.tokenization import Tokenizer

    model_dir, out = Path(model_dir), Path(out_dir)
    if optimize not in OPTIMIZE_LEVELS:
        raise ConfigError(f"optimize={optimize!r}: choose one of {', '.join(OPTIMIZE_LEVELS)}")
    if quantize is not None and quantize not in QUANTIZE_KINDS:
        raise ConfigError(f"quantize={quantize!r}: choose int8 or leave it unset")
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ConfigError(f"opset={opset!r}: the export needs opset >= {MIN_OPSET} "
                          f"(scaled_dot_product_attention); 17 is the default")
    if not atol >= 0:
        raise ConfigError(f"atol={atol!r} must be >= 0")
    if calibration_text is not None:
        if quantize is None:
            raise ConfigError("--calibration-text is the text int8 is judged on; add "
                              "--quantize int8 (or drop --calibration-text)")
        from zhplm.export.quality import read_text_file

        read_text_file(calibration_text)  # a bad file fails before the export
    if model_dir.resolve().is_relative_to(out.resolve()):
        raise ConfigError(f"--out {out} is or holds the model directory {model_dir}; the "
                          f"export replaces OUT as a whole: pick a new directory")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and
                                               not (out / REPORT_FILE).is_file())):
        raise ConfigError(f"--out {out} exists and is not an earlier export (no "
                          f"{REPORT_FILE}); the export replaces OUT as a whole: pick a new "
                          f"directory, or remove it first")
    _, onnxruntime = _import_onnx()

    config = ModelConfig.from_pretrained(model_dir)
    task = resolve_task(model_dir, config, task)
    head, output_names = TASKS[task]
    model = load_model(model_dir, head)
    model.float().eval()
    tokenizer = Tokenizer.from_pretrained(model_dir)
    graph = TaskGraph(model, output_names).eval()
    num_labels = len(labels_of(config)) if head in ("sequence-classification",
                                                    "token-classification") else None
    batches = validation_batches(tokenizer, config.max_position_embeddings)
    example = validation_batches(tokenizer, config.max_position_embeddings,
                                 batch_sizes=(EXPORT_EXAMPLE[0],),
                                 lengths=(EXPORT_EXAMPLE[1],))[0][1]
    torch_run = _torch_runner(graph)
    report: dict[str, Any] = {
        "task": task,
        "opset": opset,
        "optimize": optimize,
        "quantize": quantize,
        "exporter": f"torch.onnx.export(dynamo=False), torch {torch.__version__}",
        "inputs": [{"name": name, "dtype": "int64", "shape": ["batch_size", "sequence_length"]}
                   for name in INPUT_NAMES],
        "outputs": [{"name": name, "dtype": "float32",
                     "shape": output_shape(task, name, config, num_labels)}
                    for name in output_names],
        "source": {"model_dir": str(model_dir.resolve()), "model_type": config.model_type,
                   "architectures": config.extra.get("architectures") or [],
                   "head": head, "class": type(model).__name__},
        "zhplm_version": zhplm.__version__,
    }

    def save(tmp: Path) -> None:
        path = tmp / MODEL_FILE
        _export_graph(graph, path, task, output_names, opset, example)
        validation: dict[str, Any] = {
            "atol": atol, "provider": "CPUExecutionProvider",
            "shapes": [label for label, _ in batches],
            "texts": "zh+en" if has_cjk(tokenizer) else "en",
            "max_abs_diff": _validate(path, "export", onnxruntime, torch_run, output_names,
                                      batches, atol),
        }
        if optimize != "none":
            validation["max_abs_diff_before_optimize"] = validation.pop("max_abs_diff")
            report["fused_operators"] = _optimize(path, OPTIMIZE_LEVELS[optimize], config)
            validation["max_abs_diff"] = _validate(
                path, f"--optimize {optimize} (onnxruntime transformer optimizer)",
                onnxruntime, torch_run, output_names, batches, atol)
        report["validation"] = validation
        _check_model(path)
        sizes = {MODEL_FILE: path.stat().st_size}
        copied = _copy_source_files(model_dir, tmp)  # the pipelines below read them
        if quantize == "int8":
            int8 = tmp / INT8_FILE
            reduce_range = _quantize(path, int8)
            sizes[INT8_FILE] = int8.stat().st_size
            report["quantization"] = {"method": "quantize_dynamic", "weight_type": "QInt8",
                                      "per_channel": True, "reduce_range": reduce_range}
            report["validation"]["int8"] = _int8_check(int8, onnxruntime, torch_run,
                                                       output_names, batches)
            from zhplm.export.quality import int8_quality

            report["int8_quality"] = int8_quality(tmp, task, calibration_text)
        report["sizes"] = sizes
        report["files"] = sorted([*copied, *sizes, REPORT_FILE])
        atomic_write_text(tmp / REPORT_FILE,
                          json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        _readable(tmp)

    save_dir_atomically(save, out)
    return report


def _readable(directory: Path) -> None:
    """Give the directory and its files the umask's permissions (temp dirs and files are
    created private)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for path in directory.iterdir():
        os.chmod(path, 0o666 & ~umask)


def _check_model(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise ExportValidationError(f"{path.name} fails onnx.checker: {exc}") from exc


def _int8_check(path: Path, onnxruntime: Any, torch_run: Any, output_names: Sequence[str],
                batches: list[Any]) -> dict[str, Any]:
    """The int8 model must load and run at every shape; its diffs are recorded only."""
    try:
        session = _session(path, onnxruntime)
        table = compare(torch_run, _onnx_runner(session, output_names), output_names, batches)
    except Exception as exc:
        raise ExportValidationError(f"{path.name}: the int8 model does not run in "
                                    f"onnxruntime: {exc}") from exc
    return {"runs": True, "max_abs_diff_not_checked": table}
