"""Helpers shared by the pre-training tests (BERT objectives and ELECTRA)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
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


def kill_then_resume(args_for: Callable[[Path], list[str]], root: Path,
                     steps: int = 20) -> tuple[Path, Path]:
    """Run `root/full` to the end and `root/killed` until its step-10 checkpoint, SIGKILL
    it, resume it with --resume, and check both logged the same loss at every step.
    Returns (full, killed) run directories for comparing what they saved."""
    full_dir, killed_dir = root / "full", root / "killed"
    full = pretrain_cli(args_for(full_dir))
    killed = pretrain_cli(args_for(killed_dir))
    checkpoint = killed_dir / "checkpoints" / "step-00000010"
    deadline = time.time() + 180
    while not checkpoint.is_dir() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert checkpoint.is_dir(), killed.communicate()[1]
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    resumed = pretrain_cli([*args_for(killed_dir), "--resume"])
    assert resumed.wait(timeout=300) == 0, resumed.communicate()[1]
    assert full.wait(timeout=300) == 0, full.communicate()[1]
    reference, again = read_losses(full_dir), read_losses(killed_dir)
    assert sorted(again) == list(range(1, steps + 1))
    assert all(again[s] == reference[s] for s in range(1, steps + 1)), (reference, again)
    return full_dir, killed_dir
