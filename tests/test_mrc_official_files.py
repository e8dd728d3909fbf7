"""Official CMRC 2018 / DRCD files as they are: `answer_start` of -1, offsets that miss their
text, answers not in the context. They read, train (relocated / dropped, counted in
results.json, one warning) and evaluate by answer texts only (the official algorithm)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from zhplm.config import preset
from zhplm.errors import DataError
from zhplm.finetuning import FinetuneConfig, run_finetune
from zhplm.modeling import BertForMaskedLM
from zhplm.tasks.examples import QAExample
from zhplm.tasks.extractive_qa import QATask
from zhplm.tasks.mrc import build_qa_features
from zhplm.tasks.readers import read_squad
from zhplm.tokenization import Tokenizer

CONTEXT = "北京是首都。上海在东边。北京很大。"  # 北京 at 0 and 12, 首都 at 3, 上海 at 6, 东边 at 9
QAS = [  # (id, answers as (text, answer_start)), as official files write them
    ("minus1", [("北京", -1)]),  # unknown offset: the first occurrence
    ("wrong", [("北京", 10)]),  # points at other text: the nearest occurrence (12)
    ("past", [("上海", 999)]),  # past the end of the context: the nearest (only) one
    ("absent", [("广州", -1)]),  # not in the context: dropped from training
    ("multi", [("广州市", -1), ("东边", 3)]),  # first absent: the second, relocated to 9
    ("ok", [("首都", 3)]),
]
# where each training answer must land (characters of CONTEXT); "absent" has no features
EXPECTED_SPANS = {"minus1": (0, 2), "wrong": (12, 14), "past": (6, 8), "multi": (9, 11),
                  "ok": (3, 5)}


def squad_document(qas: list[tuple[str, list[tuple[str, int]]]] = QAS) -> dict:
    return {"version": "v1.0", "data": [{"title": "t", "paragraphs": [{
        "id": "P0", "context": CONTEXT,
        "qas": [{"question": f"问题{qid}？", "id": qid,
                 "answers": [{"text": t, "answer_start": s} for t, s in answers]}
                for qid, answers in qas]}]}]}


@pytest.fixture()
def cmrc_file(tmp_path: Path) -> Path:
    path = tmp_path / "cmrc2018_dev.json"
    path.write_text(json.dumps(squad_document(), ensure_ascii=False, indent=2), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def zh_tok(zh_vocab_dir: Path) -> Tokenizer:
    return Tokenizer.from_pretrained(zh_vocab_dir)


def test_official_file_reads_and_trains_on_relocated_answers(
    cmrc_file: Path, zh_tok: Tokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    examples = read_squad(cmrc_file)
    assert [(e.qid, e.answers, e.answer_starts) for e in examples] == [
        (qid, tuple(t for t, _ in a), tuple(s for _, s in a)) for qid, a in QAS]

    with caplog.at_level(logging.WARNING, logger="zhplm"):
        feats = build_qa_features(examples, zh_tok, max_seq_length=64, doc_stride=16)
    qids = [examples[int(i)].qid for i in feats.example_index]
    assert qids == [q for q, _ in QAS if q != "absent"]  # one window each, "absent" dropped
    for row, qid in enumerate(qids):
        s, e = int(feats.start_positions[row]), int(feats.end_positions[row])
        assert 0 < s <= e
        assert (feats.offsets[row][s][0], feats.offsets[row][e][1]) == EXPECTED_SPANS[qid]
    assert {k: v for k, v in feats.stats.items() if v} == {
        "examples": 6, "features": 5, "answers": 6, "answers_relocated": 4,
        "answers_first_not_found": 1, "answers_not_found": 1}
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == 1
    message = records[0].getMessage()
    assert message.startswith(f"{cmrc_file}: QA training features: of 6 answered questions")
    assert "4 not at their answer_start" in message
    assert "1 with no answer in their context (dropped from training), e.g. absent" in message

    # evaluation features keep every question (it is scored by its texts)
    eval_feats = QATask().encode_eval(examples, zh_tok, 64)
    assert sorted(set(eval_feats.example_index.tolist())) == list(range(6))


def test_training_file_without_any_usable_answer_is_an_error(zh_tok: Tokenizer) -> None:
    examples = [QAExample("a", "哪里？", CONTEXT, ("广州",), (-1,), "t.json:a"),
                QAExample("b", "哪里？", CONTEXT, ("深圳",), (4,), "t.json:b")]
    with pytest.raises(DataError, match=r"^t\.json:a: none of the 2 training questions"):
        QATask().encode(examples, zh_tok, 64)


def official_cmrc_scores(predictions: dict[str, str]) -> tuple[float, float]:
    """EM and F1 of the predictions below, worked out by hand with the official CMRC 2018
    rules: EM = equal after dropping punctuation to any gold text; F1 = max over gold texts of
    the LCS F1 of Chinese characters (punctuation dropped); a missing prediction scores 0."""
    assert predictions == {"minus1": "北京", "wrong": "北京很大", "past": "上海在东边",
                           "absent": "广州", "multi": "东边。", "extra": "x"}
    em = {"minus1": 1, "wrong": 0, "past": 0, "absent": 1, "multi": 1, "ok": 0}
    f1 = {"minus1": 1.0,
          "wrong": 2 * (2 / 4) * 1 / (2 / 4 + 1),  # LCS 北京: precision 2/4, recall 2/2
          "past": 2 * (2 / 5) * 1 / (2 / 5 + 1),  # LCS 上海: precision 2/5, recall 1
          "absent": 1.0,  # not in the context, but evaluation compares texts only
          "multi": 1.0,  # the second gold answer; "。" is punctuation
          "ok": 0.0}  # no prediction
    return 100 * sum(em.values()) / 6, 100 * sum(f1.values()) / 6


def test_cli_evaluate_scores_official_file_by_texts(
    cmrc_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from zhplm.cli import main

    predictions = {"minus1": "北京", "wrong": "北京很大", "past": "上海在东边", "absent": "广州",
                   "multi": "东边。", "extra": "x"}
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps(predictions, ensure_ascii=False), encoding="utf-8")
    assert main(["evaluate", "--task", "mrc", str(cmrc_file), str(preds)]) == 0
    scores = json.loads(capsys.readouterr().out)
    em, f1 = official_cmrc_scores(predictions)
    assert em == 50.0 and f1 == pytest.approx(100 * (3 + 2 / 3 + 4 / 7) / 6)  # 70.63
    assert scores["em"] == pytest.approx(em) and scores["f1"] == pytest.approx(f1)
    assert scores["total"] == 6 and scores["skipped"] == 1

    gold = squad_document([*QAS, ("unanswered", [])])
    cmrc_file.write_text(json.dumps(gold, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError, match=r"cmrc2018_dev\.json:unanswered: this gold question"):
        from zhplm.tasks.evaluation import evaluate_files

        evaluate_files("mrc", cmrc_file, preds)


def test_tiny_fine_tune_on_official_files_reports_counts(
    cmrc_file: Path, zh_vocab_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tokenizer = Tokenizer.from_pretrained(zh_vocab_dir)
    model_dir = tmp_path / "tiny"
    torch.manual_seed(0)
    BertForMaskedLM(preset("tiny", vocab_size=tokenizer.vocab_size)).save_pretrained(
        model_dir, tokenizer=tokenizer)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="zhplm"):
        results = run_finetune(FinetuneConfig(
            task="mrc", model=str(model_dir), train=str(cmrc_file), dev=str(cmrc_file),
            test=str(cmrc_file), output_dir=str(out), epochs=1, batch_size=4,
            eval_batch_size=8, max_seq_length=64, doc_stride=16, dtype="fp32",
            save_checkpoints=False, progress=False))
    written = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert written["train_features"] == {
        "examples": 6, "features": 5, "answers": 6, "answers_relocated": 4,
        "answers_first_not_found": 1, "answers_not_found": 1, "answers_unrecoverable": 0,
        "answers_outside_windows": 0}
    assert written["dev_features"]["examples"] == written["dev_features"]["features"] == 6
    assert written["steps"] == 2  # 5 training windows in batches of 4
    assert set(written["dev"]) == {"em", "f1", "average"} and written == results
    predictions = json.loads((out / "test_predictions.json").read_text(encoding="utf-8"))
    assert set(predictions) == {qid for qid, _ in QAS}  # the dropped one is still predicted
    summaries = [r for r in caplog.records if "QA training features" in r.getMessage()]
    assert len(summaries) == 1 and summaries[0].levelno == logging.WARNING


def test_edge_whitespace_not_in_the_context_is_looked_for_without_it(zh_tok: Tokenizer) -> None:
    examples = [QAExample("sp", "哪里？", CONTEXT, ("上海 ",), (-1,), "t.json:sp"),
                QAExample("lead", "哪里？", CONTEXT, ("\u3000首都",), (2,), "t.json:lead")]
    feats = build_qa_features(examples, zh_tok, max_seq_length=64, doc_stride=16)
    spans = [(feats.offsets[row][int(feats.start_positions[row])][0],
              feats.offsets[row][int(feats.end_positions[row])][1]) for row in range(2)]
    assert spans == [(6, 8), (3, 5)]
    assert feats.stats["answers_not_found"] == 0


def test_official_quirks_empty_question_and_evaluation_without_offsets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """The official trial set has empty questions; the scorer reads answer texts only, so a
    gold file without (or with malformed) answer_start still evaluates."""
    from zhplm.cli import main

    document = squad_document([("ok", [("首都", 3)]), ("blank", [("北京", 0)])])
    qas = document["data"][0]["paragraphs"][0]["qas"]
    qas[1]["question"] = ""
    del qas[0]["answers"][0]["answer_start"]
    qas[1]["answers"][0]["answer_start"] = "0"
    gold = tmp_path / "gold.json"
    gold.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError, match=r"gold\.json:\d+: .*missing 'answer_start'"):
        read_squad(gold)  # training needs the offsets (or -1)
    with caplog.at_level(logging.WARNING, logger="zhplm"):
        examples = read_squad(gold, need_offsets=False)
    assert [(e.qid, e.question, e.answers, e.answer_starts) for e in examples] == [
        ("ok", "问题ok？", ("首都",), (-1,)), ("blank", "", ("北京",), (-1,))]
    assert [r.getMessage() for r in caplog.records if "empty" in r.getMessage()] == [
        f"{gold}: 1 question(s) are empty (e.g. id blank); kept, with the context alone to "
        f"answer from"]
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({"ok": "首都", "blank": "上海"}, ensure_ascii=False),
                     encoding="utf-8")
    assert main(["evaluate", "--task", "mrc", str(gold), str(preds)]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert (scores["em"], scores["f1"], scores["total"]) == (50.0, 50.0, 2)
