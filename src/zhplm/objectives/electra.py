"""ELECTRA's replaced-token detection (Clark et al. 2020; google-research/electra).

One step, over an `ElectraPretrainingPair` (generator and discriminator sharing embeddings):

1. ELECTRA's masking (`ElectraSection.masking`): 15 % of the non-special tokens, at most
   `int((mask_prob + 0.005) x seq_length)`; 85 % of them become [MASK], the rest keep their
   token (no random replacement).
2. The generator reads the masked input; its MLM loss (cross-entropy at the masked
   positions) is computed together with one sample per masked position from
   softmax(logits / temperature) (`linear_cross_entropy_and_sample`; no gradient flows
   through the sample). The uniforms that drive the samples come with the batch, drawn from
   each instance's own seed, so samples do not depend on ranks or restarts.
3. The discriminator reads the input with every masked position replaced by its sample; a
   position is *replaced* when it was masked and the sample differs from the original.
   Its loss is sigmoid cross-entropy over all non-padding positions.
4. Loss = gen_weight x MLM + disc_weight x disc (1.0 and 50.0).

Statistics: `gen_*` (loss, accuracy), `disc_*` (loss, accuracy, precision and recall on
replaced tokens, replaced fraction).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zhplm.data.masking import MaskingConfig
from zhplm.errors import ConfigError
from zhplm.objectives.mlm import (
    LogitsWorkspace,
    linear_cross_entropy,
    linear_cross_entropy_and_sample,
    sample_rows,
)


@dataclass
class ElectraSection:
    """The `electra:` section of a recipe (defaults: google-research/electra)."""

    generator_hidden_fraction: float = 0.25
    gen_weight: float = 1.0
    disc_weight: float = 50.0
    temperature: float = 1.0
    mask_prob: float = 0.15

    def __post_init__(self) -> None:
        if not 0 < self.generator_hidden_fraction <= 1:
            raise ConfigError(f"electra.generator_hidden_fraction="
                              f"{self.generator_hidden_fraction} must be in (0, 1]")
        if self.temperature <= 0:
            raise ConfigError(f"electra.temperature={self.temperature} must be > 0")
        if not 0 < self.mask_prob < 1:
            raise ConfigError(f"electra.mask_prob={self.mask_prob} must be in (0, 1)")
        if self.gen_weight < 0 or self.disc_weight < 0:
            raise ConfigError("electra.gen_weight and electra.disc_weight must be >= 0")

    def max_predictions(self, seq_length: int) -> int:
        """ELECTRA's `max_predictions_per_seq`: int((mask_prob + 0.005) x seq_length)."""
        return max(1, int((self.mask_prob + 0.005) * seq_length))

    def masking(self, seq_length: int, strategy: str = "token") -> MaskingConfig:
        """ELECTRA's masking: `mask_prob` of the tokens, 85 % [MASK], 15 % kept, no random."""
        return MaskingConfig(strategy=strategy, mask_prob=self.mask_prob,
                             max_predictions=self.max_predictions(seq_length),
                             mask_replace=0.85, random_replace=0.0)


def replace_tokens(input_ids: Tensor, positions: Tensor, originals: Tensor, sampled: Tensor
                   ) -> tuple[Tensor, Tensor]:
    """The discriminator's input and labels: `input_ids` ([batch, seq], masked) with every
    masked position (flat `positions`, whose original ids are `originals`) set to its
    sample; a position is replaced (True) when it was masked and its sample differs from the
    original."""
    corrupted = input_ids.flatten().index_put((positions,), sampled).view_as(input_ids)
    replaced = torch.zeros(input_ids.numel(), dtype=torch.bool, device=input_ids.device)
    replaced[positions] = sampled != originals
    return corrupted, replaced.view_as(input_ids)


class ReplacedTokenDetection:
    """The ELECTRA objective; `model` is an `ElectraPretrainingPair`."""

    name = "electra"
    needs_encoder = False  # it runs both towers itself

    def __init__(self, section: ElectraSection | None = None) -> None:
        self.section = section or ElectraSection()
        self.workspace = LogitsWorkspace()

    def counts(self, batch) -> dict[str, float]:  # noqa: ANN001 - PretrainBatch
        return {"gen": float(batch.mlm_labels.numel()),
                "disc": float(batch.attention_mask.sum())}

    def loss(self, model: nn.Module, encoded: None, batch,  # noqa: ANN001, ARG002
             normalizers: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        generator, discriminator = model.generator, model.discriminator
        positions, originals = batch.mlm_positions, batch.mlm_labels

        hidden = generator.electra(batch.input_ids, batch.attention_mask,
                                   batch.token_type_ids).last_hidden_state
        hidden = generator.generator_predictions(
            hidden.flatten(0, 1).index_select(0, positions))
        weight, bias = generator.decoder_weight, generator.generator_lm_head.bias
        temperature = self.section.temperature
        if temperature == 1.0:  # the samples come from the loss's own softmax
            gen_sum, right, sampled = linear_cross_entropy_and_sample(
                hidden, weight, bias, originals, batch.mlm_uniforms, self.workspace)
        else:
            gen_sum, right = linear_cross_entropy(hidden, weight, bias, originals,
                                                  self.workspace)
            with torch.no_grad():
                scaled = F.linear(hidden, weight, bias).float() / temperature
                weights = (scaled - scaled.amax(dim=1, keepdim=True)).exp()
                sampled = sample_rows(weights, batch.mlm_uniforms)

        corrupted, replaced = replace_tokens(batch.input_ids, positions, originals, sampled)

        out = discriminator(corrupted, batch.attention_mask, batch.token_type_ids)
        real = batch.attention_mask.bool()
        logits = out.logits.float()[real]
        targets = replaced[real]
        disc_sum = F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="sum")

        loss = (self.section.gen_weight * gen_sum / normalizers["gen"].clamp(min=1)
                + self.section.disc_weight * disc_sum / normalizers["disc"].clamp(min=1))
        predicted = logits.detach() > 0
        stats = {
            "gen_loss_sum": gen_sum.detach(), "gen_correct": right.sum().float(),
            "gen_count": gen_sum.new_tensor(float(originals.numel())),
            "disc_loss_sum": disc_sum.detach(),
            "disc_correct": (predicted == targets).sum().float(),
            "disc_count": disc_sum.new_tensor(float(targets.numel())),
            "disc_true_pos": (predicted & targets).sum().float(),
            "disc_pred_pos": predicted.sum().float(),
            "disc_pos": targets.sum().float(),
        }
        return loss, stats

