"""Pre-training at corpus scale (issue 21): memory and start-up of preprocess + pretrain as the
corpus grows, zhplm next to an older zhplm checkout and UER-py, on the same corpus and vocab.

For each size (GB of UTF-8 text, 1 GB = 1e9 bytes) one run

1. builds the corpus from real documents: the built-in corpus (`zhplm.datasets.write_corpus`)
   plus any `--corpus` files, one document per non-empty line, shuffled with a fixed seed
   (a new permutation each pass) and repeated until the size is reached; streamed to disk
   and kept in OUT/corpora for the next run;
2. zhplm: `zhplm preprocess --workers 2` (jieba word boundaries, as by default), timed, with
   the peak memory of the process and its workers; then `zhplm pretrain` on that dataset:
   preset tiny, fp32 (as UER-py), full-sentence packing to 128 tokens (no short sequences, no
   held-out split), token MLM 15 %, batch 32, `--steps` steps, report_steps 1, no
   checkpoints, AdamW lr 1e-4 / warmup 0.1 without bias correction or clipping (UER-py's);
3. with `--baseline-src PATH`: the same `zhplm pretrain` with PYTHONPATH=PATH/src (an older
   checkout, e.g. `git worktree add /tmp/zhplm-old bbf2be6`, whose trainer holds the dataset
   in memory) on the same dataset;
4. with `--uer PATH`: UER-py's `preprocess.py` (`--data_processor mlm --seq_length 128
   --dynamic_masking --full_sentences --processes_num 2`) and `pretrain.py` with its
   `models/bert/tiny_config.json` (2 layers, H 128, 2 heads, FFN 512: zhplm's `tiny`),
   `--data_processor mlm --target mlm`, batch 32, report_steps 1, the same steps and lr.

Both tools use one vocab: the demo's 8000-token WordPiece vocab, built once by `zhplm
build-vocab` on the built-in corpus (OUT/vocab.txt).

Measured, per command, from outside (benchmarks/_proc.py): wall time; peak over time of the
summed RssAnon (anonymous resident memory: not the memory-mapped dataset) of the process and
all its descendants, sampled every 50 ms, and the peak summed VmRSS; time to the first step =
from process start until the first step's report exists (zhplm: the first line of
metrics.jsonl, polled; UER-py: its first `| 1/ N steps|` log line); steady tokens/s = median
of the per-step rates after `--skip` steps (zhplm: `tokens_per_s`, real tokens; UER-py:
batch x 128 per step, scaled by the real-token fraction of its dataset's first instances);
the largest `data_wait_s` of metrics.jsonl when the trainer writes that key.

    .venv/bin/python benchmarks/corpus_scale.py --sizes 0.05,0.2,1,2 [--corpus FILE ...]
        [--uer PATH_TO_UER-py] [--baseline-src /tmp/zhplm-old] [--out DIR] [--steps 100]

UER-py: a checkout of the public dbiir/UER-py (its scripts run from source in this venv with
`six` and `regex`, the `bench` extra); nothing is written into it, it runs in OUT/work with
`models` symlinked to its `models/` (it reads `models/special_tokens_map.json` relative to the
working directory). Prints one markdown table and the issue's ratios; writes both to
OUT/corpus_scale.md and everything to OUT/corpus_scale.json (`--report-from
OUT/corpus_scale.json` alone re-renders them). Exits non-zero when a command failed (the table
still shows the rest). The machine should be quiet: tokens/s and time to the first step move
with other load (each run's load average is in the notes; the p90 of the per-step rates is
less sensitive to load that comes and goes than the median).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import pickle
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import file_has_line, run_measured  # noqa: E402

GB = 1e9
SEQ = 128
BATCH = 32
VOCAB_SIZE = 8000
SEED = 20261221
UER_LINE = re.compile(r"\|\s*(\d+)/\s*\d+ steps\|\s*([\d.]+) tokens/s\|\s*loss\s+([\d.]+)")
SYSTEMS = ("zhplm", "baseline", "uer")
LABELS = {"zhplm": "zhplm", "baseline": "zhplm baseline", "uer": "UER-py"}
GOAL_RSS_RATIO, GOAL_FIRST_STEP_S, GOAL_SPEED_RATIO, CLUE_SMALL_GB = 1.2, 15.0, 0.95, 14.0


@dataclass
class Result:
    """One system at one corpus size; None = not measured (or failed: see `errors`)."""

    system: str
    size_gb: float
    preprocess_s: float | None = None
    preprocess_anon_mb: float | None = None
    preprocess_rss_mb: float | None = None
    pretrain_s: float | None = None
    pretrain_anon_mb: float | None = None
    pretrain_rss_mb: float | None = None
    first_step_s: float | None = None
    tokens_per_s: float | None = None
    tokens_per_s_p90: float | None = None
    max_data_wait_s: float | None = None
    max_data_wait_after_skip_s: float | None = None
    steps_seen: int = 0
    preprocess_error: str | None = None
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


# ---- the corpus ----------------------------------------------------------------------------
def line_spans(data: mmap.mmap | bytes, chunk: int = 1 << 26) -> np.ndarray:
    """(start, end) byte offsets of every non-blank line, newline excluded, found chunk by
    chunk so that a large file needs no large temporary arrays."""
    ends = []
    for offset in range(0, len(data), chunk):
        block = np.frombuffer(data[offset:offset + chunk], dtype=np.uint8)
        ends.append(np.flatnonzero(block == 10) + offset)
    newlines = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
    if len(data) and (not len(newlines) or newlines[-1] != len(data) - 1):
        newlines = np.append(newlines, len(data))  # a last line without a newline
    starts = np.concatenate([[0], newlines[:-1] + 1]).astype(np.int64)
    spans = np.stack([starts, newlines.astype(np.int64)], axis=1)
    spans = spans[spans[:, 1] > spans[:, 0]]
    short = np.flatnonzero(spans[:, 1] - spans[:, 0] < 8)  # only whitespace or "\r"?
    blank = [i for i in short.tolist() if not bytes(data[spans[i, 0]:spans[i, 1]]).strip()]
    return np.delete(spans, blank, axis=0)


def build_corpus(target: Path, sources: list[Path], size_gb: float, seed: int) -> dict:
    """Write `size_gb` GB of whole lines drawn from `sources` to `target` (reused when a
    sidecar .json says it was built from the same sources, size and seed)."""
    meta = {"sources": [[str(p), p.stat().st_size] for p in sources], "size_gb": size_gb,
            "seed": seed}
    sidecar = target.with_suffix(".json")
    if target.is_file() and sidecar.is_file():
        old = json.loads(sidecar.read_text())
        if {k: old.get(k) for k in meta} == meta:
            return old
    budget = int(size_gb * GB)
    handles = [p.open("rb") for p in sources]
    try:
        empty = [str(p) for p in sources if p.stat().st_size == 0]
        if empty:
            raise SystemExit(f"empty corpus file(s): {', '.join(empty)}")
        maps = [mmap.mmap(h.fileno(), 0, access=mmap.ACCESS_READ) for h in handles]
        spans = [line_spans(m) for m in maps]
        index = np.concatenate([np.column_stack([np.full(len(s), i), s])
                                for i, s in enumerate(spans)])
        if not len(index):
            raise SystemExit(f"no non-blank lines in {', '.join(map(str, sources))}")
        rng = np.random.default_rng(seed)
        written = documents = passes = 0
        tmp = target.with_name(f".{target.name}.tmp")
        with tmp.open("wb", buffering=1 << 22) as out:
            while written < budget:
                passes += 1
                for source, start, end in index[rng.permutation(len(index))].tolist():
                    out.write(maps[source][start:end])
                    out.write(b"\n")
                    written += end - start + 1
                    documents += 1
                    if written >= budget:
                        break
        os.replace(tmp, target)
        for m in maps:
            m.close()
    finally:
        for h in handles:
            h.close()
    meta.update(bytes=written, documents=documents, passes=passes,
                distinct_documents=int(len(index)))
    sidecar.write_text(json.dumps(meta, indent=1))
    return meta


# ---- running the systems -------------------------------------------------------------------
def python_env(threads: int, src: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    env.pop("PYTHONPATH", None)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return env


def zhplm_location(env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", "import zhplm; print(zhplm.__file__)"],
                          env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"cannot import zhplm with PYTHONPATH={env.get('PYTHONPATH')}:\n"
                         f"{done.stderr[-2000:]}")
    return done.stdout.strip()


def zhplm_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "zhplm", *args]


def pretrain_overrides(dataset: Path, vocab: Path, out: Path, steps: int) -> list[str]:
    return [f"output_dir={out}", "model.preset=tiny", f"data.dataset={dataset}",
            f"data.vocab={vocab}", "data.kind=full_sentences", f"data.seq_length={SEQ}",
            "data.short_seq_prob=0", "data.dev_fraction=0", "masking.strategy=token",
            "masking.mask_prob=0.15", f"masking.max_predictions={SEQ}",
            f"train.batch_size={BATCH}", f"train.total_steps={steps}",
            "train.report_steps=1", "train.save_checkpoint_steps=0", "train.eval_steps=0",
            "train.progress=false", "train.optim.lr=1e-4", "train.optim.warmup=0.1",
            "train.optim.eps=1e-6", "train.optim.weight_decay=0.01",
            "train.optim.bias_correction=false", "train.optim.max_grad_norm=0"]


def run_zhplm_pretrain(result: Result, args: argparse.Namespace, env: dict[str, str],
                       dataset: Path, vocab: Path, work: Path) -> None:
    out = work / f"{result.system}-run"
    shutil.rmtree(out, ignore_errors=True)
    metrics = out / "metrics.jsonl"
    load = os.getloadavg()[0]
    cmd = zhplm_cmd("pretrain", "--dtype", args.dtype,
                    *pretrain_overrides(dataset, vocab, out, args.steps), *args.zhplm_set)
    run = run_measured(cmd, env=env, timeout=args.timeout,
                       log=work / f"{result.system}-pretrain.log",
                       probes={"first_step": file_has_line(metrics)})
    result.pretrain_s, result.pretrain_anon_mb = run.wall_s, run.peak_anon_mb
    result.pretrain_rss_mb = run.peak_rss_mb
    result.first_step_s = run.events.get("first_step")
    result.notes.append(f"pretrain: load (1 min) {load:.2f} -> {os.getloadavg()[0]:.2f}")
    if not run.ok:
        result.errors.append(run.error())
    if not metrics.is_file():
        return
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    steps = [r for r in records if "tokens_per_s" in r and "step" in r]
    result.steps_seen = len(steps)
    steady = [r["tokens_per_s"] for r in steps if r["step"] > args.skip]
    set_rates(result, steady)
    # The largest wait of the record's window: data_wait_max_s where written, else data_wait_s.
    waits = [(r["step"], max(r.get("data_wait_s", 0.0), r.get("data_wait_max_s", 0.0)))
             for r in steps if "data_wait_s" in r or "data_wait_max_s" in r]
    if waits:
        result.max_data_wait_s = max(w for _, w in waits)
        late = [w for s, w in waits if s > args.skip]
        result.max_data_wait_after_skip_s = max(late) if late else None
    if steps and steps[0]["step"] != 1:
        result.notes.append(f"first metrics record is step {steps[0]['step']}")


def set_rates(result: Result, rates: list[float]) -> None:
    """Median per-step tokens/s, and the upper decile: on a shared machine the steps that ran
    while nothing else did (the median drops when other work takes the cores for a while)."""
    if rates:
        result.tokens_per_s = statistics.median(rates)
        result.tokens_per_s_p90 = float(np.percentile(rates, 90))


def uer_real_fraction(dataset: Path, limit: int = 20000) -> float:
    """Real-token fraction of the first `limit` instances of UER-py's mlm dataset (with
    dynamic masking an instance is ((ids, pad_num), seg_pos))."""
    real = total = 0
    with dataset.open("rb") as handle:
        for _ in range(limit):
            try:
                instance = pickle.load(handle)
            except EOFError:
                break
            ids, pad_num = instance[0]
            real, total = real + len(ids), total + len(ids) + pad_num
    return real / total if total else 1.0


def run_uer(result: Result, args: argparse.Namespace, corpus: Path, vocab: Path,
            work: Path) -> None:
    uer: Path = args.uer
    env = python_env(args.threads)
    dataset = work / "uer_dataset.pt"
    pre = run_measured(
        [sys.executable, str(uer / "preprocess.py"), "--corpus_path", str(corpus),
         "--vocab_path", str(vocab), "--dataset_path", str(dataset), "--processes_num",
         str(args.workers), "--data_processor", "mlm", "--seq_length", str(SEQ),
         "--dynamic_masking", "--full_sentences"],
        cwd=work, env=env, timeout=args.timeout, log=work / "uer-preprocess.log")
    result.preprocess_s, result.preprocess_anon_mb = pre.wall_s, pre.peak_anon_mb
    result.preprocess_rss_mb = pre.peak_rss_mb
    if not pre.ok or not dataset.is_file():
        result.errors.append(pre.error())
        return
    fraction = uer_real_fraction(dataset)
    result.notes.append(f"dataset {dataset.stat().st_size / 1e6:.0f} MB, real-token "
                        f"fraction {fraction:.5f}")
    load = os.getloadavg()[0]
    run = run_measured(
        [sys.executable, str(uer / "pretrain.py"), "--dataset_path", str(dataset),
         "--vocab_path", str(vocab), "--config_path",
         str(uer / "models" / "bert" / "tiny_config.json"),
         "--output_model_path", str(work / "uer_tiny.bin"), "--total_steps", str(args.steps),
         "--save_checkpoint_steps", str(10 * args.steps), "--report_steps", "1",
         "--batch_size", str(BATCH), "--data_processor", "mlm",
         "--target", "mlm", "--learning_rate", "1e-4", "--warmup", "0.1"],
        cwd=work, env=env, timeout=args.timeout, log=work / "uer-pretrain.log")
    result.pretrain_s, result.pretrain_anon_mb = run.wall_s, run.peak_anon_mb
    result.pretrain_rss_mb = run.peak_rss_mb
    result.notes.append(f"pretrain: load (1 min) {load:.2f} -> {os.getloadavg()[0]:.2f}")
    if not run.ok:
        result.errors.append(run.error())
    reports = [(t, int(m.group(1)), float(m.group(2))) for t, line in run.lines
               if (m := UER_LINE.search(line))]
    result.steps_seen = len(reports)
    if reports:
        result.first_step_s = reports[0][0]
        set_rates(result, [rate * fraction for _, step, rate in reports if step > args.skip])
    elif run.ok:
        result.errors.append(f"no report lines in UER-py's output:\n{run.tail()}")


# ---- one size --------------------------------------------------------------------------------
def run_size(size: float, args: argparse.Namespace, sources: list[Path], vocab: Path,
             envs: dict[str, dict[str, str]]) -> tuple[dict, list[Result]]:
    corpus = args.out / "corpora" / f"corpus-{size:g}GB.txt"
    started = time.perf_counter()
    meta = build_corpus(corpus, sources, size, args.seed)
    print(f"\n== {size:g} GB: {corpus} ({meta['bytes'] / GB:.3f} GB, {meta['documents']} "
          f"documents, {meta['passes']} passes over {meta['distinct_documents']}; "
          f"{time.perf_counter() - started:.1f} s)", flush=True)
    work = args.out / "work" / f"{size:g}GB"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results: list[Result] = []

    zh_systems = [s for s in ("zhplm", "baseline") if s in args.systems]
    if zh_systems:
        dataset = work / "zhplm_dataset"
        zh_results = {system: Result(system, size) for system in zh_systems}
        results.extend(zh_results.values())
        made_by = None
        for system in zh_systems:  # the current tree's preprocess; the baseline's if it fails
            result = zh_results[system]
            pre = run_measured(zhplm_cmd("preprocess", str(corpus), "--vocab", str(vocab),
                                         "--out", str(dataset), "--workers", str(args.workers),
                                         "--overwrite"), env=envs[system], timeout=args.timeout,
                               log=work / f"{system}-preprocess.log")
            if pre.ok:
                result.preprocess_s, result.preprocess_anon_mb = pre.wall_s, pre.peak_anon_mb
                result.preprocess_rss_mb = pre.peak_rss_mb
                made_by = system
                break
            result.preprocess_error = pre.error()
            print(f"    {LABELS[system]} preprocess FAILED: {pre.error()[-1500:]}", flush=True)
        for system, result in zh_results.items():
            if made_by is None:
                result.errors.append("no zhplm preprocess succeeded")
                continue
            if system != made_by:
                result.notes.append(f"dataset made by {LABELS[made_by]}'s preprocess")
            print(f"  {LABELS[system]} pretrain ...", flush=True)
            run_zhplm_pretrain(result, args, envs[system], dataset, vocab, work)
            show(result)
        if (dataset / "meta.json").is_file():
            meta["zhplm_dataset"] = json.loads((dataset / "meta.json").read_text())
        if not args.keep_data:
            shutil.rmtree(dataset, ignore_errors=True)
    if "uer" in args.systems:
        (work / "models").symlink_to(args.uer / "models")
        result = Result("uer", size)
        results.append(result)
        print("  UER-py preprocess + pretrain ...", flush=True)
        run_uer(result, args, corpus, vocab, work)
        show(result)
        if not args.keep_data:
            (work / "uer_dataset.pt").unlink(missing_ok=True)
    return meta, results


def show(result: Result) -> None:
    cells = {k: v for k, v in asdict(result).items()
             if k not in ("system", "size_gb", "notes", "errors", "preprocess_error")
             and v is not None}
    print(f"    {LABELS[result.system]}: " + ", ".join(
        f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in cells.items()),
        flush=True)
    for note in result.notes:
        print(f"    note: {note}")
    for error in result.errors:
        print(f"    FAILED: {error[-3000:]}", flush=True)


# ---- report --------------------------------------------------------------------------------
def fmt(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def slope(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least-squares line (MB per GB, MB at 0 GB) through (size, MB) points."""
    if len({x for x, _ in points}) < 2:
        return None
    xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    per_gb, at_zero = np.polyfit(xs, ys, 1)
    return float(per_gb), float(at_zero)


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def report(results: list[Result], systems: list[str],
           skip: int) -> tuple[str, dict[str, Any]]:
    rows = ["| size GB | system | preprocess s | preprocess peak RssAnon MB | pretrain peak "
            "RssAnon MB | pretrain peak VmRSS MB | pretrain wall s | first step s | steady "
            "tokens/s (p90) | max data_wait_s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r.size_gb, SYSTEMS.index(r.system))):
        wait = fmt(r.max_data_wait_s, 3)
        if r.max_data_wait_after_skip_s is not None:
            wait += f" (after step {skip}: {r.max_data_wait_after_skip_s:.3f})"
        flag = " (failed)" if r.errors else " (its preprocess failed)" if r.preprocess_error else ""
        rows.append(f"| {r.size_gb:g} | {LABELS[r.system]}{flag} | "
                    f"{fmt(r.preprocess_s)} | {fmt(r.preprocess_anon_mb, 0)} | "
                    f"{fmt(r.pretrain_anon_mb, 0)} | {fmt(r.pretrain_rss_mb, 0)} | "
                    f"{fmt(r.pretrain_s)} | {fmt(r.first_step_s, 2)} | {fmt(r.tokens_per_s, 0)}"
                    f"{f' ({r.tokens_per_s_p90:.0f})' if r.tokens_per_s_p90 else ''} | "
                    f"{wait or 'n/a'} |")
    lines, ratios = ["", *rows, ""], {}
    by = {(r.system, r.size_gb): r for r in results}
    sizes = sorted({r.size_gb for r in results})
    lo, hi = sizes[0], sizes[-1]
    new = "zhplm" if "zhplm" in systems else "baseline"
    small, large = by.get((new, lo)), by.get((new, hi))
    if small and large and small.pretrain_anon_mb and large.pretrain_anon_mb and lo != hi:
        ratio = large.pretrain_anon_mb / small.pretrain_anon_mb
        ratios["pretrain_anon_ratio"] = ratio
        lines.append(f"- {LABELS[new]} pretrain peak RssAnon at {hi:g} GB / at {lo:g} GB: "
                     f"{ratio:.2f} (goal <= {GOAL_RSS_RATIO}): {verdict(ratio <= GOAL_RSS_RATIO)}")
    if large and large.first_step_s is not None:
        ratios["first_step_s_largest"] = large.first_step_s
        lines.append(f"- {LABELS[new]} first step at {hi:g} GB: {large.first_step_s:.2f} s "
                     f"(goal <= {GOAL_FIRST_STEP_S:g} s): "
                     f"{verdict(large.first_step_s <= GOAL_FIRST_STEP_S)}")
    if "zhplm" in systems and "baseline" in systems:
        for size in sizes:
            a, b = by.get(("zhplm", size)), by.get(("baseline", size))
            if a and b and a.tokens_per_s and b.tokens_per_s:
                speed = a.tokens_per_s / b.tokens_per_s
                ratios[f"tokens_per_s_new_over_baseline_{size:g}GB"] = speed
                p90 = ""
                if a.tokens_per_s_p90 and b.tokens_per_s_p90:
                    upper = a.tokens_per_s_p90 / b.tokens_per_s_p90
                    ratios[f"tokens_per_s_p90_new_over_baseline_{size:g}GB"] = upper
                    p90 = f"; of the p90s: {upper:.3f}"
                lines.append(f"- zhplm / baseline steady tokens/s at {size:g} GB: {speed:.3f}{p90} "
                             f"(goal >= {GOAL_SPEED_RATIO}): {verdict(speed >= GOAL_SPEED_RATIO)}")
    for system in SYSTEMS:
        points = [(r.size_gb, r.pretrain_anon_mb) for r in results
                  if r.system == system and r.pretrain_anon_mb and not r.errors]
        line = slope(points)
        if line:
            per_gb, at_zero = line
            at_clue = at_zero + per_gb * CLUE_SMALL_GB
            noise = " (no growth: a negative slope is noise)" if per_gb < 0 else ""
            ratios[f"{system}_pretrain_anon_mb_per_gb"] = per_gb
            ratios[f"{system}_pretrain_anon_mb_at_{CLUE_SMALL_GB:g}GB"] = at_clue
            lines.append(f"- {LABELS[system]} pretrain peak RssAnon: {per_gb:+.1f} MB per GB "
                         f"(least squares over {len(points)} sizes), {at_zero:.0f} MB at 0 GB; "
                         f"extrapolated to {CLUE_SMALL_GB:g} GB (CLUECorpusSmall): "
                         f"{at_clue:.0f} MB{noise}")
    notes = [f"- {r.size_gb:g} GB {LABELS[r.system]}: {note}" for r in results
             for note in r.notes]
    notes += [f"- {r.size_gb:g} GB {LABELS[r.system]}: its preprocess failed: "
              f"{r.preprocess_error.strip().splitlines()[-1]}" for r in results
              if r.preprocess_error]
    notes += [f"- {r.size_gb:g} GB {LABELS[r.system]}: FAILED: "
              f"{e.strip().splitlines()[-1]}" for r in results for e in r.errors]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines), ratios


def machine() -> dict[str, str]:
    info = {"python": platform.python_version(), "cpus": str(os.cpu_count())}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "Model", "CPU family"):
                info[key.strip()] = value.strip()
            if key.strip() == "Flags":
                flags = value.split()
                info["simd"] = " ".join(f for f in flags if f.startswith(("avx", "amx")))
    except (OSError, subprocess.SubprocessError):
        pass
    return info


# ---- main ------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report-from", metavar="JSON", help="only re-render the table of an "
                        "earlier run's corpus_scale.json (give it alone)")
    parser.add_argument("--sizes", default="0.05,0.2,1,2", help="corpus sizes in GB (1e9 B)")
    parser.add_argument("--corpus", type=Path, nargs="+", action="extend", default=[],
                        help="more UTF-8 text files, one document per line")
    parser.add_argument("--uer", type=Path, help="a checkout of dbiir/UER-py")
    parser.add_argument("--baseline-src", type=Path,
                        help="an older zhplm checkout; its src/ goes on PYTHONPATH")
    parser.add_argument("--out", type=Path, default=Path("/tmp/zhplm-corpus-scale"))
    parser.add_argument("--steps", type=int, default=100, help="pretrain steps per run")
    parser.add_argument("--skip", type=int, default=5,
                        help="steps left out of the steady tokens/s median")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help="which of zhplm,baseline,uer to run (baseline/uer need their path)")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "auto"),
                        help="zhplm's precision (UER-py trains in fp32)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="preprocess processes")
    parser.add_argument("--seed", type=int, default=SEED, help="corpus shuffle seed")
    parser.add_argument("--timeout", type=float, default=4 * 3600,
                        help="seconds per command before it is killed")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the preprocessed datasets in OUT/work")
    parser.add_argument("--zhplm-set", nargs="+", action="extend", default=[],
                        metavar="KEY=VALUE", help="extra `zhplm pretrain` overrides (both zhplm "
                        "runs)")
    args = parser.parse_args()
    if args.report_from:
        parser.error("give --report-from JSON alone")
    args.sizes = sorted(float(s) for s in args.sizes.split(","))
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"--systems: unknown {', '.join(sorted(unknown))}")
    if args.uer is None:
        args.systems = [s for s in args.systems if s != "uer"]
    elif "uer" in args.systems:
        args.uer = args.uer.resolve()
        missing = [n for n in ("preprocess.py", "pretrain.py", "models/bert/tiny_config.json",
                               "models/special_tokens_map.json") if not (args.uer / n).is_file()]
        if missing:
            parser.error(f"--uer {args.uer} is not a UER-py checkout (no {', '.join(missing)}); "
                         f"get one with `git clone https://github.com/dbiir/UER-py`")
    if args.baseline_src is None:
        args.systems = [s for s in args.systems if s != "baseline"]
    elif "baseline" in args.systems:
        args.baseline_src = args.baseline_src.resolve()
        if not (args.baseline_src / "src" / "zhplm" / "__init__.py").is_file():
            parser.error(f"--baseline-src {args.baseline_src} has no src/zhplm; make one with "
                         f"`git worktree add /tmp/zhplm-old bbf2be6`")
    for path in args.corpus:
        if not path.is_file():
            parser.error(f"--corpus {path}: no such file")
    args.out = args.out.resolve()
    return args


def write_outputs(record: dict[str, Any], out: Path) -> None:
    """Print the table and ratios of `record` (what corpus_scale.json holds) and write them to
    OUT/corpus_scale.md, and the record with its ratios to OUT/corpus_scale.json."""
    settings = record["settings"]
    results = [Result(**r) for r in record["results"]]
    table, record["ratios"] = report(results, settings["systems"], settings["skip"])
    corpus = " + ".join(["the built-in corpus", *settings.get("corpus", [])])
    header = (
        f"# Corpus scale (issue 21)\n\nCommand: `{' '.join(record['command'])}` "
        f"({record['date'][:10]}); {record['machine'].get('Model name', '?')} "
        f"({record['machine'].get('simd', '')}), {settings['threads']} threads, load (1 min) "
        f"{record['load'][0]:.2f} at start, {record['load'][1]:.2f} at end. Corpus: {corpus}, "
        f"shuffled (seed {settings['seed']}) and repeated to each size; vocab "
        f"{settings['vocab']} (zhplm build-vocab on the built-in corpus). Pretrain: tiny, seq "
        f"{settings['seq']}, batch {settings['batch']}, {settings['steps']} steps, zhplm "
        f"--dtype {settings['dtype']}, UER-py fp32; steady tokens/s = median (p90) of the "
        f"per-step rates after step {settings['skip']}. Memory: peak of the summed RssAnon "
        f"(VmRSS) of the process tree, sampled every 50 ms.\n")
    text = header + table + "\n"
    print("\n" + text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "corpus_scale.md").write_text(text, encoding="utf-8")
    (out / "corpus_scale.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    print(f"wrote {out / 'corpus_scale.md'} and {out / 'corpus_scale.json'}")


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--report-from":
        # Re-render the table of an earlier run (e.g. after changing the report).
        source = Path(sys.argv[2])
        write_outputs(json.loads(source.read_text(encoding="utf-8")), source.parent)
        return 0
    args = parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    (args.out / "corpora").mkdir(parents=True, exist_ok=True)
    envs = {"zhplm": python_env(args.threads)}
    if args.baseline_src:
        envs["baseline"] = python_env(args.threads, args.baseline_src / "src")
    for system in ("zhplm", "baseline"):
        if system in args.systems:
            print(f"{LABELS[system]}: {zhplm_location(envs[system])}")
    if not args.systems:
        raise SystemExit("nothing to run: --systems names none that has its path")
    # The built-in corpus and the vocab, once: by the current tree, else by the baseline.
    builtin, vocab = args.out / "corpora" / "builtin.txt", args.out / "vocab.txt"
    steps = [
        (builtin, [sys.executable, "-c", "import sys; from zhplm.datasets import write_corpus; "
                   "write_corpus(sys.argv[1])", str(builtin)]),
        (vocab, zhplm_cmd("build-vocab", str(builtin), "--size", str(VOCAB_SIZE), "--out",
                          str(vocab))),
    ]
    for target, command in steps:
        for system in envs:
            if target.is_file():
                break
            done = subprocess.run(command, env=envs[system], capture_output=True, text=True,
                                  timeout=1800)
            if done.returncode != 0:
                print(f"{LABELS[system]} could not make {target}:\n{done.stderr[-1500:]}")
        if not target.is_file():
            raise SystemExit(f"could not make {target}")
    sources = [builtin, *(p.resolve() for p in args.corpus)]
    info = machine()
    load_start = os.getloadavg()
    print(f"machine: {info}; load {load_start[0]:.2f}")
    print(f"systems {', '.join(args.systems)}; sizes {args.sizes} GB; {args.steps} steps; "
          f"vocab {vocab}")

    corpora, results = {}, []
    for size in args.sizes:
        meta, size_results = run_size(size, args, sources, vocab, envs)
        corpora[f"{size:g}"] = meta
        results.extend(size_results)

    record = {
        "command": sys.argv, "date": time.strftime("%F %T"), "machine": info,
        "load": [load_start[0], os.getloadavg()[0]], "settings": {
            "sizes_gb": args.sizes, "steps": args.steps, "skip": args.skip, "seq": SEQ,
            "batch": BATCH, "vocab": VOCAB_SIZE, "dtype": args.dtype, "threads": args.threads,
            "workers": args.workers, "seed": args.seed, "systems": args.systems,
            "corpus": [str(p) for p in args.corpus],
            "uer": str(args.uer) if args.uer else None,
            "baseline_src": str(args.baseline_src) if args.baseline_src else None},
        "corpora": corpora, "results": [asdict(r) for r in results]}
    write_outputs(record, args.out)
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
