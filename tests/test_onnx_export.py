"""ONNX export: every task's graph matches PyTorch on real text at batch 1/3/8 x length
5/37/128, the output directory loads in onnx / onnxruntime / transformers / zhplm, and bad
requests or a failed validation are errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
import onnxruntime  # noqa: E402

from zhplm.config import electra_preset, preset  # noqa: E402
from zhplm.errors import ConfigError  # noqa: E402
from zhplm.export import onnx as onnx_export  # noqa: E402
from zhplm.export.onnx import export_onnx  # noqa: E402
from zhplm.export.validation import ExportValidationError, validation_batches  # noqa: E402
from zhplm.modeling import BertForMaskedLM  # noqa: E402
from zhplm.modeling.electra import (  # noqa: E402
    ElectraForMaskedLM,
    ElectraForPreTraining,
    ElectraForQuestionAnswering,
    ElectraForSequenceClassification,
    ElectraForTokenClassification,
    ElectraModel,
)
from zhplm.modeling.heads import (  # noqa: E402
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    with_labels,
)
from zhplm.tokenization import Tokenizer  # noqa: E402

ATOL = 1e-4
SHAPES = [f"{b}x{s}" for s in (5, 37, 128) for b in (1, 3, 8)]
LABELS = {3: ["neg", "neu", "pos"], 5: ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]}


def _save(model: torch.nn.Module, tokenizer: Tokenizer, out: Path) -> Path:
    model.save_pretrained(out, tokenizer=tokenizer)
    return out


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory, zh_vocab_dir: Path) -> dict[str, Path]:
    """zhplm-initialised tiny BERT / ELECTRA directories with the zh vocab, one per head."""
    root = tmp_path_factory.mktemp("onnx_models")
    tokenizer = Tokenizer.from_pretrained(zh_vocab_dir)
    sizes = {"vocab_size": tokenizer.vocab_size, "pad_token_id": tokenizer.pad_token_id}
    bert = preset("tiny", **sizes)
    disc, gen = electra_preset("electra-tiny", **sizes)
    torch.manual_seed(0)
    return {
        "bert-mlm": _save(BertForMaskedLM(bert), tokenizer, root / "bert-mlm"),
        "bert-cls": _save(BertForSequenceClassification(with_labels(bert, LABELS[3])),
                          tokenizer, root / "bert-cls"),
        "bert-tok": _save(BertForTokenClassification(with_labels(bert, LABELS[5])),
                          tokenizer, root / "bert-tok"),
        "bert-qa": _save(BertForQuestionAnswering(bert), tokenizer, root / "bert-qa"),
        "electra-disc": _save(ElectraForPreTraining(disc), tokenizer, root / "electra-disc"),
        "electra-cls": _save(ElectraForSequenceClassification(with_labels(disc, LABELS[3])),
                             tokenizer, root / "electra-cls"),
        "electra-tok": _save(ElectraForTokenClassification(with_labels(disc, LABELS[5])),
                             tokenizer, root / "electra-tok"),
        "electra-qa": _save(ElectraForQuestionAnswering(disc), tokenizer, root / "electra-qa"),
        "electra-gen": _save(ElectraForMaskedLM(gen), tokenizer, root / "electra-gen"),
        "electra-enc": _save(ElectraModel(disc), tokenizer, root / "electra-enc"),
    }


@pytest.fixture(scope="module")
def minilm_export(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path
                  ) -> tuple[Path, dict]:
    """The real MiniLM-L6 exported once (default task, int8 too)."""
    out = tmp_path_factory.mktemp("minilm_onnx") / "onnx"
    return out, export_onnx(minilm_dir, out, quantize="int8")


def _check_dir(out: Path, report: dict, task: str, outputs: dict[str, list]) -> None:
    """Files, onnx checker, symbolic axes, validation table, HF/zhplm loading."""
    assert {"model.onnx", "config.json", "vocab.txt", "onnx_export.json"} <= {
        p.name for p in out.iterdir()}
    saved = json.loads((out / "onnx_export.json").read_text(encoding="utf-8"))
    assert saved == report
    assert report["task"] == task and report["opset"] == 17
    for key in ("inputs", "outputs", "source", "validation", "zhplm_version", "optimize",
                "quantize"):
        assert key in report
    model = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(model)
    graph_inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
                    for i in model.graph.input}
    assert graph_inputs == {name: ["batch_size", "sequence_length"]
                            for name in ("input_ids", "attention_mask", "token_type_ids")}
    for i in model.graph.input:
        assert i.type.tensor_type.elem_type == onnx.TensorProto.INT64
    graph_outputs = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
                     for o in model.graph.output}
    assert graph_outputs == outputs
    table = report["validation"]["max_abs_diff"]
    assert set(table) == set(outputs)
    for name, row in table.items():
        assert list(row) == SHAPES
        assert max(row.values()) <= ATOL, (name, row)
    # the copied config and tokenizer load where users load them
    transformers = pytest.importorskip("transformers")
    assert transformers.AutoConfig.from_pretrained(out).model_type in ("bert", "electra")
    assert Tokenizer.from_pretrained(out).vocab_size > 0


def _run(out: Path, name: str, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


def test_feature_extraction_minilm_and_int8(minilm_export: tuple[Path, dict],
                                            minilm_dir: Path) -> None:
    out, report = minilm_export
    _check_dir(out, report, "feature-extraction",
               {"last_hidden_state": ["batch_size", "sequence_length", 384]})
    assert report["validation"]["texts"] == "en"  # the English vocab gets English sentences
    assert (out / "tokenizer.json").read_bytes() == (minilm_dir / "tokenizer.json").read_bytes()
    assert (out / "config.json").read_bytes() == (minilm_dir / "config.json").read_bytes()
    # int8: present, smaller, runs at a shape unlike the export example
    sizes = report["sizes"]
    assert sizes["model_int8.onnx"] < sizes["model.onnx"] / 2
    assert sizes["model_int8.onnx"] == (out / "model_int8.onnx").stat().st_size
    assert report["validation"]["int8"]["runs"]
    tokenizer = Tokenizer.from_pretrained(out)
    _, inputs = validation_batches(tokenizer, 512, batch_sizes=(5,), lengths=(23,))[0]
    (hidden,) = _run(out, "model_int8.onnx", inputs)
    assert hidden.shape == (5, 23, 384) and np.isfinite(hidden).all()


TASK_CASES = [
    ("bert-mlm", "fill-mask", {"logits": ["batch_size", "sequence_length", "V"]}),
    ("bert-cls", "text-classification", {"logits": ["batch_size", 3]}),
    ("bert-tok", "token-classification", {"logits": ["batch_size", "sequence_length", 5]}),
    ("bert-qa", "question-answering", {"start_logits": ["batch_size", "sequence_length"],
                                       "end_logits": ["batch_size", "sequence_length"]}),
    ("electra-disc", "replaced-token-detection", {"logits": ["batch_size", "sequence_length"]}),
    ("electra-cls", "text-classification", {"logits": ["batch_size", 3]}),
    ("electra-tok", "token-classification", {"logits": ["batch_size", "sequence_length", 5]}),
    ("electra-qa", "question-answering", {"start_logits": ["batch_size", "sequence_length"],
                                          "end_logits": ["batch_size", "sequence_length"]}),
    ("electra-gen", "fill-mask", {"logits": ["batch_size", "sequence_length", "V"]}),
    ("electra-enc", "feature-extraction",
     {"last_hidden_state": ["batch_size", "sequence_length", "H"]}),
]


@pytest.mark.parametrize(("name", "task", "outputs"), TASK_CASES, ids=[c[0] for c in TASK_CASES])
def test_task_exports_match_torch(tiny_dirs: dict[str, Path], tmp_path: Path, name: str,
                                  task: str, outputs: dict[str, list]) -> None:
    model_dir = tiny_dirs[name]
    report = export_onnx(model_dir, tmp_path / "onnx", task=task)
    vocab = Tokenizer.from_pretrained(model_dir).vocab_size
    hidden = _config(model_dir).hidden_size
    outputs = {k: [{"V": vocab, "H": hidden}.get(d, d) for d in v] for k, v in outputs.items()}
    _check_dir(tmp_path / "onnx", report, task, outputs)
    assert report["validation"]["texts"] == "zh+en"
    # the default task is the one the directory's architectures imply
    assert onnx_export.resolve_task(model_dir, _config(model_dir), None) == task


def _config(model_dir: Path):
    from zhplm.config import ModelConfig

    return ModelConfig.from_pretrained(model_dir)


def test_optimize_o2_validated(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    report = export_onnx(tiny_dirs["bert-tok"], tmp_path / "onnx", optimize="O2",
                         quantize="int8")
    validation = report["validation"]
    assert report["optimize"] == "O2" and "fused_operators" in report
    assert max(validation["max_abs_diff_before_optimize"]["logits"].values()) <= ATOL
    assert max(validation["max_abs_diff"]["logits"].values()) <= ATOL
    onnx.checker.check_model(str(tmp_path / "onnx" / "model.onnx"))
    assert (tmp_path / "onnx" / "model_int8.onnx").is_file()


def test_unknown_task(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="summarization.*choose one of.*feature-extraction"):
        export_onnx(tiny_dirs["bert-mlm"], tmp_path / "o", task="summarization")
    assert not (tmp_path / "o").exists()


def test_task_the_model_cannot_serve(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        export_onnx(tiny_dirs["bert-mlm"], tmp_path / "o", task="replaced-token-detection")
    message = str(info.value)
    assert str(tiny_dirs["bert-mlm"]) in message
    assert "it can serve: fill-mask, feature-extraction" in message
    assert "ELECTRA discriminator" in message
    with pytest.raises(ConfigError, match="it can serve: replaced-token-detection"):
        export_onnx(tiny_dirs["electra-disc"], tmp_path / "o", task="fill-mask")
    assert not (tmp_path / "o").exists()


def test_out_must_not_hold_the_model_or_other_files(tiny_dirs: dict[str, Path],
                                                   tmp_path: Path) -> None:
    model_dir = tiny_dirs["bert-cls"]
    with pytest.raises(ConfigError, match="holds the model directory"):
        export_onnx(model_dir, model_dir.parent)
    assert (model_dir / "config.json").is_file()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ConfigError, match="not an earlier export"):
        export_onnx(model_dir, other)
    assert (other / "notes.txt").read_text(encoding="utf-8") == "keep me"
    export_onnx(model_dir, tmp_path / "onnx")
    export_onnx(model_dir, tmp_path / "onnx")  # an earlier export is replaced


def test_missing_model_dir(tmp_path: Path) -> None:
    from zhplm.errors import ZhplmError

    with pytest.raises(ZhplmError, match="config.json"):
        export_onnx(tmp_path / "nothing", tmp_path / "o")


def test_validation_failure_is_an_error(tiny_dirs: dict[str, Path], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    real = onnx_export._torch_runner

    def perturbed(graph):  # PyTorch's side drifts by 1e-3: the graph must be refused
        run = real(graph)
        return lambda inputs: [a + 1e-3 for a in run(inputs)]

    monkeypatch.setattr(onnx_export, "_torch_runner", perturbed)
    out = tmp_path / "o"
    with pytest.raises(ExportValidationError) as info:
        export_onnx(tiny_dirs["bert-qa"], out)
    message = str(info.value)
    assert "atol=0.0001" in message and "max |onnx - torch| = 0.001" in message
    assert "start_logits" in message and "end_logits" in message and "8x128" in message
    assert info.value.table["start_logits"]["1x5"] == pytest.approx(1e-3, rel=1e-2)
    assert not out.exists()  # nothing written
    from zhplm.cli import main

    assert main(["export", "onnx", "--model", str(tiny_dirs["bert-qa"]), "--out",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert "start_logits" in err and "1.0e-03!" in err
    assert not out.exists()


def test_cli_export(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cli"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "zhplm", "export", "onnx", "--model",
         str(tiny_dirs["bert-mlm"]), "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "as fill-mask" in result.stdout
    assert "logits" in result.stdout and "8x128" in result.stdout
    assert (out / "model.onnx").is_file()
    assert json.loads((out / "onnx_export.json").read_text(encoding="utf-8"))["task"] == \
        "fill-mask"


def test_vnni_detection(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu sse avx2 avx512f\n", encoding="utf-8")
    assert not onnx_export.cpu_has_vnni(str(cpuinfo))
    cpuinfo.write_text("flags\t\t: fpu avx2 avx_vnni\n", encoding="utf-8")
    assert onnx_export.cpu_has_vnni(str(cpuinfo))
