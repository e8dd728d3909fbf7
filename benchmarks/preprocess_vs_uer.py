"""Corpus preprocessing: zhplm vs UER-py, both with 2 worker processes, in one run.

zhplm runs ``zhplm preprocess CORPUS --vocab VOCAB --out DIR --workers 2`` (jieba word
boundaries for whole-word masking, through rjieba when installed); UER-py runs its own
``preprocess.py`` from a checkout (``--processes_num 2 --data_processor mlm --seq_length 128
--dynamic_masking --full_sentences``, no word segmentation). Both read UER-py's
``corpora/CLUECorpusSmall_sampled.txt`` with its ``models/google_zh_vocab.txt`` unless told
otherwise. Each command is a fresh process (start-up, imports and worker start included, as a
user sees it), timed by wall clock; the runs alternate so that a busy machine slows both
alike, and the medians and their ratio are printed. UER-py needs ``six`` and ``regex``.

    .venv/bin/python benchmarks/preprocess_vs_uer.py --uer /path/to/UER-py [--repeat 5]
        [--python-jieba]   # also time zhplm with jieba itself (ZHPLM_JIEBA=python)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(command: list[str], cwd: Path | None, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uer", type=Path, required=True, help="a checkout of dbiir/UER-py")
    parser.add_argument("--corpus", type=Path, help="default: UER/corpora/"
                        "CLUECorpusSmall_sampled.txt")
    parser.add_argument("--vocab", type=Path, help="default: UER/models/google_zh_vocab.txt")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--python-jieba", action="store_true",
                        help="also time zhplm with the pure-Python jieba")
    args = parser.parse_args()
    uer = args.uer.resolve()
    corpus = (args.corpus or uer / "corpora" / "CLUECorpusSmall_sampled.txt").resolve()
    vocab = (args.vocab or uer / "models" / "google_zh_vocab.txt").resolve()
    if not (uer / "preprocess.py").is_file():
        sys.exit(f"{uer} has no preprocess.py; pass a checkout of dbiir/UER-py")

    scratch = Path(tempfile.mkdtemp(prefix="zhplm-pre-bench-"))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    uer_cmd = [sys.executable, "preprocess.py", "--corpus_path", str(corpus),
               "--vocab_path", str(vocab), "--dataset_path", str(scratch / "uer.pt"),
               "--processes_num", str(args.workers), "--data_processor", "mlm",
               "--seq_length", "128", "--dynamic_masking", "--full_sentences"]
    zh_cmd = [sys.executable, "-c", "import sys; from zhplm.cli import main; sys.exit(main())",
              "preprocess", str(corpus), "--vocab", str(vocab), "--out", str(scratch / "zh"),
              "--workers", str(args.workers), "--overwrite"]
    variants = {"UER-py": (uer_cmd, uer, env), "zhplm": (zh_cmd, None, env)}
    if args.python_jieba:
        variants["zhplm (python jieba)"] = (zh_cmd, None, dict(env, ZHPLM_JIEBA="python"))
    times: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for _ in range(args.repeat):
            for name, (command, cwd, run_env) in variants.items():
                times[name].append(run(command, cwd, run_env))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    from zhplm.data import segment

    print(f"corpus {corpus} ({corpus.stat().st_size / 1e6:.2f} MB), vocab {vocab.name}, "
          f"{args.workers} workers each, {args.repeat} alternating runs; zhplm segmenter "
          f"backend: {segment.backend()}")
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    for name, ts in times.items():
        print(f"{name:>22}: median {medians[name]:.2f} s  (runs: "
              f"{', '.join(f'{t:.2f}' for t in ts)})")
    for name in medians:
        if name != "UER-py":
            print(f"UER-py / {name}: {medians['UER-py'] / medians[name]:.2f}x")


if __name__ == "__main__":
    main()
