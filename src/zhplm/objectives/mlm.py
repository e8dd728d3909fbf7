"""Masked language modelling: cross-entropy at the masked positions only.

The vocabulary projection runs on the ~15 % of positions that are predicted, never on every
token: with a 21k vocab that projection would otherwise dominate the step.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from zhplm.modeling.bert import EncoderOutput


class MaskedLM:
    """The MLM objective over `model.cls.predictions` (tied to the word embeddings)."""

    name = "mlm"

    def count(self, batch) -> float:  # noqa: ANN001 - PretrainBatch
        return float(batch.mlm_labels.numel())

    def loss(self, model: nn.Module, encoded: EncoderOutput, batch,  # noqa: ANN001
             normalizer: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        hidden = encoded.last_hidden_state.flatten(0, 1).index_select(0, batch.mlm_positions)
        logits = model.cls.predictions(hidden).float()
        loss_sum = F.cross_entropy(logits, batch.mlm_labels, reduction="sum")
        correct = (logits.argmax(-1) == batch.mlm_labels).sum()
        stats = {"mlm_loss_sum": loss_sum.detach(), "mlm_correct": correct.float(),
                 "mlm_count": logits.new_tensor(float(batch.mlm_labels.numel()))}
        return loss_sum / normalizer.clamp(min=1), stats
