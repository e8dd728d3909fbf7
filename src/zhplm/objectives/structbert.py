"""StructBERT's word structural objective (Wang et al. 2019): restore shuffled trigrams.

The collator shuffles trigrams of unmasked tokens (`zhplm.data.word_order`, `wso_ratio` of
each sequence, 5 %); at every position of a shuffled trigram the model predicts the
original token with the *same* MLM head (`cls.predictions`, tied to the word embeddings),
beside the masked positions. Its loss and accuracy are reported apart from the MLM's, as
`word_order_loss` / `word_order_acc`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from zhplm.errors import CheckpointError, ConfigError
from zhplm.modeling.bert import EncoderOutput
from zhplm.modeling.lert_heads import atomic_save_safetensors
from zhplm.modeling.pretrained import load_weights_file
from zhplm.objectives.mlm import LogitsWorkspace, linear_cross_entropy


@dataclass
class StructBertSection:
    """The `structbert:` section of a recipe."""

    wso_ratio: float = 0.05  # share of each sequence covered by shuffled trigrams

    def __post_init__(self) -> None:
        if not 0 < self.wso_ratio < 0.5:
            raise ConfigError(f"structbert.wso_ratio={self.wso_ratio} must be in (0, 0.5) "
                              f"(StructBERT: 0.05)")


class WordOrder:
    """Cross-entropy of the MLM head at the shuffled trigram positions."""

    name = "word_order"

    def __init__(self) -> None:
        self.workspace = LogitsWorkspace()

    def counts(self, batch) -> dict[str, float]:  # noqa: ANN001 - PretrainBatch
        return {self.name: float(batch.order_labels.numel())}

    def loss(self, model: nn.Module, encoded: EncoderOutput, batch,  # noqa: ANN001
             normalizers: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        if batch.order_positions is None:
            raise ConfigError("the word_order objective needs shuffled trigrams in the batch "
                              "(PretrainCollator(word_order_ratio=...))")
        hidden = encoded.last_hidden_state.flatten(0, 1).index_select(0, batch.order_positions)
        head = model.cls.predictions
        loss_sum, right = linear_cross_entropy(head.transform(hidden), head.decoder_weight,
                                               head.bias, batch.order_labels, self.workspace)
        stats = {f"{self.name}_loss_sum": loss_sum.detach(),
                 f"{self.name}_correct": right.sum().float(),
                 f"{self.name}_count": loss_sum.new_tensor(float(batch.order_labels.numel()))}
        return loss_sum / normalizers[self.name].clamp(min=1), stats


SENTENCE_ORDER_LABELS = ("next", "previous", "random")
HEADS_FILE = "structbert_heads.safetensors"


class SentenceOrder:
    """StructBERT's sentence structural objective: a 3-way classifier (next / previous /
    random other document, `data.kind: sentence_order`) on the pooled [CLS].

    `transformers`' `BertForPreTraining` has a 2-way `cls.seq_relationship`, so the 3-way
    head is not stored in the model's weights (HF would misread it) but beside them, in
    `structbert_heads.safetensors` (`sentence_order.weight` / `.bias`)."""

    name = "sentence_order"

    def build_head(self, model: nn.Module) -> nn.Module:
        """The classifier, initialised as the model's own heads are."""
        head = nn.Linear(model.config.hidden_size, len(SENTENCE_ORDER_LABELS))
        nn.init.normal_(head.weight, std=model.config.initializer_range)
        nn.init.zeros_(head.bias)
        return head

    def save_head(self, head: nn.Module, directory: Path) -> None:
        """`structbert_heads.safetensors` (`sentence_order.weight` / `.bias`)."""
        atomic_save_safetensors({f"{self.name}.{k}": v for k, v in head.state_dict().items()},
                                directory / HEADS_FILE)

    def has_head(self, directory: Path) -> bool:
        return (directory / HEADS_FILE).is_file()

    def load_head(self, head: nn.Module, directory: Path, partial: bool = False) -> None:  # noqa: ARG002
        path = directory / HEADS_FILE
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; the sentence_order head of this run is "
                                  f"saved there")
        state = load_weights_file(path)
        prefix = f"{self.name}."
        try:
            head.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                                  if k.startswith(prefix)})
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: does not fit this run's {self.name} head "
                                  f"({exc})") from None

    def counts(self, batch) -> dict[str, float]:  # noqa: ANN001 - PretrainBatch
        return {self.name: float(batch.input_ids.shape[0])}

    def loss(self, model: nn.Module, encoded: EncoderOutput, batch,  # noqa: ANN001
             normalizers: dict[str, Tensor], head: nn.Module | None = None
             ) -> tuple[Tensor, dict[str, Tensor]]:
        if batch.sentence_labels is None or head is None:
            raise ConfigError("the sentence_order objective needs data.kind: sentence_order")
        logits = head(encoded.pooler_output).float()
        loss_sum = F.cross_entropy(logits, batch.sentence_labels, reduction="sum")
        stats = {f"{self.name}_loss_sum": loss_sum.detach(),
                 f"{self.name}_correct": (logits.argmax(-1) == batch.sentence_labels)
                 .sum().float(),
                 f"{self.name}_count": logits.new_tensor(float(logits.shape[0]))}
        return loss_sum / normalizers[self.name].clamp(min=1), stats
