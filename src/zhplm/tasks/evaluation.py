"""`zhplm evaluate`: score prediction files made anywhere against gold files.

- `mrc`: gold SQuAD/CMRC JSON, predictions `{qid: answer}` JSON -> CMRC 2018 EM/F1 (answer
  texts only: `answer_start`, often -1 or wrong in official files, is ignored);
- `ner`: gold and predictions both "char TAG" (or UER TSV) files -> entity P/R/F1;
- `classification`: gold TSV/JSON lines with labels, predictions TSV with a header holding
  `label` (and `id`, matched to the gold ids; else matched by order) or one label per line.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from zhplm.errors import DataError, InputError
from zhplm.tasks.metrics import classification_scores, cmrc_scores, entity_scores
from zhplm.tasks.readers import read_ner, read_squad, read_task_file


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 ({exc})") from None


def evaluate_mrc(gold: Path, predictions: Path) -> dict[str, Any]:
    """CMRC 2018 EM/F1 of a `{qid: answer}` file, by the official algorithm over every gold
    answer text; `answer_start` is never used (official files hold -1 and wrong offsets)."""
    examples = read_squad(gold, need_offsets=False)
    unanswered = next((e for e in examples if not e.answers), None)
    if unanswered is not None:
        raise DataError(f"{unanswered.source}: this gold question has no answers (a test "
                        "file?); evaluation needs gold answer texts for every question")
    try:
        predicted = json.loads(_read_text(predictions))
    except json.JSONDecodeError as exc:
        raise DataError(f"{predictions}:{exc.lineno}: not JSON ({exc.msg})") from None
    if not isinstance(predicted, dict):
        raise DataError(f"{predictions}: expected a JSON object {{qid: answer}}")
    return cmrc_scores(predicted, {e.qid: list(e.answers) for e in examples})


def evaluate_ner(gold: Path, predictions: Path, scheme: str = "BIO") -> dict[str, Any]:
    """Entity precision/recall/F1 (strict), sentence by sentence."""
    gold_examples = read_ner(gold, scheme=scheme)
    predicted = read_ner(predictions, scheme=scheme)
    if len(gold_examples) != len(predicted):
        raise DataError(f"{predictions}: {len(predicted)} sentences, but {gold} has "
                        f"{len(gold_examples)}; predict every gold sentence in order")
    for g, p in zip(gold_examples, predicted, strict=True):
        if g.tags is None or p.tags is None:
            raise DataError(f"{(g if g.tags is None else p).source}: no tags")
        if len(g.tags) != len(p.tags):
            raise DataError(f"{p.source}: {len(p.tags)} tags, but the gold sentence at "
                            f"{g.source} has {len(g.tags)}")
    return entity_scores([list(g.tags) for g in gold_examples],  # type: ignore[arg-type]
                         [list(p.tags) for p in predicted], scheme=scheme)  # type: ignore[arg-type]


def _predicted_labels(path: Path) -> tuple[list[str], list[str] | None]:
    rows = [r for r in csv.reader(_read_text(path).splitlines(), delimiter="\t") if r]
    if not rows:
        raise DataError(f"{path}: empty prediction file")
    header = rows[0]
    if "label" in header:
        column = header.index("label")
        ids = [r[header.index("id")] for r in rows[1:]] if "id" in header else None
        for n, r in enumerate(rows[1:], 2):
            if len(r) <= column:
                raise DataError(f"{path}:{n}: no label column")
        return [r[column] for r in rows[1:]], ids
    return [r[0] for r in rows], None


def evaluate_classification(gold: Path, predictions: Path) -> dict[str, Any]:
    """Accuracy, macro-F1 and MCC of predicted labels."""
    examples = read_task_file(gold, "classification")
    labels, ids = _predicted_labels(predictions)
    if ids is not None:
        by_id = dict(zip(ids, labels, strict=True))
        missing = [e.guid for e in examples if e.guid not in by_id]
        if missing:
            raise DataError(f"{predictions}: no prediction for id(s) {', '.join(missing[:5])}")
        labels = [by_id[e.guid] for e in examples]
    elif len(labels) != len(examples):
        raise DataError(f"{predictions}: {len(labels)} predictions for {len(examples)} gold "
                        f"examples in {gold}")
    return classification_scores(labels, [str(e.label) for e in examples])


def evaluate_files(task: str, gold: str | Path, predictions: str | Path,
                   scheme: str = "BIO") -> dict[str, Any]:
    """Score `predictions` against `gold` with the task's official metric (`scheme`: the
    NER tagging scheme, BIO or BIOES)."""
    gold, predictions = Path(gold), Path(predictions)
    if task == "mrc":
        return evaluate_mrc(gold, predictions)
    if task == "ner":
        return evaluate_ner(gold, predictions, scheme=scheme)
    if task == "classification":
        return evaluate_classification(gold, predictions)
    raise InputError(f"--task {task!r}: choose mrc, ner or classification")
