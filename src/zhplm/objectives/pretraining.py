"""The module the trainer drives for pre-training: one encoder pass, weighted objectives."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from zhplm.errors import ConfigError
from zhplm.objectives.mlm import MaskedLM
from zhplm.objectives.sentence import SentenceRelation

OBJECTIVES = {"mlm": MaskedLM, "nsp": lambda: SentenceRelation("nsp"),
              "sop": lambda: SentenceRelation("sop")}
SENTENCE_OBJECTIVES = ("nsp", "sop")


def build_objectives(weights: dict[str, float]) -> list[tuple[object, float]]:
    """Objective instances with their loss weights (zero-weight ones are left out)."""
    unknown = sorted(set(weights) - set(OBJECTIVES))
    if unknown:
        raise ConfigError(f"objectives: unknown {', '.join(unknown)}; available: "
                          f"{', '.join(OBJECTIVES)}")
    chosen = [(OBJECTIVES[name](), float(w)) for name, w in weights.items() if w]
    if not chosen:
        raise ConfigError("objectives: give at least one objective a non-zero weight")
    if sum(name in SENTENCE_OBJECTIVES for name, w in weights.items() if w) > 1:
        raise ConfigError("objectives: nsp and sop share one head; choose one of them")
    return chosen


class PretrainingModule(nn.Module):
    """Runs the encoder once and sums `weight * loss` over the objectives."""

    def __init__(self, model: nn.Module, objectives: list[tuple[object, float]]) -> None:
        super().__init__()
        self.model = model
        self.objectives = objectives

    def normalizers(self, batches: list) -> dict[str, Tensor]:
        return {obj.name: torch.tensor(sum(obj.count(b) for b in batches), dtype=torch.float64)
                for obj, _ in self.objectives}

    def forward(self, batch, normalizers: dict[str, Tensor]) -> tuple[Tensor, dict]:  # noqa: ANN001
        encoded = self.model.bert(batch.input_ids, batch.attention_mask, batch.token_type_ids)
        total: Tensor | float = 0.0
        stats: dict[str, Tensor] = {}
        for objective, weight in self.objectives:
            norm = normalizers[objective.name].to(torch.float32)
            loss, objective_stats = objective.loss(self.model, encoded, batch, norm)
            total = total + weight * loss
            stats.update(objective_stats)
        stats["tokens"] = torch.tensor(float(batch.num_tokens))
        return total, stats
