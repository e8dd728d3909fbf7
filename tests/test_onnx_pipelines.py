"""Every pipeline on an ONNX export (`zhplm export onnx`) runs on ONNX Runtime and gives what
the torch pipeline gives: same tokens, labels and spans, scores within 1e-4; Chinese and
English uncased, BERT and ELECTRA. Plus backend choice and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from model_helpers import spread_weights, tiny_task_models

from zhplm import pipeline
from zhplm.backends import ONNX_FILE
from zhplm.config import preset
from zhplm.errors import CheckpointError, ConfigError, InputError, ZhplmError
from zhplm.export.onnx import export_onnx
from zhplm.modeling import BertForMaskedLM
from zhplm.modeling.heads import (
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    with_labels,
)
from zhplm.tokenization import Tokenizer

ZH = ["今天天气很好，我们去公园散步。", "这本书的内容非常丰富，值得一读。",
      "江泽民在北京会见了克林顿。"]
MASKED = ["今天天气很[MASK]。", "北京是中国的[MASK]都，我[MASK]欢这里。"]
EN_TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
EN = ["Angela Merkel met Barack Obama in Berlin.", "The new movie is awesome!",
      "I have lived in Paris and London for ten years."]
EN_MASKED = ["The capital of France is [MASK].", "I [MASK] reading books on the train."]
SCORE_TOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory, zh_vocab_dir, minilm_dir) -> dict[str, tuple[Path, Path]]:
    """name -> (torch model dir, its ONNX export)."""
    root = tmp_path_factory.mktemp("onnx_pipes")
    tokenizer = Tokenizer.from_pretrained(zh_vocab_dir)
    tiny = tiny_task_models(tokenizer.vocab_size, tokenizer.pad_token_id)
    en_mlm = BertForMaskedLM.from_pretrained(minilm_dir)
    spread_weights(en_mlm.cls.predictions, 2)
    models = {"fill-mask": (tiny["fill-mask"], tokenizer), "en-fill-mask": (en_mlm, None),
              "token-classification": (tiny["token-classification"], tokenizer),
              "question-answering": (tiny["question-answering"], tokenizer),
              "text-classification": (tiny["electra-text-classification"], tokenizer),
              "replaced-token-detection": (tiny["replaced-token-detection"], tokenizer)}
    # English uncased heads: tiny models over MiniLM's uncased vocab and tokenizer
    en_tok = Tokenizer.from_pretrained(minilm_dir)
    en_config = preset("tiny", vocab_size=en_tok.vocab_size, pad_token_id=en_tok.pad_token_id)
    for name, head, attr in (("en-text-classification", BertForSequenceClassification,
                              "classifier"),
                             ("en-token-classification", BertForTokenClassification,
                              "classifier"),
                             ("en-question-answering", BertForQuestionAnswering,
                              "qa_outputs")):
        labels = ["negative", "positive"] if "text" in name else EN_TAGS
        model = head(with_labels(en_config, labels) if attr == "classifier" else en_config)
        spread_weights(getattr(model, attr), 3)
        models[name] = (model, en_tok)
    out = {}
    for name, (model, tok) in models.items():
        source = model.save_pretrained(root / name, tokenizer=tok)
        task = name.removeprefix("en-")
        export_onnx(source, root / f"{name}-onnx", task=task)
        out[name] = (source, root / f"{name}-onnx")
    out["feature-extraction"] = (minilm_dir, root / "minilm-onnx")
    export_onnx(minilm_dir, root / "minilm-onnx", task="feature-extraction")
    return out


def _both(exported, name: str, task: str, **options):
    source, onnx_dir = exported[name]
    torch_pipe = pipeline(task, model=source, dtype="fp32", **options)
    ort_pipe = pipeline(task, model=onnx_dir, **options)
    assert torch_pipe.backend.name == "torch" and ort_pipe.backend.name == "onnxruntime"
    return torch_pipe, ort_pipe


def _same(a, b, path="result"):
    """Equal structure and values; floats named score (and arrays) within SCORE_TOL."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for key in a:
            _same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert abs(a - b) <= SCORE_TOL, (path, a, b)
    elif isinstance(a, np.ndarray):
        assert a.shape == b.shape and np.abs(a - b).max() <= SCORE_TOL, path
    else:
        assert a == b, (path, a, b)


@pytest.mark.parametrize("name,texts", [("fill-mask", MASKED), ("en-fill-mask", EN_MASKED)])
def test_fill_mask_on_onnx_equals_torch(exported, name, texts):
    torch_pipe, ort_pipe = _both(exported, name, "fill-mask", top_k=5)
    _same(torch_pipe(texts), ort_pipe(texts))
    _same(torch_pipe(texts[0], targets=["好", "大"] if name == "fill-mask" else ["paris"]),
          ort_pipe(texts[0], targets=["好", "大"] if name == "fill-mask" else ["paris"]))


def test_feature_extraction_on_onnx_equals_torch_on_real_minilm(exported):
    torch_pipe, ort_pipe = _both(exported, "feature-extraction", "feature-extraction")
    texts = ["A man is playing a guitar.", "The new movie is awesome!", "hello"]
    _same(torch_pipe(texts), ort_pipe(texts))
    _same(torch_pipe(texts, pooling="mean", normalize=True),
          ort_pipe(texts, pooling="mean", normalize=True))


def test_classification_tagging_qa_rtd_on_onnx_equal_torch(exported):
    torch_pipe, ort_pipe = _both(exported, "text-classification", "text-classification",
                                 top_k=None)
    items = [*ZH, {"text": ZH[0], "text_pair": ZH[1]}]
    _same(torch_pipe(items), ort_pipe(items))
    for strategy in ("none", "simple", "first"):
        torch_pipe, ort_pipe = _both(exported, "token-classification", "token-classification",
                                     aggregation_strategy=strategy)
        _same(torch_pipe(ZH), ort_pipe(ZH))
    torch_pipe, ort_pipe = _both(exported, "question-answering", "question-answering")
    questions = [{"question": "谁在北京？", "context": ZH[2]},
                 {"question": "书怎么样？", "context": ZH[1] * 30}]  # several windows
    _same(torch_pipe(questions), ort_pipe(questions))
    torch_pipe, ort_pipe = _both(exported, "replaced-token-detection", "replaced-token-detection")
    _same(torch_pipe(ZH), ort_pipe(ZH))


def test_english_uncased_heads_on_onnx_equal_torch(exported):
    """Classification, tagging and QA with English uncased tokenization (MiniLM's vocab)."""
    torch_pipe, ort_pipe = _both(exported, "en-text-classification", "text-classification",
                                 top_k=None)
    items = [*EN, {"text": EN[0], "text_pair": EN[1]}]
    _same(torch_pipe(items), ort_pipe(items))
    for strategy in ("none", "simple", "first"):
        torch_pipe, ort_pipe = _both(exported, "en-token-classification",
                                     "token-classification", aggregation_strategy=strategy)
        found = torch_pipe(EN)
        assert any(found)  # the spread head tags something, so spans are compared
        _same(found, ort_pipe(EN))
    torch_pipe, ort_pipe = _both(exported, "en-question-answering", "question-answering")
    questions = [{"question": "Who met Obama?", "context": EN[0]},
                 {"question": "Where?", "context": " ".join(EN) * 20}]  # several windows
    _same(torch_pipe(questions), ort_pipe(questions))


def test_backend_choice_and_errors(exported, tmp_path):
    source, onnx_dir = exported["fill-mask"]
    assert pipeline("fill-mask", model=onnx_dir, backend="onnxruntime").dtype == "fp32"
    with pytest.raises(ConfigError, match="zhplm export onnx"):
        pipeline("fill-mask", model=source, backend="onnxruntime")
    with pytest.raises(ConfigError, match="exported for fill-mask"):
        pipeline("text-classification", model=onnx_dir)
    with pytest.raises(InputError, match="backend="):
        pipeline("fill-mask", model=source, backend="tensorflow")
    with pytest.raises(ConfigError, match="int8"):
        pipeline("fill-mask", model=onnx_dir, dtype="int8")  # not quantized
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in onnx_dir.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    (broken / ONNX_FILE).write_bytes(b"not an onnx graph")
    with pytest.raises(CheckpointError, match=ONNX_FILE):
        pipeline("fill-mask", model=broken)
    (broken / ONNX_FILE).write_bytes((onnx_dir / ONNX_FILE).read_bytes())
    (broken / "config.json").rename(broken / "config.json.bak")  # config alone missing
    with pytest.raises(CheckpointError, match="config.json"):
        pipeline("fill-mask", model=broken)
    (broken / "config.json.bak").rename(broken / "config.json")
    for name in ("vocab.txt", "tokenizer.json"):
        (broken / name).unlink(missing_ok=True)
    with pytest.raises(ZhplmError, match="vocab|tokenizer"):
        pipeline("fill-mask", model=broken)
    (broken / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        pipeline("fill-mask", model=broken)


def _printed_json(capsys, argv: list[str]):
    from zhplm.cli import main

    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_verbs_accept_an_exported_directory(exported, capsys):
    """Every inference verb runs an export on ONNX Runtime and prints what the pipeline
    on that export returns."""
    question, context = "谁在北京？", ZH[2]
    verbs = [  # (export, task, argv after --model DIR, the pipeline call)
        ("fill-mask", "fill-mask", ["--top-k", "3", *MASKED],
         lambda p: p(MASKED, top_k=3)),
        ("text-classification", "text-classification", ZH[:2], lambda p: p(ZH[:2])),
        ("token-classification", "token-classification", ZH, lambda p: p(ZH)),
        ("question-answering", "question-answering", ["--context", context, question],
         lambda p: p([{"question": question, "context": context}])),
        ("replaced-token-detection", "rtd", ZH[:2], lambda p: p(ZH[:2])),
        ("feature-extraction", "embed", ["a short sentence.", "another one here."],
         lambda p: p(["a short sentence.", "another one here."], pooling="mean").tolist()),
    ]
    verb_of = {"text-classification": "classify", "token-classification": "ner",
               "question-answering": "qa"}
    for name, task, rest, call in verbs:
        _, onnx_dir = exported[name]
        verb = verb_of.get(task, task)
        printed = _printed_json(capsys, [verb, "--model", str(onnx_dir), "--json", *rest])
        task_name = "replaced-token-detection" if verb == "rtd" else (
            "feature-extraction" if verb == "embed" else task)
        expected = call(pipeline(task_name, model=onnx_dir))
        assert json.loads(json.dumps(expected, ensure_ascii=False)) == printed, verb
