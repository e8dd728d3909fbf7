"""The index-based data path against the in-memory one (an older checkout), A/B interleaved.

    python benchmarks/data_path_ab.py --baseline-src /tmp/zhplm-old [--repeats 4] [--steps 150]

On the built-in corpus (8000-token vocab, preprocessed here), `zhplm pretrain` (tiny, seq 128,
batch 32, fp32, no short sequences, no held-out split, report every step) runs alternately
from this checkout and from `--baseline-src/src` (e.g. `git worktree add /tmp/zhplm-old
bbf2be6`, whose `InstanceStream` builds every instance of an epoch in memory), `--repeats`
times each, so slow drifts of the machine hit both equally. Each run's steady tokens/s is the
median of its per-step rates after `--skip` steps; the ratio is of the medians over runs.
It also times the data path alone in this process (one step's batches, 300 steps, no model).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_data import builtin_dataset, corpus_and_vocab

DATA_PATH_NEW = """
import sys, time
from zhplm.data.collate import PretrainCollator
from zhplm.data.epochs import Corpus, DocumentSet, build_epoch
from zhplm.data.instances import InstanceConfig, SpecialIds
from zhplm.data.masking import MaskingConfig
from zhplm.data.shards import TokenDataset
from zhplm.data.stream import InstanceStream
from zhplm.tokenization import Tokenizer
special = SpecialIds.from_tokenizer(Tokenizer.from_pretrained(sys.argv[2]))
data = TokenDataset(sys.argv[1])
config = InstanceConfig("full_sentences", 128, 0.0)
corpus = Corpus(data.shards, DocumentSet(data.num_documents))
collate = PretrainCollator(MaskingConfig(strategy="token", max_predictions=128), special, 7)
stream = InstanceStream(lambda e: build_epoch(corpus, config, special, 7, e), collate, 32, 0, 1)
"""
DATA_PATH_OLD = """
import sys, time
from zhplm.data.collate import InstanceStream, PretrainCollator
from zhplm.data.instances import InstanceConfig, SpecialIds, build_instances
from zhplm.data.masking import MaskingConfig
from zhplm.data.shards import TokenDataset
from zhplm.tokenization import Tokenizer
special = SpecialIds.from_tokenizer(Tokenizer.from_pretrained(sys.argv[2]))
data = TokenDataset(sys.argv[1])
config = InstanceConfig("full_sentences", 128, 0.0)
docs = list(range(data.num_documents))
collate = PretrainCollator(MaskingConfig(strategy="token", max_predictions=128), special, 7)
stream = InstanceStream(lambda e: build_instances(data.document, docs, config, special, e),
                        collate, 32, 0, 1, 7)
"""
TIME_STEPS = """
stream.next_step(1)
start = time.perf_counter()
for _ in range(300):
    stream.next_step(1)
print((time.perf_counter() - start) / 300 * 1000)
"""


def pretrain_tokens_per_s(src: Path | None, dataset: Path, vocab: Path, run: Path, steps: int,
                          skip: int) -> float:
    subprocess.run(["rm", "-rf", str(run)], check=True)
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    if src is not None:
        env["PYTHONPATH"] = str(src / "src")
    done = subprocess.run([sys.executable, "-m", "zhplm", "pretrain", "--dtype", "fp32",
                    f"output_dir={run}", "model.preset=tiny", f"data.dataset={dataset}",
                    f"data.vocab={vocab}", "data.seq_length=128", "data.short_seq_prob=0",
                    "data.dev_fraction=0", "masking.strategy=token",
                    "masking.max_predictions=128", "train.batch_size=32",
                    f"train.total_steps={steps}", "train.report_steps=1",
                    "train.save_checkpoint_steps=0", "train.eval_steps=0",
                    "train.progress=false"], capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"zhplm pretrain ({src or 'this checkout'}) failed:\n{done.stderr[-2000:]}")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["tokens_per_s"] for r in records[skip:] if "tokens_per_s" in r)


def data_path_ms(src: Path | None, prelude: str, dataset: Path, vocab: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    if src is not None:
        env["PYTHONPATH"] = str(src / "src")
    out = subprocess.run([sys.executable, "-c", prelude + TIME_STEPS, str(dataset), str(vocab)],
                         check=True, capture_output=True, text=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline-src", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--skip", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("bench_out/data_path_ab"))
    args = parser.parse_args()
    if not (args.baseline_src / "src" / "zhplm").is_dir():
        sys.exit(f"--baseline-src {args.baseline_src}: no src/zhplm there; make one with "
                 "`git worktree add /tmp/zhplm-old bbf2be6`")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    _, vocab = corpus_and_vocab(8000)
    dataset = builtin_dataset(vocab)
    runs: dict[str, list[float]] = {"new": [], "baseline": []}
    started = time.perf_counter()
    for repeat in range(args.repeats):
        for name, src in (("new", None), ("baseline", args.baseline_src)):
            rate = pretrain_tokens_per_s(src, dataset, vocab, out / f"run-{name}", args.steps,
                                         args.skip)
            runs[name].append(rate)
            print(f"repeat {repeat + 1} {name:8s} {rate:9.0f} tokens/s", flush=True)
    new, old = statistics.median(runs["new"]), statistics.median(runs["baseline"])
    print(f"\nmedian tokens/s: new {new:.0f}, in-memory baseline {old:.0f}: "
          f"new / baseline = {new / old:.3f} (goal >= 0.95); "
          f"{time.perf_counter() - started:.0f} s")
    ms_new = data_path_ms(None, DATA_PATH_NEW, dataset, vocab)
    ms_old = data_path_ms(args.baseline_src, DATA_PATH_OLD, dataset, vocab)
    print(f"data path alone (one step's batch, in process): new {ms_new:.2f} ms, "
          f"in-memory {ms_old:.2f} ms")


if __name__ == "__main__":
    main()
