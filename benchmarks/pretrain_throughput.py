"""Pre-training throughput: zhplm vs transformers, tiny and mini, seq 128, batch 32, fp32/bf16.

Real (non-padding) tokens per second and peak memory, each configuration in its own
process (so peak RSS is its own), all in one run; ratios printed at the end. The peer is
`transformers.BertForMaskedLM` with `DataCollatorForLanguageModeling` in a plain AdamW loop
over the built-in reviews (tokenized to at most 128 tokens, padded per batch), which is what a
transformers user writes; zhplm runs its own trainer on the preprocessed built-in corpus
(full-sentence packing, MLM logits at masked positions only). Also times `preprocess`.

    .venv/bin/python benchmarks/pretrain_throughput.py [--steps 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_data import CACHE, corpus_and_vocab

PEAK_FP32_TFLOPS = 0.43  # the figure for this CPU; measured here: ~0.18 (see docs)
PEAK_BF16_TFLOPS = 1.3


def prepare(vocab_size: int) -> tuple[Path, Path, float]:
    """Built-in corpus -> vocab -> dataset (cached); returns the preprocess chars/s."""
    from zhplm.data.corpus import preprocess
    from zhplm.tokenization import Tokenizer

    corpus, vocab = corpus_and_vocab(vocab_size)
    Tokenizer.from_pretrained(vocab).save_pretrained(CACHE / f"tokenizer{vocab_size}")
    dataset = CACHE / f"dataset{vocab_size}"
    meta = preprocess([corpus], vocab, dataset, workers=2, overwrite=True)
    return vocab, dataset, meta["num_characters"] / meta["seconds"]


def flops_per_token(layers: int, hidden: int, vocab: int, seq: int, mlm_share: float) -> float:
    """Training FLOPs per real token: 6 x encoder weights + attention + the MLM head on the
    predicted share of tokens (zhplm's useful work)."""
    encoder = 12 * hidden * hidden * layers
    attention = 2 * seq * hidden * layers
    head = (hidden * hidden + vocab * hidden) * mlm_share
    return 6 * (encoder + head) + 6 * attention


def run_zhplm(size: str, bf16: bool, steps: int, vocab: Path, dataset: Path) -> dict:
    from zhplm.pretraining import PretrainRecipe, run_pretraining
    from zhplm.recipe import load_recipe

    out = Path(tempfile.mkdtemp(prefix="zhplm-bench-run-"))
    recipe = load_recipe(PretrainRecipe, None, [
        f"output_dir={out}", f"model.preset={size}", f"data.dataset={dataset}",
        f"data.vocab={vocab}", "data.seq_length=128", "data.short_seq_prob=0.0",
        "data.dev_fraction=0", "masking.strategy=token", "masking.max_predictions=20",
        "train.batch_size=32", f"train.total_steps={steps + 5}",
        f"train.dtype={'bf16' if bf16 else 'fp32'}",
        "train.report_steps=5", "train.save_checkpoint_steps=1000000",
        "train.progress=false",
    ])
    run_pretraining(recipe)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # Steady state: leave out the first window of 5 steps (instance building, warm-up).
    rates = [r["tokens_per_s"] for r in records if r["step"] > 5 and "tokens_per_s" in r]
    return {"tokens_per_s": sum(rates) / len(rates)}


def run_transformers(size: str, bf16: bool, steps: int, vocab: Path) -> dict:
    import torch
    import transformers
    from transformers import BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling

    from zhplm import datasets
    from zhplm.config import preset

    transformers.logging.set_verbosity_error()
    tokenizer = transformers.BertTokenizer.from_pretrained(
        vocab.parent / vocab.stem.replace("vocab", "tokenizer"))
    n_vocab = sum(1 for _ in vocab.open(encoding="utf-8"))
    assert len(tokenizer) == n_vocab, (len(tokenizer), n_vocab)
    shape = preset(size)
    config = BertConfig(vocab_size=n_vocab, hidden_size=shape.hidden_size,
                        num_hidden_layers=shape.num_hidden_layers,
                        num_attention_heads=shape.num_attention_heads,
                        intermediate_size=shape.intermediate_size)
    model = BertForMaskedLM(config).train()
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    texts = [x.text for x in datasets.load_reviews("train")]
    encoded = tokenizer(texts[: 32 * (steps + 5)], truncation=True, max_length=128)
    features = [{"input_ids": ids} for ids in encoded["input_ids"]]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-6, weight_decay=0.01)
    tokens, start = 0, 0.0
    for step in range(steps + 5):
        if step == 5:
            tokens, start = 0, time.perf_counter()
        batch = collator(features[step * 32:(step + 1) * 32])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
    return {"tokens_per_s": tokens / (time.perf_counter() - start)}


def one(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    system, size, dtype = args.one
    if system == "zhplm":
        result = run_zhplm(size, dtype == "bf16", args.steps, Path(args.vocab), Path(args.data))
    else:
        result = run_transformers(size, dtype == "bf16", args.steps, Path(args.vocab))
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30, help="timed steps (a multiple of 5)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=21128)
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--vocab", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args)
        return
    vocab, dataset, chars_per_s = prepare(args.vocab_size)
    n_vocab = sum(1 for _ in vocab.open(encoding="utf-8"))
    print(f"preprocess (2 workers, jieba word boundaries): {chars_per_s / 1e6:.2f}M chars/s; "
          f"vocab {n_vocab} tokens; {args.threads} threads; {args.steps} timed steps")
    rows = []
    for size in ("tiny", "mini"):
        for dtype in ("fp32", "bf16"):
            results = {}
            for system in ("transformers", "zhplm"):
                cmd = [sys.executable, __file__, "--one", system, size, dtype, "--steps",
                       str(args.steps), "--threads", str(args.threads), "--vocab", str(vocab),
                       "--data", str(dataset)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                results[system] = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append((size, dtype, results))
    from zhplm.config import preset

    print("\n| size | dtype | transformers tok/s | zhplm tok/s | ratio | transformers peak MB "
          "| zhplm peak MB | zhplm model TFLOP/s | utilisation of the issue's peak |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size, dtype, results in rows:
        shape = preset(size)
        flops = flops_per_token(shape.num_hidden_layers, shape.hidden_size, n_vocab, 128, 0.15)
        ours, theirs = results["zhplm"], results["transformers"]
        tflops = ours["tokens_per_s"] * flops / 1e12
        peak = PEAK_BF16_TFLOPS if dtype == "bf16" else PEAK_FP32_TFLOPS
        print(f"| {size} | {dtype} | {theirs['tokens_per_s']:.0f} | {ours['tokens_per_s']:.0f} | "
              f"{ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x | {theirs['peak_mb']:.0f} | "
              f"{ours['peak_mb']:.0f} | {tflops:.3f} | {100 * tflops / peak:.1f} % |")


if __name__ == "__main__":
    main()
