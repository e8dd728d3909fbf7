"""LERT (Cui et al. 2022, ymcui/LERT): the linguistically-informed pre-training schedule.

LERT adds three linguistic tasks to MLM (POS, NER and DEP labels of the word a masked token
belongs to). Their weights follow the LIP schedule: each ramps linearly from 0 to 1 and then
stays at 1, the simpler task first -- POS reaches 1 at 1/6 of the run, NER at 1/3 and DEP at
1/2 (LERT: 333k, 666k and 1M of 2M steps). Total loss = MLM + sum of lambda_task x task.

The labels come from a dataset made with `zhplm preprocess --annotate jieba|conll:PATH`
(`zhplm.data.annotate`); the heads are `zhplm.modeling.lert_heads.LinguisticHeads`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from zhplm.errors import ConfigError
from zhplm.modeling.bert import EncoderOutput
from zhplm.modeling.lert_heads import LinguisticHeads

logger = logging.getLogger("zhplm")

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
        if not self.tasks:
            raise ConfigError("lert.tasks is empty; list one or more of "
                              f"{', '.join(LERT_TASKS)} (or give objectives.lert weight 0)")
        unknown = sorted(set(self.tasks) - set(LERT_TASKS))
        if unknown:
            raise ConfigError(f"lert.tasks: unknown {', '.join(unknown)}; LERT's tasks are "
                              f"{', '.join(LERT_TASKS)}")
        unknown = sorted(set(self.ramp_ends) - set(LERT_TASKS))
        if unknown:
            raise ConfigError(f"lert.ramp_ends: unknown {', '.join(unknown)}; LERT's tasks are "
                              f"{', '.join(LERT_TASKS)}")
        # a task left out keeps LERT's fraction (pos 1/6, ner 1/3, dep 1/2)
        self.ramp_ends = {**LIP_RAMP_ENDS, **self.ramp_ends}
        for task in self.tasks:
            end = self.ramp_ends[task]
            if end < 0 or (end >= 1 and end != int(end)):
                raise ConfigError(f"lert.ramp_ends.{task}={end}: a fraction in [0, 1) or a "
                                  f"whole number of steps")

    def weights(self, step: int, total_steps: int) -> dict[str, float]:
        """lambda_task at `step` for every task, as metrics.jsonl logs them."""
        return {f"lambda_{t}": lip_weight(step, total_steps, self.ramp_ends[t])
                for t in self.tasks}


class LinguisticTasks:
    """LERT's linguistic objective: POS / NER / DEP of the word under each masked token.

    The heads (`LinguisticHeads`, saved as `lert_heads.safetensors` + `lert_labels.json`)
    read `cls.predictions.transform` of the masked positions' hidden states, as LERT's do
    (the transform is recomputed here on those rows: H x H per masked token, small beside
    the vocabulary projection). Per task, loss = sum(w * CE) / (sum(w) + 1e-5) over the
    masked positions of the global batch, w = 0 where the dataset has no label; the total
    adds `lambda_task * loss` with lambda from the LIP schedule (`begin_step`).

    Tasks the dataset has no labels for (the jieba annotator gives no DEP) get no head and
    lambda 0, with a warning.
    """

    name = "lert"

    def __init__(self, section: LertSection, labels: dict[str, list[str]],
                 labelled_tokens: dict[str, int] | None = None,
                 columns: tuple[str, ...] | list[str] = LERT_TASKS) -> None:
        """`labels`: the dataset's label names per task (its meta.json `annotation`);
        `labelled_tokens`: how many of its tokens carry a label, per task (None = all);
        `columns`: the task of each column of the batch's `linguistic_labels`."""
        self.section = section
        self.columns = {task: i for i, task in enumerate(columns)}
        self.trained = [t for t in section.tasks
                        if labelled_tokens is None or labelled_tokens.get(t, 0) > 0]
        missing = [t for t in section.tasks if t not in self.trained]
        if missing:
            logger.warning("lert: the dataset has no %s labels (its annotator gives none); "
                           "those tasks get weight 0 and no head. Annotate with a dependency "
                           "parse (zhplm preprocess --annotate conll:PATH) to train them",
                           "/".join(missing))
        if not self.trained:
            raise ConfigError("objectives.lert: the dataset has no labels for any of lert.tasks "
                              f"({', '.join(section.tasks)}); re-run zhplm preprocess with "
                              "--annotate jieba or --annotate conll:PATH")
        self.labels = {t: list(labels[t]) for t in self.trained}
        self.lambdas = dict.fromkeys(self.trained, 0.0)

    def begin_step(self, step: int, total_steps: int) -> dict[str, float]:
        """Set lambda for the update that has `step` updates before it (TF's global_step,
        as LERT: the first update has lambda 0); returns `lambda_task` for every task of
        `lert.tasks` (0 for those without labels), as metrics.jsonl logs them."""
        weights = self.section.weights(step, total_steps)
        for task in self.trained:
            self.lambdas[task] = weights[f"lambda_{task}"]
        return {key: (value if key[len("lambda_"):] in self.trained else 0.0)
                for key, value in weights.items()}

    def build_head(self, model: nn.Module) -> LinguisticHeads:
        """The dense layers (N(0, initializer_range) weights, zero bias, as LERT's)."""
        return LinguisticHeads(model.config.hidden_size, self.labels,
                               model.config.initializer_range)

    def save_head(self, head: LinguisticHeads, directory: Path) -> None:
        head.save_pretrained(directory)

    def load_head(self, head: LinguisticHeads, directory: Path, partial: bool = False) -> None:
        head.load_weights(directory, partial=partial)

    def has_head(self, directory: Path) -> bool:
        return LinguisticHeads.has_heads(directory)

    def _labels(self, batch) -> Tensor:  # noqa: ANN001 - PretrainBatch
        if batch.linguistic_labels is None:
            raise ConfigError("objectives.lert needs a dataset with linguistic labels: build "
                              "it with zhplm preprocess --annotate jieba (or conll:PATH)")
        return batch.linguistic_labels

    def counts(self, batch) -> dict[str, float]:  # noqa: ANN001 - PretrainBatch
        labels = self._labels(batch)
        return {f"lert_{t}": float((labels[:, self.columns[t]] >= 0).sum())
                for t in self.trained}

    def loss(self, model: nn.Module, encoded: EncoderOutput, batch,  # noqa: ANN001
             normalizers: dict[str, Tensor], head: LinguisticHeads | None = None
             ) -> tuple[Tensor, dict[str, Tensor]]:
        labels = self._labels(batch)
        hidden = encoded.last_hidden_state.flatten(0, 1).index_select(0, batch.mlm_positions)
        logits = head(model.cls.predictions.transform(hidden))
        total: Tensor | float = 0.0
        stats: dict[str, Tensor] = {}
        for task in self.trained:
            target = labels[:, self.columns[task]]
            task_logits = logits[task].float()
            loss_sum = F.cross_entropy(task_logits, target, ignore_index=-1, reduction="sum")
            known = target >= 0
            stats[f"{task}_loss_sum"] = loss_sum.detach()
            stats[f"{task}_correct"] = (task_logits.argmax(-1)[known] == target[known]) \
                .sum().float()
            stats[f"{task}_count"] = known.sum().float()
            total = total + self.lambdas[task] * loss_sum / (normalizers[f"lert_{task}"] + 1e-5)
        return total, stats
