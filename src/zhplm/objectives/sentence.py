"""Sentence-relation objectives on the pooled [CLS] vector: NSP (BERT) and SOP (ALBERT).

Both use `cls.seq_relationship` (2 classes); they differ in how instances are built
(`data.kind: nsp | sop`), not in the head.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from zhplm.modeling.bert import EncoderOutput


class SentenceRelation:
    """Cross-entropy of `cls.seq_relationship(pooler_output)` against the pair labels."""

    def __init__(self, name: str) -> None:
        self.name = name

    def counts(self, batch) -> dict[str, float]:  # noqa: ANN001 - PretrainBatch
        return {self.name: float(batch.input_ids.shape[0])}

    def loss(self, model: nn.Module, encoded: EncoderOutput, batch,  # noqa: ANN001
             normalizers: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        logits = model.cls.seq_relationship(encoded.pooler_output).float()
        loss_sum = F.cross_entropy(logits, batch.sentence_labels, reduction="sum")
        correct = (logits.argmax(-1) == batch.sentence_labels).sum()
        stats = {f"{self.name}_loss_sum": loss_sum.detach(),
                 f"{self.name}_correct": correct.float(),
                 f"{self.name}_count": logits.new_tensor(float(logits.shape[0]))}
        return loss_sum / normalizers[self.name].clamp(min=1), stats
