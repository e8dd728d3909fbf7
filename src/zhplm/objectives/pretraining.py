"""The module the trainer drives for pre-training: one encoder pass, weighted objectives.

An objective has a `name`, `counts(batch)` (the numbers its losses are divided by, by name,
summed over the global batch), `needs_encoder` (whether it reads the shared BERT encoder
pass) and `loss(model, encoded, batch, normalizers) -> (loss, stats)`. ELECTRA's objective
runs its two towers itself and trains alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from zhplm.errors import ConfigError
from zhplm.objectives.electra import ElectraSection, ReplacedTokenDetection
from zhplm.objectives.mlm import MaskedLM
from zhplm.objectives.sentence import SentenceRelation

OBJECTIVES = {"mlm": MaskedLM, "nsp": lambda: SentenceRelation("nsp"),
              "sop": lambda: SentenceRelation("sop"), "electra": ReplacedTokenDetection}
SENTENCE_OBJECTIVES = ("nsp", "sop")
STANDALONE_OBJECTIVES = ("electra",)  # own model (an ELECTRA pair); no other objective beside


def build_objectives(weights: dict[str, float], electra: ElectraSection | None = None
                     ) -> list[tuple[object, float]]:
    """Objective instances with their loss weights (zero-weight ones are left out)."""
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
    return [(ReplacedTokenDetection(electra) if name == "electra" else OBJECTIVES[name](),
             float(weights[name])) for name in active]


class PretrainingModule(nn.Module):
    """Runs the encoder once (when an objective reads it) and sums `weight * loss`."""

    def __init__(self, model: nn.Module, objectives: list[tuple[object, float]]) -> None:
        super().__init__()
        self.model = model
        self.objectives = objectives
        self.needs_encoder = any(getattr(o, "needs_encoder", True) for o, _ in objectives)

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
            loss, objective_stats = objective.loss(self.model, encoded, batch, norms)
            total = total + weight * loss
            stats.update(objective_stats)
        stats["tokens"] = torch.tensor(float(batch.num_tokens))
        return total, stats
