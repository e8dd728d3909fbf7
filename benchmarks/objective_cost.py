"""What StructBERT's objectives cost on top of MLM, and what the jieba annotator costs.

Pre-trains tiny and mini on the built-in corpus (vocab padded to 21128, seq 128, batch 32)
with MLM alone, MLM + word order (shuffled trigrams) and full StructBERT (+ the 3-way
sentence order over next / previous / random pairs), the same number of steps each, in one
run, and prints tokens/s with the ratio to MLM. Then times LERT's jieba annotator against
jieba's plain segmentation on the corpus (characters/s).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/objective_cost.py [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time

from bench_data import CACHE, corpus_and_vocab

VARIANTS = {
    "MLM": {"objectives.mlm": 1.0},
    "MLM + word order": {"objectives.mlm": 1.0, "objectives.word_order": 1.0},
    "StructBERT": {"objectives.mlm": 1.0, "objectives.word_order": 1.0,
                   "objectives.sentence_order": 1.0, "data.kind": "sentence_order"},
}


def tokens_per_s(size: str, overrides: dict, dataset, vocab, steps: int, dtype: str) -> float:
    """Mean tokens/s over the report windows after the first."""
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
    rates = [json.loads(line)["tokens_per_s"] for line in
             (out / "metrics.jsonl").read_text().splitlines() if "tokens_per_s" in line]
    return sum(rates[1:]) / len(rates[1:])


def annotator_speed(corpus, limit_chars: int = 1_000_000) -> tuple[float, float]:
    """(jieba annotator chars/s, jieba.cut chars/s) on the first `limit_chars` of the corpus."""
    import jieba

    from zhplm.data.annotate import JiebaAnnotator

    lines, total = [], 0
    for line in corpus.open(encoding="utf-8"):
        lines.append(line.strip())
        total += len(lines[-1])
        if total >= limit_chars:
            break
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
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--sizes", default="tiny,mini")
    parser.add_argument("--dtype", default="fp32")
    args = parser.parse_args()
    from zhplm.data.corpus import preprocess
    from zhplm.env import env_line

    print(env_line())
    corpus, vocab = corpus_and_vocab(21128)
    dataset = CACHE / "dataset21128"
    if not (dataset / "meta.json").is_file():
        preprocess([corpus], vocab, dataset, workers=2, overwrite=True)
    print(f"{args.steps} steps per run, batch 32 x seq 128, {args.dtype}")
    print("| size | objectives | tokens/s | vs MLM |\n|---|---|---|---|")
    for size in args.sizes.split(","):
        base = None
        for name, overrides in VARIANTS.items():
            rate = tokens_per_s(size, overrides, dataset, vocab, args.steps, args.dtype)
            base = base or rate
            print(f"| {size} | {name} | {rate:.0f} | {rate / base:.2f}x |", flush=True)
    annotated, plain = annotator_speed(corpus)
    print(f"\njieba annotator (POS + NER per character): {annotated / 1e3:.1f}k chars/s; "
          f"jieba.cut alone: {plain / 1e3:.1f}k chars/s ({annotated / plain:.2f}x)")


if __name__ == "__main__":
    main()
