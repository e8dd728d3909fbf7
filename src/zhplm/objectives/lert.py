"""LERT (Cui et al. 2022, ymcui/LERT): the linguistically-informed pre-training schedule.

LERT adds three linguistic tasks to MLM (POS, NER and DEP labels of the word a masked token
belongs to). Their weights follow the LIP schedule: each ramps linearly from 0 to 1 and then
stays at 1, the simpler task first -- POS reaches 1 at 1/6 of the run, NER at 1/3 and DEP at
1/2 (LERT: 333k, 666k and 1M of 2M steps). Total loss = MLM + sum of lambda_task x task.

This module holds the schedule and the recipe section; the heads and their loss come with
the annotated shards (issue 9, in progress).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zhplm.errors import ConfigError

LERT_TASKS = ("pos", "ner", "dep")
LIP_RAMP_ENDS = {"pos": 1 / 6, "ner": 1 / 3, "dep": 1 / 2}


def lip_weight(step: int, total_steps: int, ramp_end: float) -> float:
    """lambda of a task at `step`: step / end until `end`, then 1. `ramp_end` is a number of
    steps (>= 1, a whole number) or a fraction of `total_steps` (< 1)."""
    end = ramp_end if ramp_end >= 1 else ramp_end * total_steps
    if end <= 0:
        return 1.0
    return min(1.0, step / end)


@dataclass
class LertSection:
    """The `lert:` section of a recipe: which tasks, and where each one's ramp ends."""

    tasks: list[str] = field(default_factory=lambda: list(LERT_TASKS))
    ramp_ends: dict[str, float] = field(default_factory=lambda: dict(LIP_RAMP_ENDS))

    def __post_init__(self) -> None:
        unknown = sorted(set(self.tasks) - set(LERT_TASKS))
        if unknown:
            raise ConfigError(f"lert.tasks: unknown {', '.join(unknown)}; LERT's tasks are "
                              f"{', '.join(LERT_TASKS)}")
        for task in self.tasks:
            end = self.ramp_ends.get(task)
            if end is None:
                raise ConfigError(f"lert.ramp_ends.{task} is missing; give a fraction of the "
                                  f"run (LERT: pos 1/6, ner 1/3, dep 1/2) or a step number")
            if end < 0 or (end >= 1 and end != int(end)):
                raise ConfigError(f"lert.ramp_ends.{task}={end}: a fraction in [0, 1) or a "
                                  f"whole number of steps")

    def weights(self, step: int, total_steps: int) -> dict[str, float]:
        """lambda_task at `step` for every task, as metrics.jsonl logs them."""
        return {f"lambda_{t}": lip_weight(step, total_steps, self.ramp_ends[t])
                for t in self.tasks}
