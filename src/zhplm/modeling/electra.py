"""ELECTRA in one file: the model family of HFL's Chinese ELECTRA, with Hugging Face names.

ELECTRA is BERT's encoder (the same `BertLayer`s, reused from `bert.py`) under embeddings
that are `embedding_size` wide, projected to `hidden_size` by `embeddings_project` when the
two differ, and without a pooler. A pre-trained ELECTRA is two models that share those
embeddings:

* the **discriminator**, `ElectraForPreTraining`: `electra.*` + `discriminator_predictions.
  {dense, dense_prediction}` (one logit per token: was it replaced?). This is the model
  users fine-tune.
* the **generator**, `ElectraForMaskedLM`: a narrower encoder (`electra.*`) +
  `generator_predictions.{dense, LayerNorm}` + `generator_lm_head` (tied to the word
  embeddings; only its bias is stored).

`ElectraPretrainingPair` holds both for replaced-token-detection pre-training: the
generator's `electra.embeddings` *is* the discriminator's module (one set of tensors), and it
saves as `DIR/discriminator/` + `DIR/generator/`, two HF directories with identical
embedding weights. The fine-tuning heads (`ElectraForSequenceClassification`,
`ElectraForTokenClassification`, `ElectraForQuestionAnswering`) are HF's, name for name, so
`transformers` loads every directory unchanged (tests prove it both ways).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zhplm.config import ElectraConfig, ModelConfig, generator_config
from zhplm.errors import CheckpointError, ConfigError
from zhplm.modeling.bert import (
    ACTIVATIONS,
    BertEmbeddings,
    BertEncoder,
    EncoderOutput,
    MaskedLMOutput,
    attention_bias,
)
from zhplm.modeling.heads import (
    QuestionAnsweringOutput,
    SequenceClassifierOutput,
    classifier_dropout,
    labels_of,
)
from zhplm.modeling.layer_norm import make_layer_norm
from zhplm.modeling.pretrained import PreTrainedModel

DISCRIMINATOR_DIR = "discriminator"
GENERATOR_DIR = "generator"


class ElectraPreTrainedModel(PreTrainedModel):
    """Base of the ELECTRA classes: the backbone is called `electra` in head models."""

    backbone_name = "electra"
    base_model_prefix = "electra"
    config_class = ElectraConfig


class ElectraModel(ElectraPreTrainedModel):
    """`embeddings` (embedding_size wide), `embeddings_project` (E -> H, only when E != H),
    `encoder`; no pooler. Returns the last hidden states."""

    base_model_prefix = ""

    def __init__(self, config: ElectraConfig, embeddings: BertEmbeddings | None = None,
                 add_pooling_layer: bool = False) -> None:
        """`embeddings`: a module to share (the generator gets the discriminator's).
        ELECTRA has no pooler; `add_pooling_layer` is accepted, and ignored, so one loader
        call builds a BERT or an ELECTRA encoder."""
        super().__init__(config)
        self.embeddings = embeddings if embeddings is not None else \
            BertEmbeddings(config, width=config.embedding_size)
        if config.embedding_size != config.hidden_size:
            self.embeddings_project = nn.Linear(config.embedding_size, config.hidden_size)
        self.encoder = BertEncoder(config)
        if embeddings is None:
            self.init_weights()
        else:  # shared embeddings are initialised (or loaded) by their owner
            for name, module in self.named_children():
                if name != "embeddings":
                    module.apply(self._init_module)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> EncoderOutput:
        """Encode a batch of token ids ([batch, seq]) into hidden states."""
        x = self.embeddings(input_ids, token_type_ids)
        if hasattr(self, "embeddings_project"):
            x = self.embeddings_project(x)
        x = self.encoder(x, attention_bias(attention_mask, x.dtype))
        return EncoderOutput(last_hidden_state=x)


class ElectraDiscriminatorPredictions(nn.Module):
    """dense(H -> H) + activation + dense_prediction(H -> 1): a logit per token."""

    def __init__(self, config: ElectraConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.dense_prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.dense_prediction(self.act(self.dense(hidden))).squeeze(-1)


class ElectraGeneratorPredictions(nn.Module):
    """dense(H -> E) + gelu + LayerNorm(E), before the tied vocabulary projection."""

    def __init__(self, config: ElectraConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.LayerNorm = make_layer_norm(config.embedding_size, config)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.LayerNorm(F.gelu(self.dense(hidden)))


@dataclass
class ReplacedTokenOutput:
    """What `ElectraForPreTraining` returns: `logits` [batch, seq] (> 0 = replaced)."""

    logits: Tensor
    last_hidden_state: Tensor | None = None


class ElectraForPreTraining(ElectraPreTrainedModel):
    """The discriminator: `electra` + `discriminator_predictions`."""

    def __init__(self, config: ElectraConfig,
                 embeddings: BertEmbeddings | None = None) -> None:
        super().__init__(config)
        self.electra = ElectraModel(config, embeddings)
        self.discriminator_predictions = ElectraDiscriminatorPredictions(config)
        self.discriminator_predictions.apply(self._init_module)

    def init_replaced_prior(self, fraction: float) -> None:
        """Start the output bias at the log-odds of `fraction` (the share of tokens that
        will be replaced, ~mask_prob), so that an untrained discriminator already predicts
        the base rate. From a zero bias, Adam reaches that rate faster by scaling up a
        direction every position shares than through one bias, and the encoder's outputs
        collapse to one vector for all positions (seen within 25 steps on electra-tiny;
        the discriminator then never learns). Used for new models only."""
        if not 0 < fraction < 1:
            raise ConfigError(f"replaced fraction {fraction} must be in (0, 1)")
        with torch.no_grad():
            self.discriminator_predictions.dense_prediction.bias.fill_(
                math.log(fraction / (1 - fraction)))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> ReplacedTokenOutput:
        """One replaced-token logit per position ([batch, seq])."""
        hidden = self.electra(input_ids, attention_mask, token_type_ids).last_hidden_state
        return ReplacedTokenOutput(self.discriminator_predictions(hidden), hidden)


class ElectraForMaskedLM(ElectraPreTrainedModel):
    """The generator: `electra` + `generator_predictions` + `generator_lm_head` (weight tied
    to the word embeddings; `generator_lm_head.bias` stored)."""

    def __init__(self, config: ElectraConfig,
                 embeddings: BertEmbeddings | None = None) -> None:
        super().__init__(config)
        self.electra = ElectraModel(config, embeddings)
        self.generator_predictions = ElectraGeneratorPredictions(config)
        self.generator_predictions.apply(self._init_module)
        self.generator_lm_head = TiedLMHead(self.electra.embeddings.word_embeddings)

    @property
    def decoder_weight(self) -> Tensor:
        """The vocabulary projection (the word embeddings)."""
        return self.generator_lm_head.weight

    def masked_lm_logits(self, hidden: Tensor) -> Tensor:
        """Vocabulary logits of some positions' hidden states ([n, hidden] -> [n, vocab])."""
        return self.generator_lm_head(self.generator_predictions(hidden))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> MaskedLMOutput:
        """Vocabulary logits at every position ([batch, seq, vocab])."""
        hidden = self.electra(input_ids, attention_mask, token_type_ids).last_hidden_state
        return MaskedLMOutput(logits=self.generator_lm_head(self.generator_predictions(hidden)),
                              last_hidden_state=hidden)


class TiedLMHead(nn.Module):
    """A vocabulary projection whose weight is the word embedding table; own bias."""

    def __init__(self, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(word_embeddings.num_embeddings))
        self.word_embeddings = [word_embeddings]  # a list: not registered twice as a module

    @property
    def weight(self) -> Tensor:
        return self.word_embeddings[0].weight

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class ElectraClassificationHead(nn.Module):
    """HF's `ElectraClassificationHead`: first token -> dropout -> dense -> gelu -> dropout
    -> out_proj."""

    def __init__(self, config: ElectraConfig, num_labels: int) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = classifier_dropout(config)
        self.out_proj = nn.Linear(config.hidden_size, num_labels)

    def forward(self, hidden: Tensor) -> Tensor:
        x = self.dropout(hidden[:, 0])
        x = self.dropout(F.gelu(self.dense(x)))
        return self.out_proj(x)


class ElectraForSequenceClassification(ElectraPreTrainedModel):
    """`electra` + `classifier` (`dense`, `out_proj`) on the first token; one output =
    regression."""

    def __init__(self, config: ElectraConfig) -> None:
        super().__init__(config)
        self.num_labels = len(labels_of(config))
        self.electra = ElectraModel(config)
        self.classifier = ElectraClassificationHead(config, self.num_labels)
        self.classifier.apply(self._init_module)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> SequenceClassifierOutput:
        """Logits per sequence ([batch, num_labels])."""
        hidden = self.electra(input_ids, attention_mask, token_type_ids).last_hidden_state
        return SequenceClassifierOutput(logits=self.classifier(hidden))


class ElectraForTokenClassification(ElectraPreTrainedModel):
    """`electra` + dropout + `classifier` on every token."""

    def __init__(self, config: ElectraConfig) -> None:
        super().__init__(config)
        self.num_labels = len(labels_of(config))
        self.electra = ElectraModel(config)
        self.dropout = classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, self.num_labels)
        self.classifier.apply(self._init_module)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> SequenceClassifierOutput:
        """Logits per token ([batch, seq, num_labels])."""
        hidden = self.electra(input_ids, attention_mask, token_type_ids).last_hidden_state
        return SequenceClassifierOutput(logits=self.classifier(self.dropout(hidden)))


class ElectraForQuestionAnswering(ElectraPreTrainedModel):
    """`electra` + `qa_outputs` (start, end) on every token."""

    def __init__(self, config: ElectraConfig) -> None:
        super().__init__(config)
        self.electra = ElectraModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.qa_outputs.apply(self._init_module)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> QuestionAnsweringOutput:
        """Start and end logits per token."""
        hidden = self.electra(input_ids, attention_mask, token_type_ids).last_hidden_state
        start, end = self.qa_outputs(hidden).float().unbind(-1)
        return QuestionAnsweringOutput(start_logits=start, end_logits=end)


class ElectraPretrainingPair(nn.Module):
    """Discriminator + generator sharing one embeddings module, trained together.

    `save_pretrained(DIR)` writes `DIR/discriminator/` and `DIR/generator/` (HF directories,
    the shared embedding weights in both); `from_pretrained(DIR)` reads them back and ties
    the embeddings again, refusing a pair whose embeddings differ in shape.
    """

    def __init__(self, discriminator_config: ElectraConfig,
                 generator_config_: ElectraConfig) -> None:
        super().__init__()
        check_pair(discriminator_config, generator_config_)
        self.discriminator = ElectraForPreTraining(discriminator_config)
        self.generator = ElectraForMaskedLM(generator_config_,
                                            embeddings=self.discriminator.electra.embeddings)
        self.config = discriminator_config

    @classmethod
    def from_preset_configs(cls, discriminator: ElectraConfig,
                            generator_hidden_fraction: float) -> ElectraPretrainingPair:
        """A new pair: the generator sized from the discriminator (ELECTRA's rule)."""
        return cls(discriminator, generator_config(discriminator, generator_hidden_fraction))

    @property
    def embeddings(self) -> BertEmbeddings:
        """The shared embeddings module."""
        return self.discriminator.electra.embeddings

    def num_parameters(self) -> int:
        """Distinct parameters of both towers (shared embeddings counted once)."""
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, directory: str | os.PathLike[str], tokenizer: Any = None) -> Path:
        """Write `discriminator/` and `generator/` under `directory`."""
        directory = Path(directory)
        self.discriminator.save_pretrained(directory / DISCRIMINATOR_DIR, tokenizer=tokenizer)
        self.generator.save_pretrained(directory / GENERATOR_DIR, tokenizer=tokenizer)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> ElectraPretrainingPair:
        """Read a pair saved by `save_pretrained` (or two HF directories laid out so)."""
        directory = Path(directory)
        disc_dir, gen_dir = directory / DISCRIMINATOR_DIR, directory / GENERATOR_DIR
        for path in (disc_dir, gen_dir):
            if not path.is_dir():
                raise CheckpointError(
                    f"{directory}: no {path.name}/ here; an ELECTRA pair directory holds "
                    f"discriminator/ and generator/ (as `zhplm init --preset electra-*` and "
                    f"ELECTRA pre-training write them)")
        disc_config = ElectraConfig.from_pretrained(disc_dir)
        gen_config = ElectraConfig.from_pretrained(gen_dir)
        for path, config in ((disc_dir, disc_config), (gen_dir, gen_config)):
            if not isinstance(config, ElectraConfig):
                raise CheckpointError(f"{path}: model_type={config.model_type!r}, expected "
                                      f"'electra'")
        try:
            check_pair(disc_config, gen_config)
        except ConfigError as exc:
            raise CheckpointError(f"{directory}: {exc}") from None
        pair = cls(disc_config, gen_config)
        discriminator = ElectraForPreTraining.from_pretrained(disc_dir)
        generator = ElectraForMaskedLM.from_pretrained(gen_dir)
        pair.discriminator.load_state_dict(discriminator.state_dict())
        gen_state = {k: v for k, v in generator.state_dict().items()
                     if not k.startswith("electra.embeddings.")}
        pair.generator.load_state_dict(gen_state, strict=False)
        shared = discriminator.electra.embeddings.state_dict()
        for key, value in generator.electra.embeddings.state_dict().items():
            if not torch.equal(value, shared[key]):
                raise CheckpointError(
                    f"{directory}: the generator's embeddings.{key} differs from the "
                    f"discriminator's; ELECTRA's towers share their embeddings, so this is "
                    f"not a pair saved together (zhplm keeps the discriminator's)")
        pair.discriminator.source_dir = disc_dir
        pair.generator.source_dir = gen_dir
        return pair


def check_pair(discriminator: ModelConfig, generator: ModelConfig) -> None:
    """The generator must be able to share the discriminator's embeddings."""
    for key in ("embedding_size", "vocab_size", "max_position_embeddings", "type_vocab_size",
                "pad_token_id"):
        d = getattr(discriminator, key, None)
        g = getattr(generator, key, None)
        if d != g:
            raise ConfigError(
                f"generator {key}={g} but discriminator {key}={d}: ELECTRA's generator "
                f"and discriminator share one embedding table, so these must be equal "
                f"(set the generator's {key} to {d})")
