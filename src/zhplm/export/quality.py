"""How much int8 costs: `model_int8.onnx` against `model.onnx`, both through the zhplm
pipelines (ONNX Runtime backend), on real held-out text.

Text: `FILE` (one text per line; up to `MAX_FILE_TEXTS`, a seeded sample beyond that), else a
fixed seeded sample of `SAMPLE_SIZE` lines of the built-in corpus's *test* split
(`zhplm.datasets.corpus_lines("test")`: reviews and People's Daily sentences no zhplm
recipe trains on), else, for a vocabulary without Chinese characters, the built-in English
sentences of `export.validation`. Every text is cut to `MAX_TOKENS` tokens (at a token
boundary) so no pipeline truncates it.

Per task, int8 is scored against fp32 (fp32 is the reference, not gold labels):

* fill-mask: one random non-special token per text (seeded) is replaced by `[MASK]`; top-1
  agreement of the predicted token. Target >= 95 %.
* feature-extraction: cosine of the mean-pooled vectors, mean over texts (and the min).
  Target >= 0.99.
* text-classification: label agreement. Target >= 98 %.
* token-classification: entity-level F1 of int8's entities (start, end, type; "simple"
  aggregation) against fp32's. Report only.
* question-answering: exact-match agreement of the answers (a fixed question per context).
  Report only.
* replaced-token-detection: agreement of the per-token `replaced` flags. Report only.

A miss is not an error: the report's `verdict` says so plainly and names the fp32 file.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zhplm.errors import ConfigError

logger = logging.getLogger("zhplm")

SAMPLE_SIZE = 200
MAX_FILE_TEXTS = 1000
MAX_TOKENS = 126  # real tokens per text; + [CLS] [SEP] = 128
SEED = 0

# task -> (metric key, threshold, how the message names it, shown as a percentage)
TARGETS: dict[str, tuple[str, float, str, bool]] = {
    "fill-mask": ("top1_agreement", 0.95, "fill-mask top-1", True),
    "feature-extraction": ("mean_cosine", 0.99, "feature-extraction cosine", False),
    "text-classification": ("label_agreement", 0.98, "classification label agreement", True),
}
# the headline number of the report-only tasks
REPORT_ONLY: dict[str, tuple[str, str, bool]] = {
    "token-classification": ("entity_f1", "token-classification entity F1 vs fp32", False),
    "question-answering": ("exact_match_agreement", "QA answer exact-match agreement", True),
    "replaced-token-detection": ("flag_agreement", "RTD replaced-flag agreement", True),
}
ZH_QUESTIONS = ("这是什么？", "谁？", "在哪里？", "为什么？", "怎么样？")
EN_QUESTIONS = ("What is this about?", "Who is it?", "Where is it?", "Why?", "How is it?")


def _fmt(value: float, percent: bool) -> str:
    return f"{100 * value:.1f}%" if percent else f"{value:.4f}"


# --------------------------------------------------------------------------- texts


def read_text_file(path: str | os.PathLike[str]) -> list[str]:
    """Non-empty lines of `path` (UTF-8), stripped; a ConfigError names the file/line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"--calibration-text {path}: cannot read it ({exc.strerror}); give "
                          f"a UTF-8 text file, one text per line") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"--calibration-text {path}, line {line}: not valid UTF-8; give a "
                          f"UTF-8 text file, one text per line") from None
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ConfigError(f"--calibration-text {path}: no non-empty line; give one text per "
                          f"line")
    return lines


def held_out_texts(chinese: bool, calibration_text: str | os.PathLike[str] | None = None,
                   seed: int = SEED) -> tuple[list[str], str]:
    """The texts int8 is judged on, and a description of where they come from."""
    rng = np.random.default_rng(seed)
    if calibration_text is not None:
        lines = read_text_file(calibration_text)
        source = f"file {calibration_text} ({len(lines)} lines)"
        if len(lines) > MAX_FILE_TEXTS:
            keep = np.sort(rng.choice(len(lines), MAX_FILE_TEXTS, replace=False))
            lines = [lines[i] for i in keep]
            source += f", seeded sample of {MAX_FILE_TEXTS}"
        return lines, source
    if not chinese:
        from zhplm.export.validation import ENGLISH_SENTENCES

        return list(ENGLISH_SENTENCES), (
            f"built-in English sentences ({len(ENGLISH_SENTENCES)}; the vocabulary has no "
            f"Chinese characters -- pass --calibration-text FILE for more)")
    from zhplm.datasets import corpus_lines

    train = set(corpus_lines("train"))  # a few short People's Daily lines repeat
    lines = [line for line in corpus_lines("test") if line not in train]
    keep = np.sort(rng.choice(len(lines), min(SAMPLE_SIZE, len(lines)), replace=False))
    return [lines[i] for i in keep], (
        f"built-in corpus, test split (lines not in the train split): seeded sample of "
        f"{len(keep)} of {len(lines)} lines")


def cut_texts(texts: Sequence[str], tokenizer: Any, max_tokens: int = MAX_TOKENS
              ) -> list[str]:
    """Each text cut after its `max_tokens`-th token (texts that tokenize to nothing are
    dropped)."""
    encoded = tokenizer(list(texts), return_offsets_mapping=True)
    out = []
    for text, offsets in zip(texts, encoded["offset_mapping"], strict=True):
        real = [(s, e) for s, e in offsets if e > s]
        if not real:
            continue
        out.append(text[: real[min(max_tokens, len(real)) - 1][1]])
    return out


def mask_one_token(texts: Sequence[str], tokenizer: Any, seed: int = SEED) -> list[str]:
    """Each text with one random non-special token (seeded) replaced by the mask token."""
    rng = np.random.default_rng(seed)
    encoded = tokenizer(list(texts), return_offsets_mapping=True)
    out = []
    for text, offsets in zip(texts, encoded["offset_mapping"], strict=True):
        spans = [(s, e) for s, e in offsets if e > s]
        s, e = spans[int(rng.integers(len(spans)))]
        out.append(text[:s] + tokenizer.mask_token + text[e:])
    return out


# --------------------------------------------------------------------------- metrics


def _fill_mask(fp32: Any, int8: Any, texts: list[str], tokenizer: Any) -> dict[str, Any]:
    masked = mask_one_token(texts, tokenizer)
    a = [r[0]["token"] for r in fp32(masked, top_k=1)]
    b = [r[0]["token"] for r in int8(masked, top_k=1)]
    return {"top1_agreement": float(np.mean([x == y for x, y in zip(a, b, strict=True)])),
            "masked_texts": len(masked)}


def _feature_extraction(fp32: Any, int8: Any, texts: list[str], tokenizer: Any
                        ) -> dict[str, Any]:
    a = fp32(texts, pooling="mean", normalize=True)
    b = int8(texts, pooling="mean", normalize=True)
    cosine = (a * b).sum(-1)
    return {"mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()),
            "pooling": "mean"}


def _text_classification(fp32: Any, int8: Any, texts: list[str], tokenizer: Any
                         ) -> dict[str, Any]:
    a, b = fp32(texts, top_k=1), int8(texts, top_k=1)
    same = [x["label"] == y["label"] for x, y in zip(a, b, strict=True)]
    return {"label_agreement": float(np.mean(same)),
            "max_score_diff": float(max(abs(x["score"] - y["score"])
                                        for x, y in zip(a, b, strict=True)))}


def _token_classification(fp32: Any, int8: Any, texts: list[str], tokenizer: Any
                          ) -> dict[str, Any]:
    def spans(results: list[list[dict[str, Any]]]) -> set[tuple[int, int, int, str]]:
        return {(k, e["start"], e["end"], e["entity_group"])
                for k, entities in enumerate(results) for e in entities}

    gold = spans(fp32(texts, aggregation_strategy="simple"))
    pred = spans(int8(texts, aggregation_strategy="simple"))
    correct = len(gold & pred)
    if not gold and not pred:
        f1 = 1.0  # both find nothing: they agree
    else:
        f1 = 2 * correct / (len(gold) + len(pred))
    return {"entity_f1": f1, "fp32_entities": len(gold), "int8_entities": len(pred),
            "matching_entities": correct, "aggregation": "simple"}


def _question_answering(fp32: Any, int8: Any, texts: list[str], tokenizer: Any
                        ) -> dict[str, Any]:
    from zhplm.export.validation import has_cjk

    questions = ZH_QUESTIONS if has_cjk(tokenizer) else EN_QUESTIONS
    items = [{"question": questions[i % len(questions)], "context": text}
             for i, text in enumerate(texts)]
    a, b = fp32(items), int8(items)
    same = [x["answer"] == y["answer"] and x["start"] == y["start"]
            for x, y in zip(a, b, strict=True)]
    return {"exact_match_agreement": float(np.mean(same)), "questions": list(questions)}


def _replaced_token_detection(fp32: Any, int8: Any, texts: list[str], tokenizer: Any
                              ) -> dict[str, Any]:
    a, b = fp32(texts), int8(texts)
    flags = [x["replaced"] == y["replaced"]
             for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True)]
    texts_same = [all(x["replaced"] == y["replaced"] for x, y in zip(ra, rb, strict=True))
                  for ra, rb in zip(a, b, strict=True)]
    return {"flag_agreement": float(np.mean(flags)), "tokens": len(flags),
            "texts_all_flags_agree": float(np.mean(texts_same))}


MEASURES = {
    "fill-mask": _fill_mask,
    "feature-extraction": _feature_extraction,
    "text-classification": _text_classification,
    "token-classification": _token_classification,
    "question-answering": _question_answering,
    "replaced-token-detection": _replaced_token_detection,
}


# --------------------------------------------------------------------------- the check


def int8_quality(export_dir: str | os.PathLike[str], task: str,
                 calibration_text: str | os.PathLike[str] | None = None,
                 batch_size: int = 32) -> dict[str, Any]:
    """Compare `model_int8.onnx` with `model.onnx` in `export_dir` (which also holds the
    config and tokenizer) through the zhplm pipelines; returns the `int8_quality` report."""
    from zhplm.backends.base import ONNX_FILE, ONNX_INT8_FILE
    from zhplm.export.validation import has_cjk
    from zhplm.pipelines import pipeline

    start = time.perf_counter()
    export_dir = Path(export_dir)
    options = {"backend": "onnxruntime", "batch_size": batch_size}
    fp32 = pipeline(task, model=export_dir, dtype="fp32", **options)
    int8 = pipeline(task, model=export_dir, dtype="int8", **options)
    tokenizer = fp32.tokenizer
    texts, source = held_out_texts(has_cjk(tokenizer), calibration_text)
    texts = cut_texts(texts, tokenizer)
    metrics = MEASURES[task](fp32, int8, texts, tokenizer)
    sizes = {"fp32_bytes": (export_dir / ONNX_FILE).stat().st_size,
             "int8_bytes": (export_dir / ONNX_INT8_FILE).stat().st_size}
    sizes["int8_over_fp32"] = sizes["int8_bytes"] / sizes["fp32_bytes"]
    report: dict[str, Any] = {
        "task": task,
        "reference": "model.onnx (fp32), both through the zhplm ONNX Runtime pipelines",
        "texts": {"source": source, "count": len(texts), "seed": SEED,
                  "max_tokens": MAX_TOKENS},
        "metrics": metrics,
        "sizes": sizes,
    }
    if task in TARGETS:
        key, threshold, name, percent = TARGETS[task]
        value = metrics[key]
        met = value >= threshold
        report["target"] = {"metric": key, "threshold": threshold, "value": value, "met": met}
        if met:
            report["verdict"] = (f"int8 meets the {name} target: {_fmt(value, percent)} >= "
                                 f"{_fmt(threshold, percent)}")
        else:
            report["verdict"] = (f"int8 misses the {name} target: {_fmt(value, percent)} < "
                                 f"{_fmt(threshold, percent)}; use model.onnx (fp32)")
            logger.warning("%s", report["verdict"])
    else:
        key, name, percent = REPORT_ONLY[task]
        report["target"] = None
        report["verdict"] = (f"{name}: {_fmt(metrics[key], percent)} (no int8 target for "
                             f"{task}; report only)")
    report["seconds"] = round(time.perf_counter() - start, 2)
    return report


def format_quality(quality: dict[str, Any]) -> str:
    """The `int8_quality` report as a small table plus its verdict."""
    rows = [("texts", f"{quality['texts']['count']} ({quality['texts']['source']})")]
    for key, value in quality["metrics"].items():
        if isinstance(value, float):
            rows.append((key, f"{value:.4f}"))
        elif isinstance(value, (int, str)):
            rows.append((key, str(value)))
    target = quality.get("target")
    if target:
        rows.append(("target", f"{target['metric']} >= {target['threshold']:g}: "
                               f"{'met' if target['met'] else 'MISSED'}"))
    sizes = quality["sizes"]
    rows.append(("model.onnx", f"{sizes['fp32_bytes'] / 1e6:.1f} MB"))
    rows.append(("model_int8.onnx", f"{sizes['int8_bytes'] / 1e6:.1f} MB "
                                    f"({100 * sizes['int8_over_fp32']:.0f}% of fp32)"))
    width = max(len(k) for k, _ in rows)
    lines = [f"int8 quality vs fp32 ({quality['task']}):"]
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    lines.append(quality["verdict"])
    return "\n".join(lines)
