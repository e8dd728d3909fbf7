"""Fine-tuning throughput on `reviews-sentiment`: zhplm vs transformers, same model size.

Training samples/s and peak memory (each configuration in its own process), in one run:
- transformers `BertForSequenceClassification` in a plain AdamW loop, padding every batch to
  max_length (as `run_glue`-style scripts do with `pad_to_max_length`), and with dynamic
  padding (`DataCollatorWithPadding`, random batches);
- zhplm's fine-tuning trainer (length-grouped batches, dynamic padding).
Both fp32 and bf16 autocast; the same 1024 training reviews, seq <= 128, batch 32.

    .venv/bin/python benchmarks/finetune_throughput.py [--size tiny] [--threads 2]
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

CACHE = Path(tempfile.gettempdir()) / "zhplm-bench-ft"
N_TRAIN, BATCH, SEQ = 1024, 32, 128


def prepare(size: str) -> Path:
    """A randomly initialised model of `size` with a vocab built on the built-in corpus."""
    import torch

    from zhplm import datasets
    from zhplm.config import preset
    from zhplm.modeling import BertForMaskedLM
    from zhplm.tokenization import Tokenizer, build_vocab

    model_dir = CACHE / size
    if (model_dir / "config.json").is_file():
        return model_dir
    CACHE.mkdir(parents=True, exist_ok=True)
    corpus = datasets.write_corpus(CACHE / "corpus.txt")
    build_vocab([corpus], vocab_size=8000, out=CACHE / "vocab.txt")
    tokenizer = Tokenizer.from_pretrained(CACHE / "vocab.txt")
    torch.manual_seed(0)
    BertForMaskedLM(preset(size, vocab_size=tokenizer.vocab_size)).save_pretrained(
        model_dir, tokenizer=tokenizer)
    return model_dir


def train_texts() -> tuple[list[str], list[int]]:
    from zhplm.finetuning import FinetuneConfig, load_examples

    examples = load_examples(FinetuneConfig(task="reviews-sentiment", max_train_examples=N_TRAIN),
                             "train")
    return [e.text_a for e in examples], [int(e.label == "positive") for e in examples]


def run_zhplm(model_dir: Path, bf16: bool) -> dict:
    import torch

    from zhplm.finetuning import FinetuneConfig, FinetuneRun, _train

    config = FinetuneConfig(task="reviews-sentiment", model=str(model_dir),
                            output_dir=tempfile.mkdtemp(prefix="zhplm-ft-bench-"),
                            max_train_examples=N_TRAIN, max_seq_length=SEQ, batch_size=BATCH,
                            epochs=1, lr=1e-4, dtype="bf16" if bf16 else "fp32", do_eval=False,
                            save_checkpoints=False, progress=False)
    run = FinetuneRun(config)
    # The first AdamW step imports torch._dynamo and sympy (~1.3 s, once per process);
    # `import transformers` already did that in the peer's process, outside its timed loop.
    warm = torch.nn.Parameter(torch.zeros(1))
    warm.grad = torch.ones(1)
    torch.optim.AdamW([warm], foreach=True).step()
    run.examples["dev"] = run.examples["test"] = []
    run.features.pop("dev", None)
    run.features.pop("test", None)
    start = time.perf_counter()
    _train(run, has_dev=False)
    return {"samples_per_s": N_TRAIN / (time.perf_counter() - start)}


def run_transformers(model_dir: Path, bf16: bool, dynamic: bool) -> dict:
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    tokenizer = transformers.BertTokenizerFast.from_pretrained(model_dir)
    model = transformers.BertForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    texts, labels = train_texts()
    encoded = tokenizer(texts, truncation=True, max_length=SEQ,
                        padding=False if dynamic else "max_length")
    rows = [{"input_ids": encoded["input_ids"][i], "token_type_ids":
             encoded["token_type_ids"][i], "attention_mask": encoded["attention_mask"][i],
             "labels": labels[i]} for i in range(len(texts))]
    collator = transformers.DataCollatorWithPadding(tokenizer)
    loader = torch.utils.data.DataLoader(rows, batch_size=BATCH, shuffle=True,
                                         collate_fn=collator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, 3, len(loader))
    model.train()
    start = time.perf_counter()
    for batch in loader:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return {"samples_per_s": N_TRAIN / (time.perf_counter() - start)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        system, dtype = args.one
        model_dir = CACHE / args.size
        bf16 = dtype == "bf16"
        if system == "zhplm":
            result = run_zhplm(model_dir, bf16)
        else:
            result = run_transformers(model_dir, bf16, dynamic=system == "transformers-dynamic")
        result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    prepare(args.size)
    systems = ("transformers-max-length", "transformers-dynamic", "zhplm")
    print(f"reviews-sentiment, {args.size}, {N_TRAIN} training reviews, seq <= {SEQ}, batch "
          f"{BATCH}, {args.threads} threads")
    print("\n| dtype | system | samples/s | peak MB | zhplm speed-up |")
    print("|---|---|---|---|---|")
    for dtype in ("fp32", "bf16"):
        results = {}
        for system in systems:
            cmd = [sys.executable, __file__, "--one", system, dtype, "--size", args.size,
                   "--threads", str(args.threads)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[system] = json.loads(done.stdout.strip().splitlines()[-1])
        ours = results["zhplm"]["samples_per_s"]
        for system in systems:
            r = results[system]
            ratio = "" if system == "zhplm" else f"{ours / r['samples_per_s']:.2f}x"
            print(f"| {dtype} | {system} | {r['samples_per_s']:.1f} | {r['peak_mb']:.0f} | "
                  f"{ratio} |")


if __name__ == "__main__":
    main()
