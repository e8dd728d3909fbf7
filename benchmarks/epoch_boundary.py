"""Does a step wait at an epoch boundary? `zhplm pretrain` over several short epochs.

    python benchmarks/epoch_boundary.py [--documents 4000] [--epochs 3] [--workers 0,2]

Preprocesses the first `--documents` documents of the built-in corpus (8000-token vocab, made
here), then pre-trains the tiny preset (seq 128, batch 32, fp32, report every step) for
`--epochs` epochs with each number of collation workers, and prints, from metrics.jsonl, the
median step time, the median `data_wait_s` and the largest `data_wait_s` of the steps that
start a new epoch, and of all others. The index of the next epoch is built in a thread as
soon as an epoch starts, so the first step of an epoch should wait no longer than any other.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
from bench_data import builtin_dataset, corpus_and_vocab

from zhplm.data.epochs import Corpus, DocumentSet, build_epoch
from zhplm.data.instances import InstanceConfig, SpecialIds
from zhplm.data.shards import TokenDataset
from zhplm.tokenization import Tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--out", type=Path, default=Path("bench_out/epoch_boundary"))
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    _, vocab = corpus_and_vocab(8000)
    dataset = builtin_dataset(vocab, documents=args.documents)
    data = TokenDataset(dataset)
    special = SpecialIds.from_tokenizer(Tokenizer.from_pretrained(vocab))
    train, _ = DocumentSet.split(data.num_documents, 0.01)
    per_epoch = len(build_epoch(Corpus(data.shards, train), InstanceConfig("full_sentences", 128),
                                special, 42, 0)) // 32
    steps = per_epoch * args.epochs
    print(f"{data.num_tokens} tokens, {per_epoch} steps per epoch, {steps} steps")
    print("| workers | median step s | median data_wait_s | first step of an epoch: "
          "max data_wait_s | other steps: max data_wait_s |")
    print("|---:|---:|---:|---:|---:|")
    for workers in (int(w) for w in args.workers.split(",")):
        run = out / f"run-w{workers}"
        subprocess.run(["rm", "-rf", str(run)], check=True)
        command = [sys.executable, "-m", "zhplm", "pretrain", "--dtype", "fp32",
                   f"output_dir={run}", "model.preset=tiny", f"data.dataset={dataset}",
                   f"data.vocab={vocab}", "data.seq_length=128",
                   f"data.workers={workers}", "train.batch_size=32",
                   f"train.total_steps={steps}", "train.report_steps=1",
                   "train.save_checkpoint_steps=0", "train.eval_steps=0",
                   "train.progress=false"]
        subprocess.run(command, check=True, capture_output=True,
                       env={**os.environ, "OMP_NUM_THREADS": "2"})
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        records = [r for r in records if "data_wait_s" in r][1:]  # step 1 builds epoch 0
        boundary = [r["data_wait_s"] for r in records if (r["step"] - 1) % per_epoch == 0]
        other = [r["data_wait_s"] for r in records if (r["step"] - 1) % per_epoch]
        step_s = statistics.median(1 / r["steps_per_s"] for r in records)
        print(f"| {workers} | {step_s:.4f} | {statistics.median(other):.4f} | "
              f"{max(boundary):.4f} | {np.max(other):.4f} |", flush=True)


if __name__ == "__main__":
    main()
