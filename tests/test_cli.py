"""The `zhplm` command line: every verb, JSON equal to the Python API, clear errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import transformers

from zhplm import pipeline
from zhplm.cli import build_parser, main


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, zh_vocab_dir):
    out = tmp_path_factory.mktemp("cli") / "tiny"
    assert main(["init", "--preset", "tiny", "--vocab", str(zh_vocab_dir / "vocab.txt"),
                 "--out", str(out), "--seed", "1"]) == 0
    return out


def test_help_lists_every_verb_in_one_line_each():
    result = subprocess.run([sys.executable, "-m", "zhplm", "--help"], capture_output=True,
                            text=True, check=True)
    verbs = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001
    for verb in ("init", "fill-mask", "embed", "build-vocab", "info", "preprocess", "pretrain",
                 "finetune", "evaluate", "classify", "ner", "qa", "plot", "env", "rtd"):
        assert verb in verbs
        line = next(x for x in result.stdout.splitlines() if x.strip().startswith(verb + " "))
        assert len(line.split(verb, 1)[1].strip()) > 10  # a one-line description


def test_init_makes_a_directory_transformers_loads(tiny_dir):
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"} <= names
    model = transformers.BertForMaskedLM.from_pretrained(tiny_dir)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 128
    tokenizer = transformers.BertTokenizer.from_pretrained(tiny_dir)
    assert tokenizer.vocab_size == model.config.vocab_size


def test_info_reports_sizes(tiny_dir, capsys):
    assert main(["info", str(tiny_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layers"] == 2 and info["hidden_size"] == 128
    assert info["vocab_size"] == info["tokenizer_vocab"]
    assert info["architectures"] == ["BertForMaskedLM"]
    assert 1e5 < info["parameters"] < 1e7


def test_fill_mask_json_equals_python_api(tiny_dir, capsys):
    texts = ["今天天气很[MASK]。", "我[MASK]欢[MASK]书。"]
    assert main(["fill-mask", "--model", str(tiny_dir), "--top-k", "3", "--json", *texts]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == pipeline("fill-mask", model=tiny_dir, top_k=3)(texts)
    assert main(["fill-mask", "--model", str(tiny_dir), texts[0]]) == 0
    assert texts[0] in capsys.readouterr().out


def test_embed_json_equals_python_api(tiny_dir, capsys):
    texts = ["我喜欢这本书。", "这本书很无聊。"]
    assert main(["embed", "--model", str(tiny_dir), "--json", *texts]) == 0
    printed = np.asarray(json.loads(capsys.readouterr().out))
    expected = pipeline("feature-extraction", model=tiny_dir)(texts, pooling="mean")
    assert printed.shape == (2, 128)
    assert np.abs(printed - expected).max() <= 1e-6


def test_build_vocab_on_a_file(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("今天天气很好。\n我们去公园散步。\nhello world\n" * 20, encoding="utf-8")
    out = tmp_path / "vocab.txt"
    assert main(["build-vocab", str(corpus), "--size", "200", "--out", str(out),
                 "--min-frequency", "1"]) == 0
    tokens = out.read_text(encoding="utf-8").splitlines()
    assert tokens[:1] == ["[PAD]"] and tokens[100:104] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert "天" in tokens and "hello" in tokens


def test_errors_exit_2_with_a_message_naming_the_input(tmp_path, tiny_dir, capsys):
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["fill-mask", "--model", str(tiny_dir), "没有面具"]) == 2
    assert "no [MASK]" in capsys.readouterr().err
    long_text = "[MASK]" + "好" * 600
    assert main(["fill-mask", "--model", str(tiny_dir), "--no-truncate", long_text]) == 2
    assert "--no-truncate" in capsys.readouterr().err
    assert main(["init", "--preset", "huge", "--vocab", str(tiny_dir), "--out",
                 str(tmp_path / "x")]) == 2
    assert "unknown preset" in capsys.readouterr().err
