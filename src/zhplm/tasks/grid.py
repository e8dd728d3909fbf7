"""Grid search over hyper-parameters and seeds, reported as the papers do: "max (mean)".

    zhplm finetune ... --grid epochs=3,5,8 batch_size=32,64 lr=3e-5,1e-4,3e-4 --seeds 5

Every combination (cell) is fine-tuned with each seed in `OUT/CELL/seed-S/`. A run whose
`results.json` exists is not run again, so an interrupted grid resumes where it stopped.
`OUT/results.json` holds every run's scores; `OUT/results.md` is the table: per cell the dev
(and test) main metric as "max (mean)" over seeds, the best cell (by mean dev) marked.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from zhplm.config import atomic_write_text
from zhplm.errors import ConfigError
from zhplm.recipe import from_dict, to_dict

logger = logging.getLogger("zhplm")
GRID_KEYS = ("epochs", "batch_size", "lr", "warmup", "weight_decay", "layer_decay",
             "max_seq_length")


def parse_grid(specs: Sequence[str]) -> dict[str, list[Any]]:
    """`["epochs=3,5", "lr=3e-5,1e-4"]` -> {"epochs": [3, 5], "lr": [3e-05, 0.0001]}."""
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, _, values = spec.partition("=")
        key = key.strip()
        if key not in GRID_KEYS or not values.strip():
            raise ConfigError(f"--grid {spec!r}: use KEY=V1,V2,... with KEY one of "
                              f"{', '.join(GRID_KEYS)}")
        grid[key] = [yaml.safe_load(v) for v in values.split(",") if v.strip()]
    return grid


def cell_name(values: dict[str, Any]) -> str:
    """A directory name for one combination, e.g. `epochs=3_batch_size=32_lr=3e-05`."""
    return "_".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in values.items()) or "default"


def max_mean(values: Sequence[float], scale: float = 100.0) -> str:
    """"max (mean)" with two decimals, values x `scale` (fractions print x100, as the papers
    do; CMRC EM/F1 are already percentages, scale 1)."""
    if not values:
        return "-"
    return f"{max(values) * scale:.2f} ({statistics.fmean(values) * scale:.2f})"


def run_grid(base: Any, grid: dict[str, list[Any]], seeds: int, out_dir: str | Path,
             run: Callable[[Any], dict[str, Any]], keep_models: bool = False) -> dict[str, Any]:
    """Run every cell x seed of `grid` with `run(config)` (a `FinetuneConfig` -> results)."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    out = Path(out_dir)
    keys = list(grid)
    cells = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        # from_dict coerces values ("1e-3" -> 0.001) and validates them
        checked = from_dict(type(base), {**to_dict(base), **dict(zip(keys, combo, strict=True))},
                            "--grid")
        cell = {k: getattr(checked, k) for k in keys}
        if cell not in cells:  # "1" and "1.0" are one cell
            cells.append(cell)
    runs: list[dict[str, Any]] = []
    for cell in cells:
        for i in range(seeds):
            seed = base.seed + i
            run_dir = out / cell_name(cell) / f"seed-{seed}"
            done = run_dir / "results.json"
            if done.is_file():
                results = json.loads(done.read_text(encoding="utf-8"))
            else:
                shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run starts over
                config = from_dict(type(base), {**to_dict(base), **cell, "seed": seed,
                                                "output_dir": str(run_dir), "progress": False},
                                   f"grid cell {cell_name(cell)}")
                logger.warning("grid: %s seed %d", cell_name(cell), seed)
                results = run(config)
                if not keep_models:
                    for sub in ("checkpoints", "model", "best"):
                        shutil.rmtree(run_dir / sub, ignore_errors=True)
            runs.append({"cell": cell, "seed": seed, "dev": results.get("dev", {}),
                         "test": results.get("test", {}), "kind": results.get("kind"),
                         "main_metric": results.get("main_metric")})
    summary = summarize(runs)
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2,
                                                       ensure_ascii=False) + "\n")
    atomic_write_text(out / "results.md", to_markdown(summary))
    return summary


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per cell: the main metric's values over seeds on dev and test; the best cell."""
    metric = next((r["main_metric"] for r in runs if r.get("main_metric")), None)
    cells: dict[str, dict[str, Any]] = {}
    for r in runs:
        entry = cells.setdefault(cell_name(r["cell"]), {"cell": r["cell"], "dev": [],
                                                         "test": [], "seeds": []})
        entry["seeds"].append(r["seed"])
        for split in ("dev", "test"):
            if metric in r[split]:
                entry[split].append(r[split][metric])
    scored = [c for c in cells if cells[c]["dev"]]
    best = max(scored, key=lambda c: statistics.fmean(cells[c]["dev"]), default=None)
    percent = any(r.get("kind") == "mrc" for r in runs)  # CMRC EM/F1 are x100 already
    return {"main_metric": metric, "scale": 1.0 if percent else 100.0, "cells": cells,
            "best_cell": best, "runs": runs}


def to_markdown(summary: dict[str, Any]) -> str:
    """The results table: one row per cell, "max (mean)" over seeds."""
    metric = summary["main_metric"]
    lines = [f"Main metric: **{metric}**, \"max (mean)\" over seeds; the best cell by mean dev "
             f"score is in bold.", "",
             "| cell | seeds | dev | test |", "|---|---|---|---|"]
    for name, cell in summary["cells"].items():
        label = f"**{name}**" if name == summary["best_cell"] else name
        scale = summary["scale"]
        lines.append(f"| {label} | {len(cell['seeds'])} | {max_mean(cell['dev'], scale)} | "
                     f"{max_mean(cell['test'], scale)} |")
    return "\n".join(lines) + "\n"
