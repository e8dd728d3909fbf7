"""AdamW with the BERT options, and learning-rate schedules (warmup + linear/cosine/constant).

Two conventions are in use for "AdamW, lr 1e-4":
* torch's / Hugging Face's current one: bias-corrected moments, gradients clipped at 1.0
  (`OptimConfig()`'s defaults);
* BERT's and UER-py's (`UER_OPTIM`, `OptimConfig.uer()`): no bias correction, eps 1e-6,
  weight decay 0.01 except biases and LayerNorm, no gradient clipping. Without bias
  correction the first steps are larger (sqrt(1 - b2) / (1 - b1): 3.2x at step 1, still
  ~5x at step 10 for a steady gradient), so the two are not the same run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from zhplm.errors import ConfigError

SCHEDULES = ("linear", "cosine", "constant", "electra")


@dataclass
class OptimConfig:
    """Optimiser and schedule settings (BERT defaults)."""

    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    bias_correction: bool = True
    warmup: float = 0.1
    schedule: str = "linear"
    max_grad_norm: float = 1.0  # gradient clipping by global norm; 0 switches it off
    layer_decay: float = 1.0  # layer-wise lr decay (ELECTRA): 1.0 = off

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.max_grad_norm < 0:
            raise ConfigError(f"max_grad_norm must be >= 0 (0 = no clipping), got "
                              f"{self.max_grad_norm}")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule={self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        if not 0 <= self.warmup < 1 and not (self.warmup >= 1 and self.warmup == int(self.warmup)):
            raise ConfigError(
                f"warmup={self.warmup}: give a proportion of total steps in [0, 1) or a "
                f"whole number of steps"
            )

    @classmethod
    def uer(cls, **changes: object) -> OptimConfig:
        """UER-py's (and BERT's) AdamW conventions (`UER_OPTIM`), with `changes` on top."""
        return cls(**{**UER_OPTIM, **changes})  # type: ignore[arg-type]


# UER-py's `init_optimizer` / `build_optimizer`: AdamW(correct_bias=False) from its own
# optimizers module (eps default 1e-6), weight decay 0.01 on all but bias/gamma/beta
# (LayerNorm), and no clip_grad_norm_ anywhere in its training loops.
UER_OPTIM: dict[str, object] = {"bias_correction": False, "eps": 1e-6, "weight_decay": 0.01,
                                "max_grad_norm": 0.0}


def no_decay(name: str) -> bool:
    """Biases and LayerNorm weights are not decayed (as in BERT)."""
    return name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name


_LAYER = re.compile(r"encoder\.layer\.(\d+)\.")
_EMBEDDINGS = re.compile(r"(^|\.)embeddings(_project)?\.")


def layer_depth(name: str, num_layers: int) -> int:
    """ELECTRA's depths (`_get_layer_lrs`): 0 for the embeddings and `embeddings_project`,
    i + 1 for encoder layer i, num_layers + 2 for everything else (pooler, task heads)."""
    match = _LAYER.search(name)
    if match:
        return int(match.group(1)) + 1
    return 0 if _EMBEDDINGS.search(name) else num_layers + 2


def parameter_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0
                     ) -> list[dict]:
    """Decayed weights and the rest (bias, LayerNorm); with `layer_decay < 1` also one pair
    per depth, whose lr is scaled by `layer_decay ** (num_layers + 2 - depth)`, exactly as
    ELECTRA's fine-tuning: heads 1, top layer decay^2, embeddings decay^(L+2)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    layers = [int(m.group(1)) for n, _ in named if (m := _LAYER.search(n))]
    num_layers = max(layers) + 1 if layers else 0
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in named:
        depth = layer_depth(name, num_layers) if layer_decay < 1 else 0
        decayed = not no_decay(name)
        group = groups.setdefault((depth, decayed), {
            "params": [], "weight_decay": weight_decay if decayed else 0.0,
            "lr_scale": layer_decay ** (num_layers + 2 - depth) if layer_decay < 1 else 1.0,
        })
        group["params"].append(param)
    return [groups[key] for key in sorted(groups, key=lambda k: (k[0], not k[1]))]


class BertAdamW(torch.optim.AdamW):
    """AdamW without bias correction (`bias_correction=False`), as BERT, ELECTRA and UER-py
    train, on torch's fused AdamW kernel (one pass over each tensor: ~8x faster on a CPU than
    a `foreach` update, which makes six).

    Per step: m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= lr m / (sqrt(v) + eps);
    then decoupled weight decay p -= lr wd p on the updated weights, in UER-py's order (its
    `AdamW(correct_bias=False)`; BERT's and ELECTRA's TF optimisers decay the old weights, a
    difference of order lr^2 wd).

    How the fused kernel is made to do this: every state's step count is pinned at 2^40, where
    beta ** step is 0 in float32, so both bias corrections are exactly 1; and torch's order
    (decay, then update) becomes UER-py's by running each decayed group with
    lr' = lr (1 - lr wd) and wd' = wd / (1 - lr wd):
    p (1 - lr' wd') - lr' u = (p - lr u)(1 - lr wd).
    """

    PINNED_STEP = float(2**40)

    def __init__(self, params: Iterable, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         fused=True)

    def load_state_dict(self, state_dict: dict) -> None:
        """Also reads checkpoints of the earlier `foreach` BertAdamW, whose states had no
        step count and whose groups no `fused` flag."""
        state_dict = {**state_dict,
                      "state": {key: {"step": torch.tensor(self.PINNED_STEP), **value}
                                for key, value in state_dict.get("state", {}).items()},
                      "param_groups": [{**upgrade_group(group), "fused": True}
                                       for group in state_dict.get("param_groups", [])]}
        super().load_state_dict(state_dict)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch's signature
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:  # created here so torch's first step does not count from 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format)
                step = state.get("step")
                if step is None or step.device != p.device or step.dtype != torch.float32:
                    state["step"] = torch.tensor(self.PINNED_STEP, dtype=torch.float32,
                                                 device=p.device)
                else:
                    step.fill_(self.PINNED_STEP)
        saved = [(group["lr"], group["weight_decay"]) for group in self.param_groups]
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            if wd:
                shrink = 1.0 - lr * wd
                if shrink <= 0:
                    raise ConfigError(f"lr x weight_decay = {lr * wd:g} >= 1 would flip the "
                                      f"weights' sign; lower the lr or the weight decay")
                group["lr"], group["weight_decay"] = lr * shrink, wd / shrink
        try:
            return super().step(closure)
        finally:
            for group, (lr, wd) in zip(self.param_groups, saved, strict=True):
                group["lr"], group["weight_decay"] = lr, wd


def upgrade_group(group: dict) -> dict:
    """A saved AdamW param group with the keys today's fused AdamW reads (checkpoints written
    with `foreach=True` before the optimiser moved to the fused kernel)."""
    return {**group, "foreach": None, "fused": True, "decoupled_weight_decay": True,
            "differentiable": False, "capturable": False}


class FusedAdamW(torch.optim.AdamW):
    """torch's AdamW on the fused kernel; reads checkpoints of the earlier `foreach` one."""

    def __init__(self, params: Iterable, **options: object) -> None:
        super().__init__(params, fused=True, **options)  # type: ignore[arg-type]

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict({**state_dict, "param_groups": [
            upgrade_group(group) for group in state_dict.get("param_groups", [])]})


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """AdamW over the two parameter groups."""
    groups = parameter_groups(model, config.weight_decay, config.layer_decay)
    for group in groups:
        group["lr"] = config.lr * group.pop("lr_scale")
    if config.bias_correction:
        return FusedAdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps)
    return BertAdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak lr at `step` (0-based): linear warmup, then the schedule."""
    if schedule == "electra":
        # google-research/electra: polynomial (linear) decay from step 0, times
        # min(1, step / warmup) -- the warmup scales the decayed lr, the first step has lr 0.
        warm = min(1.0, step / warmup_steps) if warmup_steps else 1.0
        return warm * max(0.0, 1.0 - step / max(1, total_steps))
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Warmup (a proportion of `total_steps`, or a number of steps) then the decay."""
    warmup = int(config.warmup) if config.warmup >= 1 else int(config.warmup * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, config.schedule)
    )
