"""Helpers shared by the pre-training tests (BERT objectives and ELECTRA)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def recipe_args(dataset: Path, vocab_dir: Path, out: Path, **extra: object) -> list[str]:
    """`key=value` overrides of a short tiny pre-training run on `dataset`."""
    settings: dict[str, object] = {
        "output_dir": str(out),
        "model.preset": "tiny",
        "data.dataset": str(dataset),
        "data.vocab": str(vocab_dir / "vocab.txt"),
        "data.seq_length": 64,
        "data.dev_fraction": 0.05,
        "data.eval_instances": 128,
        "masking.strategy": "wwm",
        "train.batch_size": 16,
        "train.total_steps": 20,
        "train.report_steps": 1,
        "train.save_checkpoint_steps": 10,
        "train.progress": "false",
        "train.optim.lr": 1e-3,
        "train.optim.warmup": 0.1,
    }
    settings.update(extra)
    return [f"{k}={v}" for k, v in settings.items() if v is not None]


def read_losses(run_dir: Path) -> dict[int, float]:
    """step -> training loss from a run's metrics.jsonl."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


def pretrain_cli(args: list[str], **kwargs: object) -> subprocess.Popen:
    """`python -m zhplm pretrain ARGS` in a subprocess (one thread)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "zhplm", "pretrain", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)
