"""The training loop, shared by pre-training and fine-tuning.

The trainer knows nothing of objectives or tasks. It drives a `TrainModule` (an `nn.Module`
whose forward turns one micro-batch into a loss and summed statistics) over a `BatchSource`
(which hands out this rank's micro-batches for each optimiser step and can save/restore its
position), with AdamW, a schedule, clipping, accumulation, bf16 autocast (`dtype`, resolved
by `zhplm.env`: `auto` is bf16 only where the hardware has it), DDP, atomic
checkpoints, exact resume, JSON-lines metrics (with `data_wait_s`, the mean time a step
waited for its batches, and `data_wait_max_s`) and a progress bar.

Losses are sums divided by *global* normalisers (e.g. the number of predicted tokens over
all ranks and micro-batches of the step), so one process with batch B and N processes with
B/N each take the same optimiser step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from zhplm.config import atomic_write_text
from zhplm.env import requested_dtype, resolve_dtype
from zhplm.errors import CheckpointError, ConfigError, ZhplmError
from zhplm.training.checkpoint import latest_checkpoint, load_training_state, save_checkpoint
from zhplm.training.distributed import DistEnv, all_reduce_sum, barrier
from zhplm.training.optim import OptimConfig, build_optimizer, build_scheduler

logger = logging.getLogger("zhplm")
METRICS_NAME = "metrics.jsonl"


class TrainingInterrupted(ZhplmError):
    """SIGINT/SIGTERM arrived; a checkpoint was saved before stopping."""

    def __init__(self, signum: int, checkpoint: Path | None) -> None:
        super().__init__(f"stopped by signal {signum}; checkpoint saved at {checkpoint}; "
                         f"continue with --resume")
        self.signum = signum
        self.checkpoint = checkpoint


@dataclass
class TrainConfig:
    """The loop's settings. `batch_size` is the global batch of one optimiser step.

    `dtype` is `auto | fp32 | bf16` (bf16 = autocast; `auto` = bf16 only where it is native).
    `bf16` is the deprecated spelling (true -> dtype bf16, false -> fp32), kept so old
    recipes and `train.bf16=true` overrides still load; it is folded into `dtype`.
    """

    total_steps: int = 1000
    batch_size: int = 32
    grad_accum: int = 1
    optim: OptimConfig = field(default_factory=OptimConfig)
    dtype: str = "auto"
    bf16: bool | None = None  # deprecated: use dtype
    seed: int = 42
    save_checkpoint_steps: int = 1000  # 0: no checkpoints (except on SIGINT/SIGTERM)
    report_steps: int = 10
    eval_steps: int = 0
    keep_last: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("total_steps", "batch_size", "grad_accum", "report_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        self.dtype = requested_dtype(self.dtype, self.bf16, where="train.dtype")
        self.bf16 = None

    def micro_batch_size(self, world_size: int) -> int:
        """Per-rank, per-micro-step batch; the global batch must divide evenly."""
        parts = world_size * self.grad_accum
        if self.batch_size % parts:
            raise ConfigError(
                f"train.batch_size={self.batch_size} is not divisible by world size "
                f"{world_size} x grad_accum {self.grad_accum}; pick a multiple of {parts}"
            )
        return self.batch_size // parts


class TrainModule(Protocol):
    """What the trainer drives (an `nn.Module`)."""

    def normalizers(self, batches: list[Any]) -> dict[str, Tensor]:
        """Local counts (float tensors) that each loss is divided by, before all-reduce."""

    def __call__(self, batch: Any, normalizers: dict[str, Tensor]) -> tuple[Tensor, dict]:
        """Loss of one micro-batch (already divided by the global normalisers) and summed
        statistics (float tensors) for reporting."""

    # Optional: `begin_step(step, total_steps) -> dict[str, float]` is called before each
    # update (`step` = updates done so far) to set scheduled loss weights; the values it
    # returns are logged with the next report (LERT's lambda_pos / _ner / _dep).


class BatchSource(Protocol):
    """This rank's micro-batches, with a resumable position."""

    def next_step(self, micro_batches: int) -> list[Any]:
        """The micro-batches of the next optimiser step."""

    def state_dict(self) -> dict[str, int]:
        """Position to resume from (plain ints)."""

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a saved position."""


def summarize(stats: dict[str, float]) -> dict[str, float]:
    """Turn summed statistics into means: `x_loss_sum / x_count` -> `x_loss`,
    `x_correct / x_count` -> `x_acc`; for a binary detector (ELECTRA's discriminator)
    `x_true_pos / x_pred_pos` -> `x_precision`, `x_true_pos / x_pos` -> `x_recall` and
    `x_pos / x_count` -> `x_pos_frac` (how many targets are positive)."""
    out: dict[str, float] = {}
    if stats.get("loss_count"):
        out["loss"] = stats["loss_sum"] / stats["loss_count"]
    for key, value in stats.items():
        for suffix, name, denominator in (("_loss_sum", "_loss", "_count"),
                                          ("_correct", "_acc", "_count"),
                                          ("_true_pos", "_precision", "_pred_pos"),
                                          ("_true_pos", "_recall", "_pos"),
                                          ("_pos", "_pos_frac", "_count")):
            if key.endswith(suffix) and not (suffix == "_pos" and key.endswith(
                    ("_true_pos", "_pred_pos"))):
                prefix = key[: -len(suffix)]
                count = stats.get(prefix + denominator, 0.0)
                if count:
                    out[prefix + name] = value / count
    if "tokens" in stats:
        out["tokens"] = stats["tokens"]
    return out


class Trainer:
    """Runs `config.total_steps` optimiser steps of `module` over `source`."""

    def __init__(
        self,
        module: nn.Module,
        source: BatchSource,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        env: DistEnv | None = None,
        save_model: Callable[[Path], None] | None = None,
        evaluate: Callable[[], dict[str, float]] | None = None,
        on_evaluate: Callable[[int, dict[str, float]], bool] | None = None,
    ) -> None:
        self.module = module
        self.source = source
        self.config = config
        self.run_dir = Path(run_dir)
        self.env = env or DistEnv()
        self.save_model = save_model or (lambda path: None)
        self.evaluate = evaluate
        # Called on rank 0 after each evaluation with (step, metrics); True stops training
        # (early stopping). Fine-tuning keeps its best-on-dev model here.
        self.on_evaluate = on_evaluate
        first = next(module.parameters(), None)
        self.device_type = "cpu" if first is None else first.device.type
        self.dtype = resolve_dtype(config.dtype, device=self.device_type, where="train.dtype")
        logger.info("train.dtype %s -> %s on %s", config.dtype, self.dtype, self.device_type)
        self.optimizer = build_optimizer(module, config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.optim, config.total_steps)
        self.step = 0
        self._scheduled: dict[str, float] = {}
        self._stop_signal: int | None = None
        self._window: dict[str, float] = {}
        self._last_eval: dict[str, float] = {}
        self._window_start = time.perf_counter()
        self._wait_sum = self._wait_max = 0.0  # seconds the window's steps waited for data
        self.wrapped: nn.Module = (
            DistributedDataParallel(module) if self.env.distributed else module
        )

    # ---- resume -------------------------------------------------------------------------------
    def resume(self, checkpoint: Path | None = None) -> bool:
        """Restore optimiser, schedule, RNG and data position from a checkpoint (default:
        the run's latest). The model weights are loaded by the caller. Returns False when
        there is nothing to resume from."""
        checkpoint = checkpoint or latest_checkpoint(self.run_dir)
        if checkpoint is None:
            return False
        state = load_training_state(checkpoint)
        self._check_optimiser(checkpoint, state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.source.load_state_dict(state["data"])
        self.step = int(state["step"])
        self._truncate_metrics(self.step)
        logger.info("resumed from %s at step %d", checkpoint, self.step)
        return True

    def _optimiser_convention(self) -> dict[str, Any]:
        optim = self.config.optim
        return {"bias_correction": optim.bias_correction, "max_grad_norm": optim.max_grad_norm}

    def _check_optimiser(self, checkpoint: Path, state: dict[str, Any]) -> None:
        """Refuse to continue a run under the other AdamW convention (bias correction or
        clipping switched, e.g. by `--preset uer` or an edited recipe): the moments would
        be misread or the run would silently change."""
        saved = state.get("optimiser_convention")
        if saved is None:  # older checkpoints: torch's AdamW keeps a step count, BertAdamW not
            entries = list(state["optimizer"].get("state", {}).values())
            if not entries:
                return
            saved = {"bias_correction": "step" in entries[0]}
        wanted = self._optimiser_convention()
        differs = {k: (v, wanted[k]) for k, v in saved.items() if wanted.get(k) != v}
        if differs:
            said = ", ".join(f"{k}={old} (now {new})" for k, (old, new) in differs.items())
            raise CheckpointError(
                f"{checkpoint}: the run was trained with {said}; resume with the run's own "
                f"optimiser settings (the same recipe or --preset), or start a new output_dir"
            )

    def _truncate_metrics(self, step: int) -> None:
        path = self.run_dir / METRICS_NAME
        if not self.env.is_main or not path.is_file():
            return
        kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        atomic_write_text(path, "".join(line + "\n" for line in kept))

    # ---- the loop -----------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train to `total_steps`; returns the last reported metrics."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        last: dict[str, float] = {}
        with self._signals(), self._progress() as bar:
            while self.step < self.config.total_steps:
                stats = self._train_step()
                self.step += 1
                self._accumulate(stats)
                bar.update(1)
                if self.step % self.config.report_steps == 0 or \
                        self.step == self.config.total_steps:
                    last = self._report(bar)
                stop_early = False
                if self.evaluate and self.config.eval_steps and \
                        self.step % self.config.eval_steps == 0:
                    stop_early = self._evaluate_and_report()
                if self.config.save_checkpoint_steps and \
                        self.step % self.config.save_checkpoint_steps == 0:
                    self.checkpoint()
                if self._stop_signal is not None:
                    path = self.checkpoint()
                    raise TrainingInterrupted(self._stop_signal, path)
                if stop_early:
                    logger.info("early stopping at step %d", self.step)
                    break
        if self.evaluate:
            if not self.config.eval_steps or self.step % self.config.eval_steps:
                self._evaluate_and_report()
            last.update(self._last_eval)
        if self.config.save_checkpoint_steps and self.step % self.config.save_checkpoint_steps:
            self.checkpoint()
        return last

    def _train_step(self) -> dict[str, Tensor]:
        waited = time.perf_counter()
        batches = self.source.next_step(self.config.grad_accum)
        waited = time.perf_counter() - waited
        self._wait_sum += waited
        self._wait_max = max(self._wait_max, waited)
        if hasattr(self.module, "begin_step"):  # scheduled loss weights (LERT's LIP)
            self._scheduled = self.module.begin_step(self.step, self.config.total_steps)
        normalizers = self.module.normalizers(batches)
        for value in normalizers.values():
            all_reduce_sum(value, self.env)
        totals: dict[str, Tensor] = {}
        self.wrapped.train()
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            sync = contextlib.nullcontext() if last or not self.env.distributed \
                else self.wrapped.no_sync()
            with sync, self._autocast():
                loss, stats = self.wrapped(batch, normalizers)
                # DDP averages gradients over ranks; losses are already global means.
                (loss * self.env.world_size).backward()
            stats = {**stats, "loss_sum": loss.detach()}
            for key, value in stats.items():
                totals[key] = totals.get(key, 0) + value.detach().float()
        # Summed over ranks at report time, this counts one per optimiser step.
        totals["loss_count"] = torch.tensor(1.0 / self.env.world_size)
        if self.config.optim.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(),
                                           self.config.optim.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return totals

    def _accumulate(self, stats: dict[str, Tensor]) -> None:
        for key, value in stats.items():
            self._window[key] = self._window.get(key, 0.0) + float(value)

    def _report(self, bar: Any) -> dict[str, float]:
        keys = sorted(self._window)
        if self.env.distributed:
            summed = torch.tensor([self._window[k] for k in keys], dtype=torch.float64)
            all_reduce_sum(summed, self.env)
            window = dict(zip(keys, summed.tolist(), strict=True))
        else:
            window = dict(self._window)
        elapsed = time.perf_counter() - self._window_start
        metrics = summarize(window)
        metrics["tokens_per_s"] = metrics.pop("tokens", 0.0) / max(elapsed, 1e-9)
        metrics["steps_per_s"] = window.get("loss_count", 0.0) / max(elapsed, 1e-9)
        metrics["lr"] = max(self.scheduler.get_last_lr())
        steps = max(window.get("loss_count", 0.0), 1e-9)
        metrics["data_wait_s"] = self._wait_sum / steps  # this rank's mean wait per step
        metrics["data_wait_max_s"] = self._wait_max
        metrics.update(self._scheduled)  # the values the last update used
        record = {"step": self.step, **{k: round(v, 6) for k, v in metrics.items()}}
        self._log(record)
        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items()
                         if k in ("loss", "mlm_loss", "mlm_acc", "gen_acc", "disc_acc", "lr",
                                  "tokens_per_s")})
        self._window, self._window_start = {}, time.perf_counter()
        self._wait_sum = self._wait_max = 0.0
        return metrics

    def _evaluate_and_report(self) -> bool:
        """Evaluate, log, and ask `on_evaluate` whether to stop (the answer is rank 0's)."""
        self._last_eval = self._run_eval()
        self._log({"step": self.step, **self._last_eval})
        stop = bool(self.env.is_main and self.on_evaluate is not None
                    and self.on_evaluate(self.step, self._last_eval))
        if self.env.distributed:
            flag = torch.tensor([float(stop)])
            all_reduce_sum(flag, self.env)
            stop = bool(flag.item())
        return stop

    def _run_eval(self) -> dict[str, float]:
        results: dict[str, float] = {}
        if self.env.is_main and self.evaluate is not None:
            self.module.eval()
            with torch.inference_mode(), self._autocast():
                results = {f"eval_{k}": v for k, v in self.evaluate().items()}
            self.module.train()
        barrier(self.env)
        return results

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device_type, dtype=torch.bfloat16,
                              enabled=self.dtype == "bf16")

    def _log(self, record: dict[str, Any]) -> None:
        if not self.env.is_main:
            return
        with open(self.run_dir / METRICS_NAME, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    # ---- checkpoints and signals --------------------------------------------------------------
    def checkpoint(self) -> Path | None:
        """Save a checkpoint of the current step (rank 0 writes; every rank waits)."""
        path = None
        if self.env.is_main:
            state = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "step": self.step,
                "data": self.source.state_dict(),
                "optimiser_convention": self._optimiser_convention(),
            }
            summary = {"data": self.source.state_dict(), "total_steps": self.config.total_steps}
            path = save_checkpoint(self.run_dir, self.step, self.save_model, state, summary,
                                   keep_last=self.config.keep_last)
        barrier(self.env)
        return path

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        def handler(signum: int, frame: Any) -> None:  # noqa: ARG001
            self._stop_signal = signum

        previous = {}
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread: no signal handling
            previous = {}
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)

    @contextlib.contextmanager
    def _progress(self) -> Iterator[Any]:
        if self.env.is_main and self.config.progress:
            from tqdm import tqdm

            bar = tqdm(total=self.config.total_steps, initial=self.step, unit="step",
                       dynamic_ncols=True, mininterval=1.0)
        else:
            bar = _NoBar()
        try:
            yield bar
        finally:
            bar.close()


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def set_postfix(self, values: dict) -> None:
        pass

    def close(self) -> None:
        pass

