"""What StructBERT's and LERT's objectives cost on top of MLM, and what LERT's jieba annotation
costs in preprocessing (issue 9).

Pre-trains tiny and mini on the built-in corpus (vocab padded to 21128, seq 128, batch 32),
the same number of steps each, in one run:

- MLM alone (whole-word masking, packed full sentences), MLM + word order (shuffled
  trigrams), and full StructBERT (+ the 3-way sentence order over next / previous / random
  pairs). StructBERT's pairs hold fewer tokens than packed full sentences, so it is also
  compared with MLM alone on `data.kind: nsp` pairs (the pair-shaped baseline:
  `data.kind: sentence_order` without the sentence_order objective is refused by the recipe
  check).
- MLM (n-gram masking) and LERT (MLM + POS / NER heads; jieba gives no DEP) on the dataset
  preprocessed with `annotate="jieba"`.

Each variant reports tokens/s, ms per optimiser step and the extra cost of its step over
its MLM baseline on the same data (ms_step / ms_step_MLM - 1; the issue's budget is 15 %).
Variants run interleaved, `--repeats` times each; a row is its fastest 10-step report window
(the first window, with the warm-up, left out), so that other load on a shared machine
inflates it less.
Then it times `preprocess` on the first ~1M characters of the corpus with and without
`annotate="jieba"`, 1 and 2 workers (characters/s), and the jieba annotator against
jieba's plain segmentation in this process.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/objective_cost.py --steps 60 --sizes tiny,mini
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from bench_data import CACHE, corpus_and_vocab

MLM = {"objectives.mlm": 1.0}
PAIRS = {"data.kind": "nsp"}  # data.kind sentence_order without its objective is refused
NGRAM = {"masking.strategy": "ngram"}
# name -> (dataset: "plain" or "jieba", overrides, its MLM baseline on the same data or None)
VARIANTS: dict[str, tuple[str, dict, str | None]] = {
    "MLM": ("plain", MLM, None),
    "MLM + word order": ("plain", {**MLM, "objectives.word_order": 1.0}, "MLM"),
    "MLM (nsp pairs)": ("plain", {**MLM, **PAIRS}, None),
    "StructBERT": ("plain", {**MLM, "objectives.word_order": 1.0,
                             "objectives.sentence_order": 1.0, "data.kind": "sentence_order"},
                   "MLM (nsp pairs)"),
    "MLM (ngram, annotated)": ("jieba", {**MLM, **NGRAM}, None),
    "LERT": ("jieba", {**MLM, "objectives.lert": 1.0, **NGRAM}, "MLM (ngram, annotated)"),
}
BUDGET = 0.15


def train_rates(size: str, overrides: dict, dataset, vocab, steps: int,
                dtype: str) -> list[tuple[float, float]]:
    """(tokens/s, steps/s) of each report window of 10 steps after the first."""
    from zhplm.pretraining import PretrainRecipe, run_pretraining
    from zhplm.recipe import load_recipe

    out = CACHE / "objective-cost-run"
    shutil.rmtree(out, ignore_errors=True)
    settings = {"output_dir": str(out), "model.preset": size, "data.dataset": str(dataset),
                "data.vocab": str(vocab), "data.seq_length": 128, "data.dev_fraction": 0,
                "masking.strategy": "wwm", "train.batch_size": 32,
                "train.total_steps": steps, "train.report_steps": 10,
                "train.save_checkpoint_steps": 0, "train.progress": "false",
                "train.dtype": dtype, **overrides}
    run_pretraining(load_recipe(PretrainRecipe, None, [f"{k}={v}" for k, v in
                                                         settings.items()]))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    windows = [(r["tokens_per_s"], r["steps_per_s"]) for r in records
               if "tokens_per_s" in r][1:]
    if not windows:
        raise SystemExit(f"--steps {steps}: need at least two report windows of 10 steps")
    return windows


def corpus_head(corpus: Path, limit_chars: int) -> list[str]:
    """The corpus's first lines (documents) holding at least `limit_chars` characters."""
    lines, total = [], 0
    for line in corpus.open(encoding="utf-8"):
        lines.append(line.rstrip("\n"))
        total += len(lines[-1])
        if total >= limit_chars:
            break
    return lines


def preprocess_speed(corpus: Path, vocab: Path, limit_chars: int = 1_000_000) -> None:
    """Print preprocess chars/s on the corpus's first ~`limit_chars`, with and without jieba
    annotation, 1 and 2 workers."""
    from zhplm.data.corpus import preprocess

    with tempfile.TemporaryDirectory() as tmp:
        head = Path(tmp) / "head.txt"
        head.write_text("\n".join(corpus_head(corpus, limit_chars)) + "\n", encoding="utf-8")
        preprocess([head], vocab, Path(tmp) / "warm", workers=1)  # jieba's dictionary, once
        print("\n| preprocess | workers | characters | seconds | chars/s |\n|---|---|---|---|---|")
        for annotate in (None, "jieba"):
            for workers in (1, 2):
                meta = preprocess([head], vocab, Path(tmp) / "out", workers=workers,
                                  annotate=annotate, overwrite=True)
                print(f"| {'--annotate jieba' if annotate else 'plain (jieba segmenter)'} | "
                      f"{workers} | {meta['num_characters']} | {meta['seconds']:.2f} | "
                      f"{meta['num_characters'] / meta['seconds'] / 1e3:.1f}k |", flush=True)


def annotator_speed(corpus: Path, limit_chars: int = 1_000_000) -> tuple[float, float]:
    """(jieba annotator chars/s, jieba.cut chars/s) on the first `limit_chars` of the corpus."""
    import jieba

    from zhplm.data.annotate import JiebaAnnotator

    lines = [line.strip() for line in corpus_head(corpus, limit_chars)]
    total = sum(map(len, lines))
    annotator = JiebaAnnotator()
    annotator.annotate(lines[0])  # load the dictionaries outside the timing
    list(jieba.cut(lines[0]))
    start = time.perf_counter()
    for line in lines:
        if line:
            annotator.annotate(line)
    annotated = total / (time.perf_counter() - start)
    start = time.perf_counter()
    for line in lines:
        list(jieba.cut(line))
    return annotated, total / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--sizes", default="tiny,mini")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs of each variant, interleaved with the others")
    args = parser.parse_args()
    from zhplm.data.corpus import preprocess
    from zhplm.env import env_line

    print(env_line())
    corpus, vocab = corpus_and_vocab(21128)
    datasets = {"plain": CACHE / "dataset21128", "jieba": CACHE / "dataset21128-jieba"}
    for annotate, dataset in datasets.items():
        if not (dataset / "meta.json").is_file():
            preprocess([corpus], vocab, dataset, workers=2, overwrite=True,
                       annotate=None if annotate == "plain" else annotate)
    print(f"{args.steps} steps per run x {args.repeats} (variants interleaved), batch 32 x "
          f"seq 128, {args.dtype}; each row is the fastest report window of 10 steps after "
          f"the first (robust to other load on the machine)")
    print("| size | objectives | tokens/s | ms/step | tokens/step | step cost vs MLM "
          "(same data) |\n|---|---|---|---|---|---|")
    over = []
    for size in args.sizes.split(","):
        windows: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
        for _ in range(args.repeats):
            for name, (data, overrides, _baseline) in VARIANTS.items():
                windows[name] += train_rates(size, overrides, datasets[data], vocab,
                                             args.steps, args.dtype)
        ms_step = {name: 1e3 / max(s for _, s in rates) for name, rates in windows.items()}
        for name, (_data, _overrides, baseline) in VARIANTS.items():
            tokens, steps = max(windows[name], key=lambda window: window[1])
            cost = "baseline"
            if baseline is not None:
                extra = ms_step[name] / ms_step[baseline] - 1
                cost = f"{extra:+.1%} vs {baseline}"
                if name == "StructBERT":
                    cost += f" ({ms_step[name] / ms_step['MLM'] - 1:+.1%} vs MLM packed)"
                if extra > BUDGET:
                    over.append(f"{size} {name}")
            print(f"| {size} | {name} | {tokens:.0f} | {ms_step[name]:.0f} | "
                  f"{tokens / steps:.0f} | {cost} |", flush=True)
    print(f"over the {BUDGET:.0%} budget: {', '.join(over) or 'none'}")
    preprocess_speed(corpus, vocab)
    annotated, plain = annotator_speed(corpus)
    print(f"\njieba annotator (POS + NER per character), in-process: {annotated / 1e3:.1f}k "
          f"chars/s; jieba.cut alone: {plain / 1e3:.1f}k chars/s ({annotated / plain:.2f}x)")


if __name__ == "__main__":
    main()
