"""Fine-tuning on the built-in real data: heads load in transformers, short runs beat the
majority baseline, grid search, the trainer API, hparams, task pipelines, bad input."""

from __future__ import annotations

import collections
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from task_data import squad_from_people_daily

from zhplm.config import preset
from zhplm.errors import ConfigError, DataError
from zhplm.finetuning import (
    FinetuneConfig,
    build_trainer,
    hparams_to_dict,
    load_config,
    run_finetune,
)
from zhplm.modeling import BertForMaskedLM
from zhplm.modeling.heads import (
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    with_labels,
)
from zhplm.pipelines import pipeline
from zhplm.tasks.builtin import load_builtin
from zhplm.tasks.evaluation import evaluate_files
from zhplm.tokenization import Tokenizer

transformers.logging.set_verbosity_error()


@pytest.fixture(scope="module")
def tiny_dir(zh_vocab_dir, tmp_path_factory) -> Path:
    """A randomly initialised tiny BERT (MLM head) with the built-in corpus vocab."""
    out = tmp_path_factory.mktemp("tiny")
    tokenizer = Tokenizer.from_pretrained(zh_vocab_dir)
    torch.manual_seed(0)
    BertForMaskedLM(preset("tiny", vocab_size=tokenizer.vocab_size)).save_pretrained(
        out, tokenizer=tokenizer)
    return out


def quick(task: str, model: Path, out: Path, **fields) -> FinetuneConfig:
    values = {"task": task, "model": str(model), "output_dir": str(out), "lr": 1e-3,
              "epochs": 2, "batch_size": 32, "max_train_examples": 1600,
              "max_eval_examples": 400, "max_seq_length": 96, "progress": False,
              **fields}
    return FinetuneConfig(**values)


@pytest.fixture(scope="module")
def sentiment_run(tiny_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sentiment")
    return out, run_finetune(quick("reviews-sentiment", tiny_dir, out))


@pytest.fixture(scope="module")
def ner_run(tiny_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ner")
    return out, run_finetune(quick("pd-ner", tiny_dir, out, max_train_examples=4000, epochs=3,
                                   max_seq_length=128))


def test_sentiment_fine_tune_beats_the_majority_class(sentiment_run):
    out, results = sentiment_run
    dev = load_builtin("reviews-sentiment", "dev")
    majority = max(collections.Counter(e.label for e in dev).values()) / len(dev)
    assert results["dev"]["accuracy"] > majority + 0.1, (results, majority)
    assert results["test"]["accuracy"] > majority + 0.1
    assert (out / "best" / "model.safetensors").is_file()
    assert json.loads((out / "results.json").read_text())["dev"] == results["dev"]


def test_ner_fine_tune_finds_entities(ner_run):
    _, results = ner_run
    dev = load_builtin("pd-ner", "dev")
    outside = sum(t == "O" for e in dev for t in e.tags) / sum(len(e.tags) for e in dev)
    # The all-"O" baseline has entity F1 0 and token accuracy `outside`.
    assert results["dev"]["f1"] > 0.05, results
    assert results["dev"]["token_accuracy"] > outside


def test_fine_tuned_models_load_in_transformers_with_identical_logits(sentiment_run, ner_run):
    for (out, _), zh_class, hf_class in (
        (sentiment_run, BertForSequenceClassification,
         transformers.BertForSequenceClassification),
        (ner_run, BertForTokenClassification, transformers.BertForTokenClassification),
    ):
        ours = zh_class.from_pretrained(out / "best")
        theirs = hf_class.from_pretrained(out / "best").eval()
        tok = Tokenizer.from_pretrained(out / "best")
        batch = tok(["这本书很好看。", "北京是中国的首都，江泽民在这里工作。"], padding=True,
                    return_tensors="pt")
        with torch.inference_mode():
            a = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            b = theirs(**batch)
        torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
        assert theirs.config.id2label == {int(k): v for k, v in
                                          ours.config.extra["id2label"].items()}


def test_question_answering_head_matches_transformers(zh_vocab_dir, tmp_path):
    tokenizer = Tokenizer.from_pretrained(zh_vocab_dir)
    torch.manual_seed(1)
    BertForQuestionAnswering(preset("tiny", vocab_size=tokenizer.vocab_size)).save_pretrained(
        tmp_path, tokenizer=tokenizer)
    theirs = transformers.BertForQuestionAnswering.from_pretrained(tmp_path).eval()
    ours = BertForQuestionAnswering.from_pretrained(tmp_path)
    batch = tokenizer("谁在北京？", "江泽民在北京会见了克林顿。", return_tensors="pt")
    with torch.inference_mode():
        a, b = ours(**batch), theirs(**batch)
    torch.testing.assert_close(a.start_logits, b.start_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.end_logits, b.end_logits, atol=1e-5, rtol=1e-5)


def test_pipelines_match_transformers(sentiment_run, ner_run):
    out, _ = sentiment_run
    texts = ["这本书很好看，值得一读。", "质量太差了，不推荐购买。", "一般吧。"]
    ours = pipeline("text-classification", model=out / "best", dtype="fp32")(texts)
    theirs = transformers.pipeline("text-classification", model=str(out / "best"))(texts)
    for a, b in zip(ours, theirs, strict=True):
        assert a["label"] == b["label"]
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
    out, _ = ner_run
    text = "江泽民在北京会见了美国总统克林顿。"
    ours = pipeline("token-classification", model=out / "best", aggregation_strategy="none",
                    dtype="fp32")(text)
    theirs = transformers.pipeline("token-classification", model=str(out / "best"),
                                   aggregation_strategy="none")(text)
    assert [(e["entity"], e["start"], e["end"]) for e in ours] == \
        [(e["entity"], e["start"], e["end"]) for e in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a["score"] == pytest.approx(float(b["score"]), abs=1e-5)
    grouped = pipeline("token-classification", model=out / "best")(text)
    for entity in grouped:
        assert text[entity["start"]:entity["end"]] == entity["word"]
        assert entity["entity_group"] in ("PER", "LOC", "ORG")


def test_written_predictions_score_the_same_with_zhplm_evaluate(ner_run, sentiment_run,
                                                               tmp_path):
    out, results = ner_run
    test = load_builtin("pd-ner", "test")
    shown = {e.guid for e in test}
    gold = tmp_path / "gold.txt"
    # The run scored a fixed subset of test (max_eval_examples); rebuild that subset's gold.
    n_pred = sum(1 for block in (out / "test_predictions.txt").read_text().split("\n\n")
                 if block.strip())
    keep = np.sort(np.random.default_rng(0).permutation(len(test))[:n_pred])
    with gold.open("w", encoding="utf-8") as f:
        for i in keep:
            for ch, tag in zip(test[i].tokens, test[i].tags, strict=True):
                f.write(f"{ch if ch.strip() else '_'} {tag}\n")
            f.write("\n")
    assert shown
    scores = evaluate_files("ner", gold, out / "test_predictions.txt")
    assert scores["f1"] == pytest.approx(results["test"]["f1"])
    out, results = sentiment_run
    test = load_builtin("reviews-sentiment", "test")
    keep = np.sort(np.random.default_rng(0).permutation(len(test))[:400])
    gold = tmp_path / "gold.tsv"
    with gold.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["id", "label", "text_a"])
        writer.writerows([test[i].guid, test[i].label, test[i].text_a] for i in keep)
    scores = evaluate_files("classification", gold, out / "test_predictions.tsv")
    assert scores["accuracy"] == pytest.approx(results["test"]["accuracy"])


def write_pairs(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["label", "text_a", "text_b"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory) -> dict[str, Path]:
    """An AFQMC-like pair task from real reviews: label 1 when both share a sentiment."""
    out = tmp_path_factory.mktemp("pairs")
    files = {}
    for split, n in (("train", 256), ("dev", 64)):
        reviews = load_builtin("reviews-sentiment", split)[: 2 * n]
        rows = [(str(int(a.label == b.label)), a.text_a[:60], b.text_a[:60])
                for a, b in zip(reviews[::2], reviews[1::2], strict=True)]
        files[split] = write_pairs(out / f"{split}.tsv", rows)
    return files


def test_trainer_api_with_cfg_modify_fn(tiny_dir, pair_files, tmp_path):
    seen = {}

    def cfg_modify_fn(cfg: FinetuneConfig) -> FinetuneConfig:
        seen["task"] = cfg.task
        cfg.epochs, cfg.lr, cfg.max_seq_length = 1, 5e-4, 64
        return cfg

    trainer = build_trainer(model=str(tiny_dir), task="pair", train=str(pair_files["train"]),
                            dev=str(pair_files["dev"]), progress=False,
                            cfg_modify_fn=cfg_modify_fn, work_dir=tmp_path / "work")
    assert seen == {"task": "pair"}
    assert (trainer.config.epochs, trainer.config.lr) == (1, 5e-4)
    results = trainer.train()
    assert results["steps"] == 8  # 256 pairs / 32, one epoch
    assert 0.0 <= results["dev"]["accuracy"] <= 1.0
    assert trainer.evaluate()["dev"] == results["dev"]  # the best model, evaluated again
    assert (tmp_path / "work" / "best" / "config.json").is_file()


def test_grid_is_resumable_and_reports_max_mean(tiny_dir, pair_files, tmp_path):
    from zhplm.tasks.grid import run_grid

    base = FinetuneConfig(task="pair", model=str(tiny_dir), train=str(pair_files["train"]),
                          dev=str(pair_files["dev"]), max_seq_length=64, progress=False)
    calls = []

    def run(config):
        calls.append((config.lr, config.seed))
        return run_finetune(config)

    summary = run_grid(base, {"epochs": [1], "lr": [1e-4, "1e-3"]}, 2, tmp_path, run)
    assert sorted(calls) == [(1e-4, 42), (1e-4, 43), (1e-3, 42), (1e-3, 43)]
    cell = summary["cells"]["epochs=1_lr=0.001"]
    assert len(cell["dev"]) == 2
    table = (tmp_path / "results.md").read_text()
    expected = f"{max(cell['dev']) * 100:.2f} ({np.mean(cell['dev']) * 100:.2f})"
    assert expected in table
    calls.clear()
    again = run_grid(base, {"epochs": [1], "lr": [1e-4, 1e-3]}, 2, tmp_path, run)
    assert calls == []  # every cell was finished: nothing re-run
    assert again["cells"] == summary["cells"]


def test_mrc_fine_tune_end_to_end(tiny_dir, tmp_path):
    squad = tmp_path / "squad.json"
    data = squad_from_people_daily(squad, n=120, scan=120)
    results = run_finetune(FinetuneConfig(
        task="mrc", model=str(tiny_dir), train=str(squad), dev=str(squad), test=str(squad),
        output_dir=str(tmp_path / "run"), epochs=1, lr=1e-3, max_seq_length=128,
        doc_stride=64, progress=False))
    assert set(results["dev"]) == {"em", "f1", "average"}
    predictions = json.loads((tmp_path / "run" / "test_predictions.json").read_text())
    assert set(predictions) == {qa["id"] for p in data for qa in p["qas"]}
    scores = evaluate_files("mrc", squad, tmp_path / "run" / "test_predictions.json")
    assert scores["f1"] == pytest.approx(results["test"]["f1"])
    qa = pipeline("question-answering", model=tmp_path / "run" / "best")
    answer = qa(question="PER是什么？", context=data[0]["context"])
    assert data[0]["context"][answer["start"]:answer["end"]] == answer["answer"]


def test_unknown_dev_label_is_listed(tiny_dir, pair_files, tmp_path):
    dev = write_pairs(tmp_path / "dev.tsv", [("1", "好", "好"), ("maybe", "好", "差"),
                                             ("2", "差", "差")])
    with pytest.raises(DataError) as err:
        run_finetune(FinetuneConfig(task="pair", model=str(tiny_dir), dev=str(dev),
                                    train=str(pair_files["train"]), output_dir=str(tmp_path)))
    message = str(err.value)
    assert "'maybe'" in message and "'2'" in message and "dev.tsv:3" in message


def test_label_count_mismatch_with_a_loaded_head(sentiment_run, tmp_path):
    out, _ = sentiment_run
    train = tmp_path / "train.tsv"
    train.write_text("label\ttext_a\na\t好\nb\t差\nc\t一般\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="head predicts 2 labels"):
        run_finetune(FinetuneConfig(task="classification", model=str(out / "best"),
                                    train=str(train), output_dir=str(tmp_path / "run")))


def test_chinese_electra_hparams(tmp_path):
    hparams = tmp_path / "params.json"
    hparams.write_text(json.dumps({
        "task_names": ["reviews-sentiment"], "max_seq_length": 64, "do_train": True,
        "do_eval": True, "write_test_outputs": False, "num_train_epochs": 2,
        "learning_rate": 1e-4, "train_batch_size": 16, "eval_batch_size": 8}))
    config = load_config(None, ["model=somewhere"], hparams=hparams)
    assert (config.task, config.max_seq_length, config.epochs, config.lr, config.batch_size,
            config.eval_batch_size, config.write_test_outputs) == (
        "reviews-sentiment", 64, 2.0, 1e-4, 16, 8, False)
    with pytest.raises(ConfigError, match="use_tpu"):
        hparams_to_dict({"use_tpu": True})


def test_unknown_config_key_and_task(tmp_path):
    with pytest.raises(ConfigError, match="learning_rat"):
        load_config(None, ["learning_rat=1e-4"])
    with pytest.raises(ConfigError, match="reviews-sentiment"):
        FinetuneConfig(task="sentiment")


def test_regression_head_config_round_trips_in_transformers(zh_vocab_dir, tmp_path):
    tokenizer = Tokenizer.from_pretrained(zh_vocab_dir)
    config = with_labels(preset("tiny", vocab_size=tokenizer.vocab_size), [], regression=True)
    BertForSequenceClassification(config).save_pretrained(tmp_path, tokenizer=tokenizer)
    theirs = transformers.BertForSequenceClassification.from_pretrained(tmp_path)
    assert theirs.config.num_labels == 1
    assert theirs.config.problem_type == "regression"
    result = pipeline("text-classification", model=tmp_path)("很好")
    assert isinstance(result[0]["score"], float)


def test_cli_classify_and_ner_json_equal_the_python_api(sentiment_run, ner_run, capsys):
    from zhplm.cli import main

    texts = ["这本书很好看。", "太差了。"]
    model = sentiment_run[0] / "best"
    assert main(["classify", "--model", str(model), "--json", *texts]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(
        pipeline("text-classification", model=model)(texts)))
    model = ner_run[0] / "best"
    assert main(["ner", "--model", str(model), "--json", "江泽民在北京。"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(
        pipeline("token-classification", model=model)(["江泽民在北京。"])))


def test_cli_finetune_reports_bad_files(tiny_dir, tmp_path, capsys):
    from zhplm.cli import main

    train = tmp_path / "train.jsonl"
    train.write_text('{"sentence1": "好", "label": "1"}\n{"sentence1": "差", "label": \n',
                     encoding="utf-8")
    code = main(["finetune", "--task", "classification", "--model", str(tiny_dir), "--train",
                 str(train), "--out", str(tmp_path / "run")])
    assert code == 2
    assert f"{train}:2" in capsys.readouterr().err


def test_max_mean_scale_follows_the_task_not_the_values():
    from zhplm.tasks.grid import max_mean, summarize, to_markdown

    runs = [{"cell": {"lr": 1e-4}, "seed": s, "kind": "mrc", "main_metric": "f1",
             "dev": {"f1": f1}, "test": {}} for s, f1 in ((1, 0.5), (2, 0.9))]
    summary = summarize(runs)
    assert summary["scale"] == 1.0  # CMRC F1 is a percentage already, even when below 1
    assert "0.90 (0.70)" in to_markdown(summary)
    assert max_mean([0.5, -0.25]) == "50.00 (12.50)"  # e.g. MCC: fractions x100


# ---- regressions found in review -------------------------------------------------------------
def test_pair_pipeline_mixed_batch_and_literal_sep_use_the_tokenizers_token_types(
        sentiment_run):
    model_dir = sentiment_run[0] / "best"
    classify = pipeline("text-classification", model=model_dir, dtype="fp32")  # vs fp32 below
    pair = {"text": "[SEP] 在这里", "text_pair": "后面很好"}
    alone = classify(pair)[0]  # one input, top_k=1: a list of one dict, as transformers
    mixed = classify([pair, "我爱北京", {"text": "一般"}])
    assert mixed[0]["score"] == pytest.approx(alone["score"], abs=1e-6)
    tok = Tokenizer.from_pretrained(model_dir)
    batch = tok(pair["text"], pair["text_pair"], return_tensors="pt")
    model = BertForSequenceClassification.from_pretrained(model_dir)
    with torch.inference_mode():
        probs = model(batch["input_ids"], batch["attention_mask"],
                      batch["token_type_ids"]).logits.softmax(-1)[0]
    assert alone["score"] == pytest.approx(float(probs.max()), abs=1e-6)


def test_unlabelled_dev_is_not_evaluated_and_pos_with_plain_tags(tiny_dir, tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text("label\ttext_a\npositive\t很好\nnegative\t很差\n" * 20, encoding="utf-8")
    dev = tmp_path / "dev.tsv"
    dev.write_text("text_a\n很好\n很差\n", encoding="utf-8")
    results = run_finetune(FinetuneConfig(task="classification", model=str(tiny_dir),
                                          train=str(train), dev=str(dev), epochs=1,
                                          output_dir=str(tmp_path / "cls"), progress=False))
    assert "dev" not in results and results["steps"] == 2
    pos = tmp_path / "pos.txt"
    pos.write_text("我 r\n爱 v\n北 ns\n京 ns\n\n书 n\n好 a\n\n" * 10, encoding="utf-8")
    results = run_finetune(FinetuneConfig(task="pos", model=str(tiny_dir), train=str(pos),
                                          dev=str(pos), epochs=1, lr=1e-3, progress=False,
                                          output_dir=str(tmp_path / "pos")))
    assert results["main_metric"] == "token_accuracy"
    assert set(results["dev"]) == {"token_accuracy"}


def test_best_on_dev_nan_resume_and_early_stop_state(tmp_path):
    from zhplm.finetuning import BestOnDev

    saved = []
    best = BestOnDev(tmp_path / "best.json", patience=2, resume_step=None)
    assert not best.update(8, float("nan"), lambda: saved.append(8))
    assert not best.update(16, 0.2, lambda: saved.append(16))  # beats a NaN
    assert not best.update(24, 0.1, lambda: saved.append(24))
    assert saved == [8, 16] and best.best_step == 16
    assert best.update(32, 0.15, lambda: saved.append(32))  # 2 evaluations without a gain
    json.loads((tmp_path / "best.json").read_text())  # strict JSON (no NaN)
    # Resumed from the step-24 checkpoint: the step-32 evaluation is forgotten (replayed).
    resumed = BestOnDev(tmp_path / "best.json", patience=2, resume_step=24)
    assert resumed.history == [(8, float("-inf")), (16, 0.2), (24, 0.1)]
    assert not resumed.stopped
    assert BestOnDev(tmp_path / "best.json", patience=2, resume_step=32).stopped


def test_no_checkpoints_option_and_head_of_another_task(sentiment_run, tmp_path):
    out, _ = sentiment_run
    results = run_finetune(quick("pd-ner", out / "best", tmp_path / "ner", epochs=1,
                                 max_train_examples=64, max_eval_examples=32,
                                 save_checkpoints=False))
    assert "f1" in results["dev"]  # the 2-label sentence classifier was not loaded
    assert not (tmp_path / "ner" / "checkpoints").exists()


def test_evaluate_bioes_files(tmp_path):
    gold = tmp_path / "gold.txt"
    gold.write_text("江 B-PER\n泽 I-PER\n民 E-PER\n在 O\n京 S-LOC\n\n", encoding="utf-8")
    pred = tmp_path / "pred.txt"
    pred.write_text("江 B-PER\n泽 I-PER\n民 E-PER\n在 O\n京 O\n\n", encoding="utf-8")
    scores = evaluate_files("ner", gold, pred, scheme="BIOES")
    assert (scores["precision"], scores["recall"]) == (1.0, 0.5)


def test_builtin_label_set_is_every_split_so_a_subset_never_misses_a_dev_tag(tiny_dir):
    # pd-pos with 1048 training sentences lacks 'B-Mg', which its dev split has: `zhplm
    # reproduce` stopped there with "unknown label(s) 'B-Mg'". A built-in task's label set is
    # now its whole inventory; a user's files still get the unknown-label error.
    from zhplm.finetuning import choose_labels, load_examples
    from zhplm.tasks.readers import collect_labels

    config = FinetuneConfig(task="pd-pos", model=str(tiny_dir), max_train_examples=1048)
    train = load_examples(config, "train")
    labels, where = choose_labels(config, train, tiny_dir)
    assert "B-Mg" not in collect_labels(train, "train")  # the subset really misses it
    assert set(collect_labels(load_builtin("pd-pos", "dev"), "dev")) <= set(labels)
    assert "B-Mg" in labels and where == "pd-pos (all splits)"
    assert labels == sorted(labels)
