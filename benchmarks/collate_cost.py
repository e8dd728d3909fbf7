"""Collation cost per optimiser step at the recipes' real shapes, against the step time.

    python benchmarks/collate_cost.py [--steps 3] [--workers 0,2]

For `roberta-base-stage2` (seq 512, global batch 128, token masking) and `lert-small` (seq 512,
global batch 1024, n-gram masking over words + LERT's linguistic labels), it times what the
training process would do for one optimiser step's batches: cut the instances from the
memory-mapped shards and collate them (mask, pad, labels), on the built-in corpus
(preprocessed here; the LERT dataset annotated by jieba). With `--workers N` the same batches
come through `InstanceStream` with N collation processes, which is what a step waits for
once the pipeline is primed (`data_wait_s`).

The step it is compared with: one forward + backward of the recipe's model on this CPU for a
micro-batch of `--micro` sequences, scaled to the global batch (the optimiser update is left
out: it does not grow with the batch).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_data import builtin_dataset, corpus_and_vocab

from zhplm.config import preset
from zhplm.data.collate import PretrainCollator
from zhplm.data.epochs import Corpus, DocumentSet, build_epoch
from zhplm.data.instances import InstanceConfig, SpecialIds
from zhplm.data.masking import MaskingConfig
from zhplm.data.shards import TokenDataset
from zhplm.data.stream import InstanceStream
from zhplm.modeling.bert import BertForMaskedLM
from zhplm.tokenization import Tokenizer

SHAPES = {  # recipe: (model preset, seq, global batch, masking, annotated)
    "roberta-base-stage2": ("base", 512, 128,
                            MaskingConfig(strategy="token", mask_prob=0.15, max_predictions=77),
                            False),
    "lert-small": ("lert-small", 512, 1024,
                   MaskingConfig(strategy="ngram", mask_prob=0.15, max_predictions=75), True),
}


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor()


def datasets_for_recipes() -> tuple[Path, Path, Path]:
    """(vocab, plain dataset, annotated dataset) of the built-in corpus, cached."""
    _, vocab = corpus_and_vocab(8000)
    return vocab, builtin_dataset(vocab), builtin_dataset(vocab, 6000, annotate="jieba")


def collate_seconds(dataset: Path, special: SpecialIds, seq: int, batch: int,
                    masking: MaskingConfig, steps: int, workers: int) -> float:
    """Seconds per step the training process spends getting one step's batches."""
    data = TokenDataset(dataset)
    corpus = Corpus(data.shards, DocumentSet(data.num_documents))
    config = InstanceConfig("full_sentences", seq, 0.1)
    collate = PretrainCollator(masking, special, seed=7)
    stream = InstanceStream(lambda e: build_epoch(corpus, config, special, 7, e), collate,
                            batch // 8, 0, 1, workers=workers, prefetch=2)
    try:
        stream.next_step(8)  # primes the epoch index (and the workers)
        if workers:
            time.sleep(5)  # let the workers fill their prefetch queues, as during training
        start = time.perf_counter()
        for _ in range(steps):
            stream.next_step(8)
        return (time.perf_counter() - start) / steps
    finally:
        stream.close()


def step_seconds(model_preset: str, vocab_size: int, seq: int, micro: int) -> float:
    """Forward + backward seconds of one micro-batch (MLM at 15 % of the positions)."""
    model = BertForMaskedLM(preset(model_preset, vocab_size=vocab_size)).train()
    ids = torch.randint(200, vocab_size, (micro, seq))
    masked = torch.arange(0, micro * seq, 7)  # 15 % of the positions
    times = []
    for _ in range(3):
        start = time.perf_counter()
        hidden = model.bert(ids, torch.ones_like(ids)).last_hidden_state
        logits = model.masked_lm_logits(hidden.reshape(-1, hidden.shape[-1])[masked])
        torch.nn.functional.cross_entropy(logits, ids.reshape(-1)[masked]).backward()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--micro", type=int, default=4)
    args = parser.parse_args()
    vocab, plain, annotated = datasets_for_recipes()
    tokenizer = Tokenizer.from_pretrained(vocab)
    special = SpecialIds.from_tokenizer(tokenizer)
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, fp32")
    print("| recipe | seq x global batch | collation workers | collate s / step | "
          "model fwd+bwd s / step (this CPU) | collate / step |")
    print("|---|---|---:|---:|---:|---:|")
    for name, (model_preset, seq, batch, masking, labelled) in SHAPES.items():
        step = step_seconds(model_preset, tokenizer.vocab_size, seq, args.micro) * \
            batch / args.micro
        for workers in (int(w) for w in args.workers.split(",")):
            seconds = collate_seconds(annotated if labelled else plain, special, seq, batch,
                                      masking, args.steps, workers)
            print(f"| {name} | {seq} x {batch} | {workers} | {seconds:.3f} | {step:.1f} | "
                  f"{seconds / step:.2%} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
