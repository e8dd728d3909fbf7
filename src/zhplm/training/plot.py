"""`zhplm plot RUN_DIR`: loss, accuracy and learning-rate curves from `metrics.jsonl`."""

from __future__ import annotations

import json
from pathlib import Path

from zhplm.errors import DataError


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The JSON lines a run logged."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: no metrics here; is {run_dir} a run directory?")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not JSON ({exc})") from None
    return records


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write a PNG with one panel each for losses, accuracies and the learning rate."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DataError("plotting needs matplotlib: pip install matplotlib") from None
    records = read_metrics(run_dir)
    out = Path(out) if out else Path(run_dir) / "curves.png"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = (("loss", lambda k: k.endswith("_loss") or k == "loss"),
              ("accuracy", lambda k: k.endswith("_acc")),
              ("learning rate", lambda k: k == "lr"))
    for ax, (title, wanted) in zip(axes, panels, strict=True):
        keys = sorted({k for r in records for k in r if wanted(k)})
        for key in keys:
            points = [(r["step"], r[key]) for r in records if key in r]
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, marker="o" if key.startswith("eval_") else None,
                    markersize=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("step")
        if keys:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
