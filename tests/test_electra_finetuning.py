"""Fine-tuning an ELECTRA discriminator on the built-in real data: it learns, every task kind
saves an HF `ElectraFor*` directory that transformers loads with identical outputs, the
layer-wise lr decay default, and the Chinese-ELECTRA `--hparams` JSON run unchanged."""

from __future__ import annotations

import collections
import csv
import json
import random
from pathlib import Path

import pytest
import torch
import transformers
from task_data import squad_from_people_daily

from zhplm.config import electra_preset
from zhplm.finetuning import FinetuneConfig, load_config, load_examples, run_finetune
from zhplm.modeling.auto import load_model
from zhplm.modeling.electra import ElectraPretrainingPair
from zhplm.pipelines import pipeline
from zhplm.tasks.builtin import load_builtin
from zhplm.tasks.evaluation import evaluate_files
from zhplm.tokenization import Tokenizer

transformers.logging.set_verbosity_error()

HF_CLASSES = {"ElectraForSequenceClassification": transformers.ElectraForSequenceClassification,
              "ElectraForTokenClassification": transformers.ElectraForTokenClassification,
              "ElectraForQuestionAnswering": transformers.ElectraForQuestionAnswering}


@pytest.fixture(scope="module")
def discriminator(zh_vocab_dir, tmp_path_factory) -> Path:
    """A randomly initialised electra-tiny pair with the built-in corpus vocab; its
    discriminator directory (as `zhplm init --preset electra-tiny` lays it out)."""
    out = tmp_path_factory.mktemp("electra_tiny")
    tokenizer = Tokenizer.from_pretrained(zh_vocab_dir)
    torch.manual_seed(0)
    disc, gen = electra_preset("electra-tiny", vocab_size=tokenizer.vocab_size)
    ElectraPretrainingPair(disc, gen).save_pretrained(out, tokenizer=tokenizer)
    return out / "discriminator"


def quick(task: str, model: Path, out: Path, **fields) -> FinetuneConfig:
    values = {"task": task, "model": str(model), "output_dir": str(out), "lr": 2e-3,
              "epochs": 2, "batch_size": 16, "max_train_examples": 1600,
              "max_eval_examples": 400, "max_seq_length": 64, "progress": False, **fields}
    return FinetuneConfig(**values)


def assert_hf_directory(model_dir: Path, architecture: str, tokenizer_texts: list[str]
                        ) -> None:
    """`model_dir` is an HF ELECTRA directory of `architecture` that transformers loads with
    nothing missing, and whose outputs equal zhplm's for a padded batch."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == [architecture]
    assert config["model_type"] == "electra"
    theirs, info = HF_CLASSES[architecture].from_pretrained(model_dir, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    theirs.eval()
    head = {"ElectraForSequenceClassification": "sequence-classification",
            "ElectraForTokenClassification": "token-classification",
            "ElectraForQuestionAnswering": "question-answering"}[architecture]
    ours = load_model(model_dir, head)
    batch = Tokenizer.from_pretrained(model_dir)(tokenizer_texts, padding=True,
                                                 return_tensors="pt")
    with torch.inference_mode():
        a = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        b = theirs(**batch)
    names = ("start_logits", "end_logits") if head == "question-answering" else ("logits",)
    for name in names:
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def sentiment_run(discriminator, tmp_path_factory) -> tuple[Path, FinetuneConfig, dict]:
    out = tmp_path_factory.mktemp("electra_sentiment")
    config = quick("reviews-sentiment", discriminator, out)
    return out, config, run_finetune(config)


def test_sentiment_fine_tune_beats_the_majority_class(sentiment_run):
    out, config, results = sentiment_run
    dev = load_examples(config, "dev")  # the subset the run evaluated
    assert len(dev) == config.max_eval_examples
    majority = max(collections.Counter(e.label for e in dev).values()) / len(dev)
    assert results["dev"]["accuracy"] > majority + 0.05, (results, majority)
    test = load_examples(config, "test")
    majority = max(collections.Counter(e.label for e in test).values()) / len(test)
    assert results["test"]["accuracy"] > majority + 0.05, (results, majority)
    assert json.loads((out / "results.json").read_text(encoding="utf-8"))["dev"] == \
        results["dev"]


def test_layer_decay_is_0_8_for_electra_by_default_and_an_explicit_value_is_kept(
        sentiment_run, discriminator, tmp_path):
    out, config, results = sentiment_run
    assert config.layer_decay is None
    assert results["layer_decay"] == 0.8
    assert json.loads((out / "results.json").read_text(encoding="utf-8"))["layer_decay"] == 0.8
    explicit = run_finetune(quick("reviews-sentiment", discriminator, tmp_path, epochs=1,
                                  max_train_examples=64, max_eval_examples=32,
                                  layer_decay=1.0, write_test_outputs=False))
    assert explicit["layer_decay"] == 1.0
    assert json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))[
        "layer_decay"] == 1.0
    assert json.loads((tmp_path / "finetune_config.json").read_text(encoding="utf-8"))[
        "layer_decay"] == 1.0


def test_best_model_loads_in_transformers_with_identical_logits(sentiment_run):
    out, _, _ = sentiment_run
    best = out / "best"
    texts = ["这本书很好看，值得一读。", "质量太差了，不推荐购买。", "一般吧。"]
    assert_hf_directory(best, "ElectraForSequenceClassification", texts)
    theirs = transformers.ElectraForSequenceClassification.from_pretrained(best)
    assert sorted(theirs.config.id2label.values()) == sorted(
        {e.label for e in load_builtin("reviews-sentiment", "train")})
    # zhplm's pipeline vs transformers' pipeline, both over the directory.
    ours = pipeline("text-classification", model=best, dtype="fp32")(texts)
    hf = transformers.pipeline("text-classification", model=str(best))(texts)
    for a, b in zip(ours, hf, strict=True):
        assert a["label"] == b["label"]
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)


# ---- every task kind on an ELECTRA discriminator ---------------------------------------------
def write_review_pairs(path: Path, split: str, n: int, regression: bool) -> Path:
    """n pairs of real reviews: label 1 (score 5.0) when both share a sentiment, else 0."""
    reviews = load_builtin("reviews-sentiment", split)
    reviews = reviews[:n] + reviews[-n:]  # both sentiments (a split lists positives first)
    random.Random(0).shuffle(reviews)
    rows = []
    for a, b in zip(reviews[::2], reviews[1::2], strict=True):
        same = a.label == b.label
        rows.append((("5.0" if same else "0.0") if regression else str(int(same)),
                     a.text_a[:40], b.text_a[:40]))
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["label", "text_a", "text_b"])
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("kind", ["pair", "regression"])
def test_pair_and_regression_save_an_hf_electra_classifier(kind, discriminator, tmp_path):
    train = write_review_pairs(tmp_path / "train.tsv", "train", 96, kind == "regression")
    dev = write_review_pairs(tmp_path / "dev.tsv", "dev", 24, kind == "regression")
    labels = {row.split("\t")[0] for row in train.read_text(encoding="utf-8").splitlines()[1:]}
    assert len(labels) == 2  # both outcomes present in the data
    results = run_finetune(quick(kind, discriminator, tmp_path / "run", train=str(train),
                                 dev=str(dev), test=str(dev), epochs=1))
    assert results["kind"] == kind and results["layer_decay"] == 0.8
    metric = "pearson" if kind == "regression" else "accuracy"
    assert results["main_metric"] == metric and metric in results["dev"]
    best = tmp_path / "run" / "best"
    assert_hf_directory(best, "ElectraForSequenceClassification",
                        ["这本书很好看。", "太差了，不推荐。"])
    config = json.loads((best / "config.json").read_text(encoding="utf-8"))
    if kind == "regression":
        assert config["problem_type"] == "regression" and len(config["id2label"]) == 1
    else:
        assert sorted(config["id2label"].values()) == sorted(labels)
    with (tmp_path / "run" / "test_predictions.tsv").open(encoding="utf-8") as f:
        predicted = list(csv.DictReader(f, delimiter="\t"))
    assert len(predicted) == len(load_examples(quick(kind, discriminator, tmp_path,
                                                     test=str(dev)), "test"))
    if kind == "pair":
        assert {row["label"] for row in predicted} <= labels
    else:
        assert all(float(row["label"]) == pytest.approx(float(row["score"]), abs=1e-5)
                   for row in predicted)


def test_ner_on_an_electra_discriminator(discriminator, tmp_path):
    results = run_finetune(quick("pd-ner", discriminator, tmp_path, epochs=1,
                                 max_train_examples=128, max_eval_examples=32))
    assert results["main_metric"] == "f1" and "f1" in results["dev"]
    best = tmp_path / "best"
    assert_hf_directory(best, "ElectraForTokenClassification",
                        ["江泽民在北京会见了美国总统克林顿。", "新华社北京电"])
    config = json.loads((best / "config.json").read_text(encoding="utf-8"))
    tags = {t for e in load_builtin("pd-ner", "train") for t in e.tags}
    assert set(config["id2label"].values()) <= tags
    assert {"O", "B-PER", "B-LOC"} <= set(config["id2label"].values())


def test_mrc_on_an_electra_discriminator(discriminator, tmp_path):
    squad = tmp_path / "squad.json"
    paragraphs = squad_from_people_daily(squad, 40)
    results = run_finetune(FinetuneConfig(
        task="mrc", model=str(discriminator), train=str(squad), dev=str(squad),
        test=str(squad), output_dir=str(tmp_path / "run"), epochs=1, lr=1e-3,
        batch_size=16, max_seq_length=128, doc_stride=64, progress=False))
    assert set(results["dev"]) == {"em", "f1", "average"}
    assert results["layer_decay"] == 0.8
    predictions = json.loads((tmp_path / "run" / "test_predictions.json").read_text(
        encoding="utf-8"))
    assert set(predictions) == {qa["id"] for p in paragraphs for qa in p["qas"]}
    for p in paragraphs:  # every answer is a span of its own context
        assert predictions[p["qas"][0]["id"]] in p["context"]
    scores = evaluate_files("mrc", squad, tmp_path / "run" / "test_predictions.json")
    assert scores["f1"] == pytest.approx(results["test"]["f1"])
    assert_hf_directory(tmp_path / "run" / "best", "ElectraForQuestionAnswering",
                        [paragraphs[0]["context"], paragraphs[1]["context"]])


# ---- Chinese-ELECTRA hparams -----------------------------------------------------------------
def test_chinese_electra_hparams_run_unchanged_from_the_cli(discriminator, tmp_path, capsys):
    from zhplm.cli import main

    # HFL's README example (params_cmrc2018.json) also states the model: vocab_size and
    # model_size; both are read (the first checked against config.json).
    vocab_size = json.loads((discriminator / "config.json").read_text())["vocab_size"]
    hparams = tmp_path / "params.json"
    hparams.write_text(json.dumps({
        "task_names": ["reviews-sentiment"], "learning_rate": 2e-3, "num_train_epochs": 1,
        "layerwise_lr_decay": 0.7, "max_seq_length": 64, "train_batch_size": 16,
        "eval_batch_size": 32, "write_test_outputs": False, "vocab_size": vocab_size,
        "model_size": "small"}), encoding="utf-8")
    out = tmp_path / "run"
    code = main(["finetune", "--model", str(discriminator), "--hparams", str(hparams),
                 "--out", str(out), "--max-train-examples", "128", "--json",
                 "max_eval_examples=64", "progress=false"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert printed["dev"] == results["dev"]
    assert (results["task"], results["layer_decay"], results["steps"]) == (
        "reviews-sentiment", 0.7, 8)  # 128 examples / 16, one epoch
    assert "test_predictions" not in results  # write_test_outputs: false
    saved = json.loads((out / "finetune_config.json").read_text(encoding="utf-8"))
    assert (saved["lr"], saved["epochs"], saved["max_seq_length"], saved["batch_size"],
            saved["eval_batch_size"]) == (2e-3, 1.0, 64, 16, 32)
    # The Python API reads the same file into the same config.
    config = load_config(None, [f"model={discriminator}", f"output_dir={out}",
                                "max_train_examples=128", "max_eval_examples=64",
                                "progress=false"], hparams=hparams)
    assert config.layer_decay == 0.7 and config.task == "reviews-sentiment"
    config_json = json.loads(json.dumps(vars(config)))
    assert {k: saved[k] for k in config_json} == config_json
    assert json.loads((out / "best" / "config.json").read_text(encoding="utf-8"))[
        "architectures"] == ["ElectraForSequenceClassification"]


def test_chinese_electra_hparams_model_keys(discriminator, tmp_path):
    from zhplm.errors import ConfigError
    from zhplm.finetuning import hparams_to_dict, run_finetune

    # configure_finetuning.py: "large" means lr 5e-5 and layer decay 0.9 unless given
    large = hparams_to_dict({"model_size": "large", "task_names": ["reviews-sentiment"]})
    assert (large["lr"], large["layer_decay"]) == (5e-5, 0.9)
    assert hparams_to_dict({"model_size": "large", "learning_rate": 1e-4})["lr"] == 1e-4
    with pytest.raises(ConfigError, match="model_size='huge'"):
        hparams_to_dict({"model_size": "huge"})
    wrong = tmp_path / "params.json"
    wrong.write_text(json.dumps({"task_names": ["reviews-sentiment"], "vocab_size": 30522}))
    config = load_config(None, [f"model={discriminator}", f"output_dir={tmp_path / 'run'}",
                                "progress=false"], hparams=wrong)
    with pytest.raises(ConfigError, match="vocab_size=30522.*config.json"):
        run_finetune(config)
