"""The module the trainer drives for pre-training: one encoder pass, weighted objectives.

An objective has a `name`, `counts(batch)` (the numbers its losses are divided by, by name,
summed over the global batch), `needs_encoder` (whether it reads the shared BERT encoder
pass) and `loss(model, encoded, batch, normalizers) -> (loss, stats)`. ELECTRA's objective
runs its two towers itself and trains alone.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from zhplm.errors import ConfigError
from zhplm.objectives.electra import ElectraSection, ReplacedTokenDetection
from zhplm.objectives.lert import LERT_TASKS, LertSection, LinguisticTasks
from zhplm.objectives.mlm import MaskedLM
from zhplm.objectives.sentence import SentenceRelation
from zhplm.objectives.structbert import SentenceOrder, WordOrder

OBJECTIVES = {"mlm": MaskedLM, "nsp": lambda: SentenceRelation("nsp"),
              "sop": lambda: SentenceRelation("sop"), "electra": ReplacedTokenDetection,
              "word_order": WordOrder, "sentence_order": SentenceOrder,
              "lert": LinguisticTasks}
SENTENCE_OBJECTIVES = ("nsp", "sop")
STANDALONE_OBJECTIVES = ("electra",)  # own model (an ELECTRA pair); no other objective beside


def build_objectives(weights: dict[str, float], electra: ElectraSection | None = None,
                     lert: LertSection | None = None, annotation: dict | None = None
                     ) -> list[tuple[object, float]]:
    """Objective instances with their loss weights (zero-weight ones are left out).
    `annotation` is the dataset's meta.json `annotation` (LERT's labels), if any."""
    unknown = sorted(set(weights) - set(OBJECTIVES))
    if unknown:
        raise ConfigError(f"objectives: unknown {', '.join(unknown)}; available: "
                          f"{', '.join(OBJECTIVES)}")
    active = [name for name, w in weights.items() if w]
    if not active:
        raise ConfigError("objectives: give at least one objective a non-zero weight")
    if sum(name in SENTENCE_OBJECTIVES for name in active) > 1:
        raise ConfigError("objectives: nsp and sop share one head; choose one of them")
    standalone = [name for name in active if name in STANDALONE_OBJECTIVES]
    if standalone and len(active) > 1:
        raise ConfigError(
            f"objectives: {standalone[0]} trains its own generator + discriminator and cannot "
            f"be combined with {', '.join(n for n in active if n != standalone[0])}; give the "
            f"others weight 0 (its own loss weights are electra.gen_weight / disc_weight)")
    if "lert" in active and annotation is None:
        raise ConfigError("objectives.lert needs a dataset with linguistic labels: build it "
                          "with zhplm preprocess --annotate jieba (or conll:PATH)")

    def build(name: str) -> object:
        if name == "electra":
            return ReplacedTokenDetection(electra)
        if name == "lert":
            return LinguisticTasks(lert or LertSection(), annotation["labels"],
                                   annotation.get("labelled_tokens"),
                                   annotation.get("tasks", LERT_TASKS))
        return OBJECTIVES[name]()

    return [(build(name), float(weights[name])) for name in active]


class PretrainingModule(nn.Module):
    """Runs the encoder once (when an objective reads it) and sums `weight * loss`."""

    def __init__(self, model: nn.Module, objectives: list[tuple[object, float]]) -> None:
        super().__init__()
        self.model = model
        self.objectives = objectives
        self.needs_encoder = any(getattr(o, "needs_encoder", True) for o, _ in objectives)
        # Heads an objective owns beyond the HF model (StructBERT's 3-way sentence order),
        # trained here and saved beside the model directory (`save_heads`).
        self.heads = nn.ModuleDict({o.name: o.build_head(model) for o, _ in objectives
                                    if hasattr(o, "build_head")})

    def save_heads(self, directory: Path) -> None:
        """Write the objectives' own heads into `directory`, each in its objective's files
        (nothing when there are none)."""
        for objective, _ in self.objectives:
            if objective.name in self.heads:
                objective.save_head(self.heads[objective.name], Path(directory))

    def load_heads(self, directory: Path, missing_ok: bool = False) -> None:
        """Read the heads `save_heads` wrote (resume, or continue from a trained model;
        `missing_ok`, for the latter: keep the fresh head of an objective whose files are not
        there, and of LERT tasks the saved heads lack)."""
        for objective, _ in self.objectives:
            if objective.name in self.heads:
                if missing_ok and not objective.has_head(Path(directory)):
                    continue
                objective.load_head(self.heads[objective.name], Path(directory),
                                    partial=missing_ok)

    def begin_step(self, step: int, total_steps: int) -> dict[str, float]:
        """Tell scheduled objectives (LERT's LIP weights) which update comes next (`step`
        updates done before it); returns their current values, for the metrics."""
        values: dict[str, float] = {}
        for objective, _ in self.objectives:
            if hasattr(objective, "begin_step"):
                values.update(objective.begin_step(step, total_steps))
        return values

    def normalizers(self, batches: list) -> dict[str, Tensor]:
        totals: dict[str, float] = {}
        for objective, _ in self.objectives:
            for batch in batches:
                for key, value in objective.counts(batch).items():
                    totals[key] = totals.get(key, 0.0) + value
        return {key: torch.tensor(value, dtype=torch.float64) for key, value in totals.items()}

    def forward(self, batch, normalizers: dict[str, Tensor]) -> tuple[Tensor, dict]:  # noqa: ANN001
        encoded = self.model.base_model(batch.input_ids, batch.attention_mask,
                                        batch.token_type_ids) if self.needs_encoder else None
        norms = {key: value.to(torch.float32) for key, value in normalizers.items()}
        total: Tensor | float = 0.0
        stats: dict[str, Tensor] = {}
        for objective, weight in self.objectives:
            extra = {"head": self.heads[objective.name]} if objective.name in self.heads else {}
            loss, objective_stats = objective.loss(self.model, encoded, batch, norms, **extra)
            total = total + weight * loss
            stats.update(objective_stats)
        stats["tokens"] = torch.tensor(float(batch.num_tokens))
        return total, stats
