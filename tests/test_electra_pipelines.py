"""Pipelines and CLI verbs on ELECTRA directories: every number equals transformers' Electra
classes on the same inputs; replaced-token detection; `zhplm init/rtd/info/fill-mask` on a
pair; clear errors for the wrong tower or family."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from model_helpers import spread_weights
from safetensors.torch import load_file

from zhplm import pipeline
from zhplm.cli import main
from zhplm.config import electra_preset, preset
from zhplm.errors import CheckpointError, ConfigError
from zhplm.modeling import BertForMaskedLM, ElectraPretrainingPair
from zhplm.modeling.electra import (
    ElectraForQuestionAnswering,
    ElectraForSequenceClassification,
    ElectraForTokenClassification,
)
from zhplm.modeling.heads import with_labels
from zhplm.tasks.examples import QAExample
from zhplm.tasks.mrc import build_qa_features, postprocess_qa
from zhplm.tokenization import Tokenizer

transformers.logging.set_verbosity_error()

TEXTS = ["今天天气很好。", "这本书的内容非常丰富，值得一读。", "我们在北京hello world见面"]
MASKED = ["今天天气很[MASK]。", "这本书的内容非常丰富，值得一[MASK]。", "北京是中国的[MASK]都。"]
SENTIMENT = ["负面", "正面", "中性"]
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


@pytest.fixture(scope="module")
def tokenizer(zh_vocab_dir) -> Tokenizer:
    return Tokenizer.from_pretrained(zh_vocab_dir)


@pytest.fixture(scope="module")
def configs(tokenizer):
    # embedding_size 64 != hidden 128 (discriminator) / 32 (generator): both project.
    return electra_preset("electra-tiny", vocab_size=tokenizer.vocab_size,
                          pad_token_id=tokenizer.pad_token_id, embedding_size=64)


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory, tokenizer, configs) -> Path:
    torch.manual_seed(0)
    pair = ElectraPretrainingPair(*configs)
    spread_weights(pair.generator.generator_lm_head, 1, 2.0)  # the bias: a peaked distribution
    spread_weights(pair.discriminator.discriminator_predictions.dense_prediction, 2, 0.5)
    return pair.save_pretrained(tmp_path_factory.mktemp("electra") / "pair",
                                tokenizer=tokenizer)


@pytest.fixture(scope="module")
def head_dirs(tmp_path_factory, tokenizer, configs) -> dict[str, Path]:
    discriminator = configs[0]
    root = tmp_path_factory.mktemp("electra_heads")
    torch.manual_seed(3)
    models = {
        "cls": ElectraForSequenceClassification(with_labels(discriminator, SENTIMENT)),
        "ner": ElectraForTokenClassification(with_labels(discriminator, NER_LABELS)),
        "qa": ElectraForQuestionAnswering(discriminator),
    }
    out = {}
    for seed, (name, model) in enumerate(models.items()):
        head = model.qa_outputs if name == "qa" else model.classifier
        spread_weights(head, 10 + seed, 0.3)
        out[name] = model.save_pretrained(root / name, tokenizer=tokenizer)
    return out


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory, tokenizer) -> Path:
    torch.manual_seed(0)
    model = BertForMaskedLM(preset("tiny", vocab_size=tokenizer.vocab_size))
    return model.save_pretrained(tmp_path_factory.mktemp("bert"), tokenizer=tokenizer)


def _hf_tokenizer(model_dir: Path) -> transformers.PreTrainedTokenizerBase:
    return transformers.BertTokenizerFast.from_pretrained(str(model_dir))


# ---- fill-mask on the generator ------------------------------------------------------------
def test_fill_mask_on_the_generator_equals_transformers_logits(pair_dir):
    generator_dir = pair_dir / "generator"
    fill = pipeline("fill-mask", model=generator_dir, top_k=5, dtype="fp32")
    model = transformers.ElectraForMaskedLM.from_pretrained(str(generator_dir))
    hf_tok = _hf_tokenizer(generator_dir)
    batch = fill(MASKED)
    for text, batched in zip(MASKED, batch, strict=True):
        enc = hf_tok(text, return_tensors="pt")
        with torch.inference_mode():
            logits = model(**enc).logits[0]
        position = int((enc["input_ids"][0] == hf_tok.mask_token_id).nonzero())
        scores, tokens = logits[position].softmax(-1).topk(5)
        for result in (fill(text), batched):
            assert [p["token"] for p in result] == tokens.tolist()
            assert [p["token_str"] for p in result] == hf_tok.convert_ids_to_tokens(tokens)
            assert np.allclose([p["score"] for p in result], scores.numpy(), atol=1e-5)
    several = fill("我[MASK]欢这本[MASK]。", top_k=3)
    assert len(several) == 2 and all(len(mask) == 3 for mask in several)


# ---- encoder and fine-tuning heads -----------------------------------------------------------
@pytest.mark.parametrize("which", ["discriminator", "cls"])
def test_feature_extraction_equals_transformers_electra_model(pair_dir, head_dirs, which):
    model_dir = pair_dir / "discriminator" if which == "discriminator" else head_dirs[which]
    extract = pipeline("feature-extraction", model=model_dir, dtype="fp32")
    model = transformers.ElectraModel.from_pretrained(str(model_dir))
    hf_tok = _hf_tokenizer(model_dir)
    vectors = extract(TEXTS)
    for text, ours in zip(TEXTS, vectors, strict=True):
        with torch.inference_mode():
            theirs = model(**hf_tok(text, return_tensors="pt")).last_hidden_state[0].numpy()
        assert ours.shape == theirs.shape == (len(theirs), 128)
        assert np.abs(ours - theirs).max() <= 1e-5
    pooled = extract(TEXTS, pooling="mean")
    assert np.abs(pooled[1] - vectors[1].mean(0)).max() <= 1e-5


def test_text_classification_equals_transformers(head_dirs):
    model_dir = head_dirs["cls"]
    classify = pipeline("text-classification", model=model_dir, dtype="fp32", top_k=None)
    model = transformers.ElectraForSequenceClassification.from_pretrained(str(model_dir))
    hf_tok = _hf_tokenizer(model_dir)
    inputs = [TEXTS[0], {"text": TEXTS[1], "text_pair": "后面很好"}, TEXTS[2]]
    results = classify(inputs)
    for item, ranked in zip(inputs, results, strict=True):
        pair = (item["text"], item["text_pair"]) if isinstance(item, dict) else (item,)
        with torch.inference_mode():
            probs = model(**hf_tok(*pair, return_tensors="pt")).logits.softmax(-1)[0]
        assert [r["label"] for r in ranked] == [SENTIMENT[int(j)] for j in probs.argsort(
            descending=True)]
        ours = {r["label"]: r["score"] for r in ranked}
        for j, label in enumerate(SENTIMENT):
            assert ours[label] == pytest.approx(float(probs[j]), abs=1e-5)
    # Alone, the first text runs unpadded: the same label, a score equal up to fp32 rounding
    # (the GEMM kernels may block a batch of 1 differently from a batch of 3).
    (alone,) = classify(TEXTS[0], top_k=1)
    assert alone["label"] == results[0][0]["label"]
    assert alone["score"] == pytest.approx(results[0][0]["score"], abs=1e-6)


def test_token_classification_equals_transformers(head_dirs):
    model_dir = head_dirs["ner"]
    tagger = pipeline("token-classification", model=model_dir, dtype="fp32",
                      aggregation_strategy="none", ignore_labels=())
    model = transformers.ElectraForTokenClassification.from_pretrained(str(model_dir))
    hf_tok = _hf_tokenizer(model_dir)
    for text, tokens in zip(TEXTS, tagger(TEXTS), strict=True):
        enc = hf_tok(text, return_tensors="pt", return_offsets_mapping=True)
        offsets = enc.pop("offset_mapping")[0].tolist()
        with torch.inference_mode():
            probs = model(**enc).logits.softmax(-1)[0]
        assert [t["index"] for t in tokens] == list(range(1, len(offsets) - 1))
        for t in tokens:
            j = t["index"]
            assert t["entity"] == NER_LABELS[int(probs[j].argmax())]
            assert t["score"] == pytest.approx(float(probs[j].max()), abs=1e-5)
            assert [t["start"], t["end"]] == offsets[j]
    grouped = pipeline("token-classification", model=model_dir)(TEXTS[1])
    for entity in grouped:
        assert TEXTS[1][entity["start"]:entity["end"]] == entity["word"]


def test_question_answering_equals_transformers(head_dirs, tokenizer):
    model_dir = head_dirs["qa"]
    settings = {"max_seq_length": 48, "doc_stride": 16, "max_query_length": 16}
    qa = pipeline("question-answering", model=model_dir, dtype="fp32", **settings)
    context = "北京是中国的首都，也是一座历史悠久的城市。" * 3 + "我们在北京见面，今天天气很好。"
    items = [{"question": "中国的首都是哪里？", "context": context},
             {"question": "天气怎么样？", "context": context}]
    ours = qa(items)
    model = transformers.ElectraForQuestionAnswering.from_pretrained(str(model_dir))
    examples = [QAExample(qid=str(i), question=x["question"], context=x["context"])
                for i, x in enumerate(items)]
    features = build_qa_features(examples, tokenizer, training=False, **settings)
    assert len(features) > len(items)  # several windows per context
    mask = torch.from_numpy(features.attention_mask)
    with torch.inference_mode():
        out = model(input_ids=torch.from_numpy(features.input_ids), attention_mask=mask,
                    token_type_ids=torch.from_numpy(features.token_type_ids))
    starts = out.start_logits.masked_fill(mask == 0, -1e4).numpy()
    ends = out.end_logits.masked_fill(mask == 0, -1e4).numpy()
    theirs = postprocess_qa(examples, features, starts, ends)
    for i, answer in enumerate(ours):
        expected = theirs[str(i)]
        assert (answer["start"], answer["end"], answer["answer"]) == \
            (expected["start"], expected["end"], expected["answer"])
        assert answer["score"] == pytest.approx(expected["score"], abs=1e-5)
        assert context[answer["start"]:answer["end"]] == answer["answer"]


# ---- replaced-token detection ----------------------------------------------------------------
def test_replaced_token_detection_equals_sigmoid_of_transformers_logits(pair_dir):
    discriminator_dir = pair_dir / "discriminator"
    detect = pipeline("replaced-token-detection", model=discriminator_dir, dtype="fp32")
    model = transformers.ElectraForPreTraining.from_pretrained(str(discriminator_dir))
    hf_tok = _hf_tokenizer(discriminator_dir)
    batch = detect(TEXTS)
    flags = set()
    for text, batched in zip(TEXTS, batch, strict=True):
        single = detect(text)
        enc = hf_tok(text, return_tensors="pt", return_offsets_mapping=True)
        offsets = enc.pop("offset_mapping")[0].tolist()[1:-1]
        with torch.inference_mode():
            probs = model(**enc).logits[0].sigmoid()[1:-1]
        tokens = hf_tok.convert_ids_to_tokens(enc["input_ids"][0, 1:-1])
        for result in (single, batched):
            assert [t["token"] for t in result] == tokens  # [CLS]/[SEP] left out
            assert [[t["start"], t["end"]] for t in result] == offsets
            assert np.allclose([t["score"] for t in result], probs.numpy(), atol=1e-5)
            assert [t["replaced"] for t in result] == [t["score"] > 0.5 for t in result]
        for t in single:
            assert set(t) == {"token", "start", "end", "score", "replaced"}
            if t["token"] != "[UNK]":
                assert text[t["start"]:t["end"]].lower() == t["token"].removeprefix("##")
            flags.add(t["replaced"])
    assert flags == {True, False}  # the spread head gives both answers
    strict = detect(TEXTS[0], threshold=0.99)
    assert [t["replaced"] for t in strict] == [t["score"] > 0.99 for t in strict]


def test_replaced_token_detection_truncates_with_a_warning(pair_dir, caplog):
    detect = pipeline("replaced-token-detection", model=pair_dir / "discriminator")
    with caplog.at_level(logging.WARNING, logger="zhplm"):
        result = detect("好" * 600)
    assert "truncated to the model's 512 positions" in caplog.text
    assert len(result) == 510 and result[-1]["end"] == 510


def test_wrong_tower_or_family_is_named(pair_dir, bert_dir):
    with pytest.raises(ConfigError, match=rf"{bert_dir}.*ELECTRA discriminator"):
        pipeline("replaced-token-detection", model=bert_dir)
    with pytest.raises(ConfigError, match="generator.*pass the discriminator"):
        pipeline("replaced-token-detection", model=pair_dir / "generator")
    with pytest.raises(ConfigError, match="no masked-LM head.*generator"):
        pipeline("fill-mask", model=pair_dir / "discriminator")
    with pytest.raises(ConfigError, match="feature extraction|encoder"):
        pipeline("feature-extraction", model=pair_dir / "generator")
    with pytest.raises(CheckpointError, match="holds an ELECTRA pair.*discriminator"):
        pipeline("feature-extraction", model=pair_dir)


def test_bert_pipelines_still_work_through_the_loader(bert_dir):
    fill = pipeline("fill-mask", model=bert_dir, top_k=2, dtype="fp32")
    assert len(fill(MASKED[0])) == 2
    assert pipeline("feature-extraction", model=bert_dir)(TEXTS[0], pooling="cls").shape == \
        (128,)


# ---- command line ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_pair(tmp_path_factory, zh_vocab_dir) -> Path:
    out = tmp_path_factory.mktemp("cli_electra") / "pair"
    assert main(["init", "--preset", "electra-tiny", "--vocab", str(zh_vocab_dir / "vocab.txt"),
                 "--out", str(out), "--seed", "1"]) == 0
    return out


def test_init_writes_a_pair_transformers_loads(cli_pair, capsys):
    for name in ("discriminator", "generator"):
        files = {p.name for p in (cli_pair / name).iterdir()}
        assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"} <= files
    discriminator = transformers.ElectraForPreTraining.from_pretrained(
        str(cli_pair / "discriminator"))
    generator = transformers.ElectraForMaskedLM.from_pretrained(str(cli_pair / "generator"))
    assert discriminator.config.hidden_size == 128
    assert generator.config.hidden_size == 32  # 0.25 x 128
    a = load_file(str(cli_pair / "discriminator" / "model.safetensors"))
    b = load_file(str(cli_pair / "generator" / "model.safetensors"))
    shared = [k for k in a if k.startswith("electra.embeddings.")]
    assert shared and all(torch.equal(a[k], b[k]) for k in shared)


def test_init_prints_both_sizes_and_takes_the_generator_fraction(tmp_path, zh_vocab_dir,
                                                                  capsys):
    out = tmp_path / "half"
    assert main(["init", "--preset", "electra-tiny", "--vocab", str(zh_vocab_dir),
                 "--out", str(out), "--generator-hidden-fraction", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "discriminator") in printed and str(out / "generator") in printed
    assert "H=128" in printed and "H=64" in printed and printed.count("M parameters") == 3
    config = json.loads((out / "generator" / "config.json").read_text(encoding="utf-8"))
    assert config["hidden_size"] == 64 and config["architectures"] == ["ElectraForMaskedLM"]


def test_init_errors_list_both_kinds_of_preset(tmp_path, zh_vocab_dir, capsys):
    vocab = str(zh_vocab_dir)
    assert main(["init", "--preset", "huge", "--vocab", vocab, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown preset" in err and "tiny" in err and "electra-small" in err
    assert main(["init", "--preset", "tiny", "--generator-hidden-fraction", "0.5", "--vocab",
                 vocab, "--out", str(tmp_path / "x")]) == 2
    assert "ELECTRA" in capsys.readouterr().err
    assert main(["init", "--preset", "electra-tiny", "--head", "encoder", "--vocab", vocab,
                 "--out", str(tmp_path / "y")]) == 2
    assert "--head" in capsys.readouterr().err
    assert main(["init", "--preset", "electra-tiny", "--generator-hidden-fraction", "2",
                 "--vocab", vocab, "--out", str(tmp_path / "z")]) == 2
    assert "generator_hidden_fraction" in capsys.readouterr().err


def test_cli_rtd_json_equals_python_api_and_marks_tokens(cli_pair, capsys):
    model = str(cli_pair / "discriminator")
    assert main(["rtd", "--model", model, "--json", *TEXTS[:2]]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = pipeline("replaced-token-detection", model=model)(TEXTS[:2])
    assert printed == json.loads(json.dumps(expected))
    assert main(["rtd", "--model", model, "--threshold", "0", TEXTS[0]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(TEXTS[0]) and "7 of 7 tokens replaced" in lines[0]
    assert lines[1].split()[0] == "[今]"
    assert main(["rtd", "--model", model, "--threshold", "1", TEXTS[0]]) == 0
    assert "[" not in capsys.readouterr().out.splitlines()[1]


def test_cli_info_on_a_tower_and_on_a_pair(cli_pair, capsys):
    assert main(["info", str(cli_pair / "generator"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model_type"] == "electra" and info["embedding_size"] == 128
    assert info["hidden_size"] == 32 and info["architectures"] == ["ElectraForMaskedLM"]
    assert main(["info", str(cli_pair)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out == ""
    assert "ELECTRA pair" in captured.err and str(cli_pair / "discriminator") in captured.err


def test_cli_fill_mask_takes_the_generator_not_the_discriminator(cli_pair, capsys):
    generator = str(cli_pair / "generator")
    assert main(["fill-mask", "--model", generator, "--top-k", "3", "--json", MASKED[0]]) == 0
    assert json.loads(capsys.readouterr().out) == \
        pipeline("fill-mask", model=generator, top_k=3)([MASKED[0]])
    assert main(["fill-mask", "--model", str(cli_pair / "discriminator"), MASKED[0]]) == 2
    err = capsys.readouterr().err
    assert "discriminator" in err and str(cli_pair / "generator") in err


def test_cli_rtd_refuses_a_bert_directory(bert_dir, cli_pair, capsys):
    assert main(["rtd", "--model", str(bert_dir), TEXTS[0]]) == 2
    err = capsys.readouterr().err
    assert str(bert_dir) in err and "ELECTRA discriminator" in err
    assert main(["rtd", "--model", str(cli_pair), TEXTS[0]]) == 2
    assert "ELECTRA pair" in capsys.readouterr().err
