"""Training checkpoints: an HF model directory plus the state to resume exactly.

    RUN_DIR/checkpoints/step-00000100/
        config.json, model.safetensors, vocab.txt, ...   (loads in transformers as is)
        training_state.pt    optimizer, scheduler, RNG, data position (weights_only load)
        trainer_state.json   step, data position, metrics (human-readable)

A checkpoint is written into a temporary directory and renamed into place, so a crash or
SIGKILL never leaves a half-written checkpoint under a final name; the last N are kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from zhplm.errors import CheckpointError

STATE_NAME = "training_state.pt"
TRAINER_STATE_NAME = "trainer_state.json"
CHECKPOINT_PATTERN = re.compile(r"^step-(\d{8})$")


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Finished checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if CHECKPOINT_PATTERN.match(p.name) and
             (p / STATE_NAME).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest finished checkpoint, or None."""
    found = checkpoint_dirs(run_dir)
    return found[-1] if found else None


def save_checkpoint(
    run_dir: Path,
    step: int,
    save_model: Any,
    training_state: dict[str, Any],
    summary: dict[str, Any],
    keep_last: int = 2,
) -> Path:
    """Write checkpoint `step` atomically; `save_model(dir)` writes the HF model files."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
    try:
        save_model(tmp)
        torch.save(training_state, tmp / STATE_NAME)
        (tmp / TRAINER_STATE_NAME).write_text(
            json.dumps({"step": step, **summary}, indent=2, ensure_ascii=False) + "\n",
            encoding="utf-8",
        )
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in checkpoint_dirs(run_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_training_state(checkpoint: Path) -> dict[str, Any]:
    """Read `training_state.pt` with `weights_only=True` (no arbitrary unpickling)."""
    path = Path(checkpoint) / STATE_NAME
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; the checkpoint is incomplete") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same error to a user
        raise CheckpointError(
            f"{path}: cannot be read safely ({exc}); resume from an earlier checkpoint or "
            f"delete this one"
        ) from None
