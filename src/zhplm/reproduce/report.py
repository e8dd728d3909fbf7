"""The tables of a reproduce run, as the seeds print theirs: per row and task column the
best grid cell (by mean dev score) as "max (mean)" over seeds, and an average column (the
mean of the columns' maxima and of their means, as UER-py averages its tasks).
`results.md`, `results.json`, a bar chart per table and every row's pre-training curves."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Any

from zhplm.config import atomic_write_text
from zhplm.reproduce.plan import Plan


def cell_scores(summary: dict[str, Any], split: str = "dev") -> list[float]:
    """The seeds' scores (x100 unless already percentages) of the grid's best cell."""
    best = summary.get("best_cell")
    if best is None:
        return []
    scale = summary.get("scale", 100.0)
    return [v * scale for v in summary["cells"][best][split]]


def aggregate(values: list[float]) -> dict[str, float] | None:
    """{"max", "mean", "n"} of a cell's seed scores (None when there are none)."""
    if not values:
        return None
    return {"max": max(values), "mean": statistics.fmean(values), "n": len(values)}


def build_tables(plan: Plan, finetuning: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """table -> {"columns": [...], "rows": [{"name", "cells": {column: agg}, "average"}]}."""
    columns = [t.name for t in plan.tasks]
    tables: dict[str, Any] = {}
    for table in plan.tables:
        rows = []
        for row in plan.rows:
            if row.table != table:
                continue
            key = row.run or f"random-{row.size}"
            cells = {c: aggregate(cell_scores(finetuning.get(key, {}).get(c, {})))
                     for c in columns}
            done = [v for v in cells.values() if v is not None]
            average = ({"max": statistics.fmean(v["max"] for v in done),
                        "mean": statistics.fmean(v["mean"] for v in done),
                        "n": min(v["n"] for v in done)}
                       if len(done) == len(columns) and done else None)
            rows.append({"name": row.name, "objective": row.objective, "size": row.size,
                         "tokens": row.tokens, "steps": row.steps, "cells": cells,
                         "average": average})
        tables[table] = {"columns": columns, "rows": rows}
    return tables


def fmt(agg: dict[str, float] | None) -> str:
    """"max (mean)" with two decimals, or "-"."""
    return "-" if agg is None else f"{agg['max']:.2f} ({agg['mean']:.2f})"


TITLES = {"scaling": "Scaling (UER-py's miniatures, MLM, equal tokens)",
          "objectives": "Objectives (tiny, equal training compute)"}


def to_markdown(plan: Plan, tables: dict[str, Any], seconds: float | None = None) -> str:
    """results.md: the plan's budget in words, then one table per requested table."""
    lines = ["# zhplm reproduce", "",
             f"Dev scores, \"max (mean)\" over {plan.seeds} seeds of the best grid cell "
             f"(grid {json.dumps(plan.grid)}); the average column averages the task columns.",
             f"Pre-training budget: {plan.pretrain_tokens:,} tokens per row in the scaling "
             f"table; the objective rows get MLM-tiny's training FLOPs on that many tokens "
             f"(the tokens column shows what each read)."]
    if seconds is not None:
        lines.append(f"Wall time of this run: {seconds / 60:.1f} min.")
    for table, content in tables.items():
        columns = content["columns"]
        lines += ["", f"## {TITLES.get(table, table)}", "",
                  "| row | tokens | " + " | ".join(columns) + " | average |",
                  "|---|---:|" + "---:|" * (len(columns) + 1)]
        for row in content["rows"]:
            tokens = f"{row['tokens']:,}" if row["tokens"] else "0"
            lines.append(f"| {row['name']} | {tokens} | "
                         + " | ".join(fmt(row["cells"][c]) for c in columns)
                         + f" | {fmt(row['average'])} |")
    goals = goal_checks(tables)
    if goals:
        lines += ["", "## Goals (the average column, mean over seeds)", "", *goals]
    return "\n".join(lines) + "\n"


def _average(tables: dict[str, Any], table: str, objective: str, size: str | None = None
             ) -> tuple[str, float] | None:
    """(row name, mean of the average column) of the first finished row that matches."""
    for row in tables.get(table, {}).get("rows", []):
        if row["objective"] == objective and (size is None or row["size"] == size) \
                and row["average"] is not None:
            return row["name"], row["average"]["mean"]
    return None


def goal_checks(tables: dict[str, Any]) -> list[str]:
    """Issue 12's goals for a run, each met or missed with its numbers (on the average
    column, mean over seeds): every pre-trained row above random initialisation, mini above
    tiny, and ELECTRA and LERT not below MLM at equal compute. Goals whose rows are not in
    the run are left out."""
    lines: list[str] = []

    def check(ok: bool, text: str) -> None:
        lines.append(f"- {'met' if ok else 'MISSED'}: {text}")

    # the random row sits in the objectives table, or in scaling when that is the only one
    random = _average(tables, "objectives", "random") or _average(tables, "scaling", "random")
    if random is not None:
        checked: set[tuple[str, str]] = set()  # MLM-tiny is one run in both tables
        for table in ("scaling", "objectives"):
            for row in tables.get(table, {}).get("rows", []):
                key = (row["objective"], row["size"])
                if row["objective"] == "random" or row["average"] is None or key in checked:
                    continue
                checked.add(key)
                mean = row["average"]["mean"]
                check(mean > random[1], f"{row['name']} ({table}) above {random[0]}: "
                                        f"{mean:.2f} vs {random[1]:.2f}")
    tiny, mini = (_average(tables, "scaling", "mlm", s) for s in ("tiny", "mini"))
    if tiny is not None and mini is not None:
        check(mini[1] > tiny[1], f"mini above tiny: {mini[1]:.2f} vs {tiny[1]:.2f}")
    mlm = _average(tables, "objectives", "mlm")
    for objective in ("electra", "lert"):
        other = _average(tables, "objectives", objective)
        if mlm is not None and other is not None:
            check(other[1] >= mlm[1], f"{other[0]} not below {mlm[0]}: {other[1]:.2f} vs "
                                      f"{mlm[1]:.2f}")
    return lines


def write_report(plan: Plan, raw: dict[str, Any], out: Path) -> dict[str, Any]:
    """results.json, results.md and the PNGs; returns the tables."""
    tables = build_tables(plan, raw["finetuning"])
    document = {"plan": json.loads(plan.to_json()), "tables": tables,
                "pretraining": raw.get("pretraining", {})}
    atomic_write_text(out / "results.json", json.dumps(document, indent=2,
                                                       ensure_ascii=False) + "\n")
    atomic_write_text(out / "results.md", to_markdown(plan, tables, raw.get("seconds")))
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    _curves(plan, out, plots)
    for table, content in tables.items():
        _bars(table, content, plots / f"{table}.png")
    return tables


def _curves(plan: Plan, out: Path, plots: Path) -> None:
    from zhplm.training.plot import plot_run

    for row in plan.pretrain_runs():
        run = out / row.run
        if (run / "metrics.jsonl").is_file():
            png = plot_run(run)
            shutil.copyfile(png, plots / f"curves-{Path(row.run).name}.png")


def _bars(table: str, content: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in content["rows"]]
    columns = [*content["columns"], "average"]
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(columns)), 4.5))
    width = 0.8 / max(1, len(names))
    for i, row in enumerate(content["rows"]):
        values = [(row["cells"][c] or {}).get("mean", 0.0) for c in content["columns"]]
        values.append((row["average"] or {}).get("mean", 0.0))
        ax.bar([j + i * width for j in range(len(columns))], values, width, label=row["name"])
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(columns))])
    ax.set_xticklabels(columns, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("dev score, mean over seeds")
    ax.set_title(TITLES.get(table, table))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
