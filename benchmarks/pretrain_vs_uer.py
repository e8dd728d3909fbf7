"""Pre-training throughput, side by side: UER-py's own scripts vs zhplm, same corpus and settings.

One run does, in this order:

1. measures this machine's fp32 GEMM peak (a 2048^3 `torch.mm`, best of several, at
   `--threads`), for the model-FLOP utilisation (MFU) column;
2. preprocesses UER-py's `corpora/CLUECorpusSmall_sampled.txt` with Google's 21128-token
   Chinese vocab (`models/google_zh_vocab.txt`) twice, timed: UER-py's `preprocess.py`
   (`--data_processor mlm --full_sentences --dynamic_masking --seq_length 128
   --processes_num 2 --dup_factor 1`: one copy; zhplm builds instances per epoch) and
   `zhplm preprocess --workers 2` (with jieba word boundaries, as whole-word masking needs;
   UER-py segments nothing);
3. for each size (tiny = 2 layers / H128 / 2 heads, mini = 4 / 256 / 4; UER-py's own
   `models/bert/{tiny,mini}_config.json`), alternately, each in its own process with
   OMP_NUM_THREADS=MKL_NUM_THREADS=`--threads`: UER-py's `pretrain.py` (CPU mode, no
   `--gpu_ranks`) and zhplm's pre-training recipe with the same settings: MLM only, token
   masking 15 % (80/10/10) drawn anew per batch (dynamic), full-sentence packing to 128 tokens
   (no short sequences, as UER-py's `--full_sentences`), batch 32, fp32, dropout 0.1,
   AdamW lr 1e-4, eps 1e-6, weight decay 0.01 (not on bias/LayerNorm), *no* bias correction,
   *no* gradient clipping, warmup 0.1 then linear decay over `--steps`.

Tokens are counted the same way for both: real (non-padding) tokens of the batches.
zhplm's trainer counts them (`tokens_per_s` in `metrics.jsonl`); UER-py prints
`batch_size x seq_length` per step, which for `--full_sentences` instances (all exactly 128
tokens except the last of each document buffer) is scaled by the real-token fraction of its
dataset, read from the dataset file (printed; it is ~1.0). Throughput is steady state: total
real tokens / total time over the report windows after the first `--skip` steps (start-up,
allocation and warm-up excluded for both). Both time the whole loop (data, forward, backward,
optimiser step). Losses are each system's own report-window means (UER-py: mean over steps of
the per-step MLM loss; zhplm: summed loss / predicted tokens over the window), at the same
steps. They match in trend, not exactly: different random streams, and UER-py initialises
biases and every weight from N(0, 0.02) while zhplm (as Hugging Face) zeroes biases.

Model FLOPs per real token (the useful work, the same formula for both):

    6 * 12 * H^2 * L            weights of the encoder layers (Q, K, V, O = 4 H^2; FFN = 8 H^2)
  + 12 * S * H * L              attention scores and context (QK^T and PV, forward + backward)
  + 6 * (H^2 + V * H) * m       MLM head (transform + tied decoder) on the predicted share m

with S = 128, V = 21128 and m = predicted tokens / real tokens (19 / 128 for both here).
Embedding look-ups, LayerNorm, softmax, GELU and the optimiser are not counted.

    .venv/bin/python benchmarks/pretrain_vs_uer.py --uer /tmp/uer [--steps 100]
        [--sizes tiny,mini] [--repeats 1] [--threads 2] [--skip-preprocess]

PATH is a checkout of the public dbiir/UER-py repository (its scripts run from source with this
venv; they need `six` and `regex`). Nothing is written into it: UER-py runs in `--work`,
where `models` is a symlink to its `models/` (it reads `models/special_tokens_map.json`
relative to the working directory).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEQ = 128
BATCH = 32
MASK_PROB = 0.15
SHAPES = {"tiny": (2, 128), "mini": (4, 256)}  # layers, hidden (heads = hidden / 64)
UER_LINE = re.compile(r"\|\s*(\d+)/\s*\d+ steps\|\s*([\d.]+) tokens/s\|\s*loss\s+([\d.]+)"
                      r"\|\s*acc:\s*([\d.]+)")


def thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    return env


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


def gemm_peak(threads: int, n: int = 2048, repeats: int = 10) -> float:
    """Best fp32 `torch.mm` rate (GFLOP/s) of an n x n x n product at `threads` threads."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def flops_per_token(layers: int, hidden: int, vocab: int, seq: int, share: float) -> float:
    """The docstring's formula: model FLOPs per real token of one training step."""
    return (6 * 12 * hidden**2 * layers + 12 * seq * hidden * layers
            + 6 * (hidden**2 + vocab * hidden) * share)


# ---- preprocessing --------------------------------------------------------------------------
def preprocess(uer: Path, work: Path, corpus: Path, vocab: Path, threads: int) -> dict:
    env = thread_env(threads)
    uer_pt, zh_dir = work / "uer_dataset.pt", work / "zhplm_dataset"
    start = time.perf_counter()
    subprocess.run([sys.executable, str(uer / "preprocess.py"), "--corpus_path", str(corpus),
                    "--vocab_path", str(vocab), "--dataset_path", str(uer_pt),
                    "--processes_num", "2", "--data_processor", "mlm", "--seq_length", str(SEQ),
                    "--dynamic_masking", "--full_sentences", "--dup_factor", "1"],
                   cwd=work, env=env, check=True, capture_output=True)
    uer_s = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "zhplm", "preprocess", str(corpus), "--vocab",
                    str(vocab), "--out", str(zh_dir), "--workers", "2",
                    "--layout", "line", "--overwrite"],
                   env=env, check=True, capture_output=True)
    zh_s = time.perf_counter() - start
    return {"uer_s": uer_s, "zhplm_s": zh_s}


def uer_real_fraction(dataset: Path) -> float:
    """Real-token fraction of UER-py's mlm dataset: instances are ((ids, pad_num), seg_pos)."""
    real = total = 0
    with dataset.open("rb") as handle:
        while True:
            try:
                instance = pickle.load(handle)
            except EOFError:
                break
            ids, pad_num = instance[0]
            real += len(ids)
            total += len(ids) + pad_num
    return real / total


# ---- one training run each ------------------------------------------------------------------
def steady(windows: list[tuple[int, float, float]], skip: int) -> float:
    """Tokens/s over the windows ending after `skip`: windows are (end step, tokens, tok/s)."""
    kept = [(tokens, rate) for step, tokens, rate in windows if step > skip]
    return sum(t for t, _ in kept) / sum(t / r for t, r in kept)


def run_uer(uer: Path, work: Path, size: str, steps: int, report: int, threads: int,
            real_fraction: float) -> dict:
    out = subprocess.run(
        [sys.executable, str(uer / "pretrain.py"), "--dataset_path", str(work / "uer_dataset.pt"),
         "--vocab_path", str(uer / "models" / "google_zh_vocab.txt"),
         "--config_path", str(uer / "models" / "bert" / f"{size}_config.json"),
         "--output_model_path", str(work / f"uer_{size}.bin"), "--total_steps", str(steps),
         "--save_checkpoint_steps", str(10 * steps), "--report_steps", str(report),
         "--batch_size", str(BATCH), "--data_processor", "mlm",
         "--target", "mlm", "--learning_rate", "1e-4", "--warmup", "0.1"],
        cwd=work, env=thread_env(threads), check=True, capture_output=True, text=True)
    windows, losses = [], {}
    for line in (out.stdout + out.stderr).splitlines():
        match = UER_LINE.search(line)
        if match:
            step, rate, loss, acc = match.groups()
            # UER-py counts batch x seq_length per step: scale to real tokens.
            tokens = BATCH * SEQ * report * real_fraction
            windows.append((int(step), tokens, float(rate) * real_fraction))
            losses[int(step)] = (float(loss), float(acc))
    if not windows:
        raise RuntimeError(f"no throughput lines in UER-py's output:\n{out.stderr[-2000:]}")
    return {"windows": windows, "losses": losses}


def zhplm_recipe_overrides(size: str, steps: int, report: int, dataset: Path, vocab: Path,
                           out: Path) -> list[str]:
    from dataclasses import fields

    from zhplm.training.trainer import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    dtype = "train.dtype=fp32" if "dtype" in names else "train.bf16=false"
    return [
        f"output_dir={out}", f"model.preset={size}", f"data.dataset={dataset}",
        f"data.vocab={vocab}", "data.kind=full_sentences", f"data.seq_length={SEQ}",
        "data.short_seq_prob=0.0", "data.dev_fraction=0", "masking.strategy=token",
        f"masking.mask_prob={MASK_PROB}", f"masking.max_predictions={SEQ}",
        f"train.batch_size={BATCH}", f"train.total_steps={steps}", "train.optim.lr=1e-4",
        "train.optim.warmup=0.1", "train.optim.eps=1e-6", "train.optim.weight_decay=0.01",
        "train.optim.bias_correction=false", "train.optim.max_grad_norm=0", dtype,
        f"train.report_steps={report}", "train.save_checkpoint_steps=0",
        "train.progress=false",
    ]


def run_zhplm_child(args: argparse.Namespace) -> None:
    """In its own process: one zhplm pre-training run; prints the metrics records as JSON."""
    import torch

    from zhplm.pretraining import PretrainRecipe, run_pretraining
    from zhplm.recipe import load_recipe

    torch.set_num_threads(args.threads)
    out = Path(tempfile.mkdtemp(prefix="zhplm-vs-uer-", dir=args.work))
    recipe = load_recipe(PretrainRecipe, None, zhplm_recipe_overrides(
        args.child, args.steps, args.report_steps, Path(args.work) / "zhplm_dataset",
        Path(args.uer) / "models" / "google_zh_vocab.txt", out))
    run_pretraining(recipe)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    print(json.dumps(records))


def run_zhplm(args: argparse.Namespace, size: str) -> dict:
    cmd = [sys.executable, __file__, "--uer", str(args.uer), "--work", str(args.work),
           "--child", size, "--steps", str(args.steps), "--report-steps",
           str(args.report_steps), "--threads", str(args.threads)]
    done = subprocess.run(cmd, env=thread_env(args.threads), check=True, capture_output=True,
                          text=True)
    records = json.loads(done.stdout.strip().splitlines()[-1])
    windows, losses = [], {}
    for record in records:
        if "tokens_per_s" in record:
            # All instances are full (128 real tokens): each window holds the same tokens.
            windows.append((record["step"], BATCH * SEQ * args.report_steps,
                            record["tokens_per_s"]))
            losses[record["step"]] = (record.get("mlm_loss", float("nan")),
                                      record.get("mlm_acc", float("nan")))
    return {"windows": windows, "losses": losses}


# ---- main -----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uer", required=True, help="a checkout of dbiir/UER-py")
    parser.add_argument("--steps", type=int, default=100, help="optimiser steps per run")
    parser.add_argument("--sizes", default="tiny,mini")
    parser.add_argument("--repeats", type=int, default=1,
                        help="alternate UER-py / zhplm runs this many times per size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report-steps", type=int, default=10)
    parser.add_argument("--skip", type=int, default=20,
                        help="leave out report windows ending at or before this step")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "zhplm-vs-uer"))
    parser.add_argument("--skip-preprocess", action="store_true",
                        help="reuse the datasets of an earlier run in --work")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.uer, args.work = Path(args.uer).resolve(), Path(args.work).resolve()
    if args.child:
        run_zhplm_child(args)
        return

    sys.stdout.reconfigure(line_buffering=True)
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    models = work / "models"
    if not models.exists():
        models.symlink_to(args.uer / "models")
    corpus = args.uer / "corpora" / "CLUECorpusSmall_sampled.txt"
    vocab = args.uer / "models" / "google_zh_vocab.txt"
    n_vocab = sum(1 for _ in vocab.open(encoding="utf-8"))
    print(f"load average (1/5 min) at start: {load()}; {os.cpu_count()} CPUs")
    peak = gemm_peak(args.threads)
    print(f"fp32 GEMM peak (2048^3 torch.mm, {args.threads} threads, best of 10): "
          f"{peak:.0f} GFLOP/s")

    have_data = (work / "uer_dataset.pt").is_file() and (work / "zhplm_dataset").is_dir()
    if not args.skip_preprocess or not have_data:
        times = preprocess(args.uer, work, corpus, vocab, args.threads)
        chars = len(corpus.read_text(encoding="utf-8"))
        print(f"preprocess {corpus.name} ({chars / 1e6:.2f}M chars), 2 processes: UER-py "
              f"{times['uer_s']:.2f} s, zhplm {times['zhplm_s']:.2f} s, ratio UER/zhplm "
              f"{times['uer_s'] / times['zhplm_s']:.2f}x (both include interpreter start-up)")
    real_fraction = uer_real_fraction(work / "uer_dataset.pt")
    print(f"UER-py dataset real-token fraction: {real_fraction:.5f}")
    print(f"{args.steps} steps per run, throughput over steps > {args.skip}, batch {BATCH} x "
          f"seq {SEQ}, fp32, {args.threads} threads, vocab {n_vocab}\n")

    results: dict[str, dict[str, list[dict]]] = {}
    for size in args.sizes.split(","):
        results[size] = {"uer": [], "zhplm": []}
        for _ in range(args.repeats):
            for system in ("uer", "zhplm"):
                before = load()
                if system == "uer":
                    run = run_uer(args.uer, work, size, args.steps, args.report_steps,
                                  args.threads, real_fraction)
                else:
                    run = run_zhplm(args, size)
                run["rate"] = steady(run["windows"], args.skip)
                run["load"] = f"{before} -> {load()}"
                results[size][system].append(run)
                print(f"  {size} {system:6s} {run['rate']:8.0f} tok/s   load {run['load']}",
                      flush=True)

    share = round(MASK_PROB * SEQ) / SEQ
    print("\n| size | UER-py tok/s | zhplm tok/s | zhplm / UER-py | UER-py MFU | zhplm MFU |")
    print("|---|---|---|---|---|---|")
    for size, runs in results.items():
        layers, hidden = SHAPES[size]
        flops = flops_per_token(layers, hidden, n_vocab, SEQ, share)
        uer = [r["rate"] for r in runs["uer"]]
        ours = [r["rate"] for r in runs["zhplm"]]
        ratios = [z / u for z, u in zip(ours, uer, strict=True)]
        mean_u, mean_z = sum(uer) / len(uer), sum(ours) / len(ours)
        print(f"| {size} | {' / '.join(f'{x:.0f}' for x in uer)} | "
              f"{' / '.join(f'{x:.0f}' for x in ours)} | "
              f"{' / '.join(f'{x:.2f}x' for x in ratios)} | "
              f"{100 * mean_u * flops / 1e9 / peak:.1f} % | "
              f"{100 * mean_z * flops / 1e9 / peak:.1f} % |")
    print(f"\nMFU = tok/s x model FLOPs per token / {peak:.0f} GFLOP/s; FLOPs per token: " +
          ", ".join(f"{s} {flops_per_token(*SHAPES[s], n_vocab, SEQ, share) / 1e6:.1f}M"
                    for s in results))

    print("\nMLM loss (accuracy) of each at equal steps, first repeat (report-window means):")
    for size, runs in results.items():
        uer_losses, zh_losses = runs["uer"][0]["losses"], runs["zhplm"][0]["losses"]
        print(f"\n| {size} step | UER-py loss (acc) | zhplm loss (acc) |\n|---|---|---|")
        every = max(args.report_steps, args.steps // 10 // args.report_steps * args.report_steps)
        for step in sorted(set(uer_losses) & set(zh_losses)):
            if step % every == 0 or step == args.steps:
                (lu, au), (lz, az) = uer_losses[step], zh_losses[step]
                print(f"| {step} | {lu:.3f} ({au:.3f}) | {lz:.3f} ({az:.3f}) |")
    print(f"\nload average (1/5 min) at end: {load()}")


if __name__ == "__main__":
    main()
