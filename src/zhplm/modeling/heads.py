"""Task heads over the BERT encoder, with Hugging Face names and config keys.

`BertForSequenceClassification` (`bert` with pooler + `classifier`; one output = regression),
`BertForTokenClassification` (`bert` without pooler + `classifier`) and
`BertForQuestionAnswering` (`bert` without pooler + `qa_outputs`, start/end logits). The
labels live in `config.json` as HF writes them (`id2label` with string keys, `label2id`,
`problem_type`), so `transformers.AutoModelFor*` loads a zhplm directory unchanged.

The models return logits only; losses belong to the tasks (`zhplm.tasks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from zhplm.config import ModelConfig
from zhplm.errors import ConfigError
from zhplm.modeling.bert import BertModel
from zhplm.modeling.pretrained import PreTrainedModel

REGRESSION = "regression"
SINGLE_LABEL = "single_label_classification"


def labels_of(config: ModelConfig) -> list[str]:
    """The label names in id order (`id2label`), or HF's default `LABEL_0, LABEL_1`."""
    id2label = config.extra.get("id2label")
    if not id2label:
        return [f"LABEL_{i}" for i in range(int(config.extra.get("num_labels", 2)))]
    return [str(id2label[str(i)] if str(i) in id2label else id2label[i])
            for i in range(len(id2label))]


def with_labels(config: ModelConfig, labels: Sequence[str], regression: bool = False
                ) -> ModelConfig:
    """A copy of `config` carrying `labels` (or one regression output) in HF's keys."""
    if regression:
        labels = ["LABEL_0"]
    if not labels:
        raise ConfigError("a task head needs at least one label")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"duplicate labels in {list(labels)}")
    extra = {k: v for k, v in config.extra.items() if k != "num_labels"}
    extra["id2label"] = {str(i): label for i, label in enumerate(labels)}
    extra["label2id"] = {label: i for i, label in enumerate(labels)}
    extra["problem_type"] = REGRESSION if regression else SINGLE_LABEL
    return config.replace(extra=extra)


def classifier_dropout(config: ModelConfig) -> nn.Dropout:
    """HF's classifier dropout: `classifier_dropout` when set, else `hidden_dropout_prob`."""
    p = config.extra.get("classifier_dropout")
    return nn.Dropout(config.hidden_dropout_prob if p is None else float(p))


@dataclass
class SequenceClassifierOutput:
    """What `BertForSequenceClassification` and `BertForTokenClassification` return."""

    logits: Tensor


@dataclass
class QuestionAnsweringOutput:
    """Start and end logits per token ([batch, seq] each)."""

    start_logits: Tensor
    end_logits: Tensor


class BertForSequenceClassification(PreTrainedModel):
    """Pooled [CLS] -> dropout -> `classifier` (num_labels outputs; 1 for regression)."""

    base_model_prefix = "bert"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.num_labels = len(labels_of(config))
        self.bert = BertModel(config, add_pooling_layer=True)
        self.dropout = classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, self.num_labels)
        self.classifier.apply(self._init_module)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> SequenceClassifierOutput:
        """Logits per sequence ([batch, num_labels])."""
        pooled = self.bert(input_ids, attention_mask, token_type_ids).pooler_output
        return SequenceClassifierOutput(logits=self.classifier(self.dropout(pooled)))


class BertForTokenClassification(PreTrainedModel):
    """Every token's hidden state -> dropout -> `classifier`."""

    base_model_prefix = "bert"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.num_labels = len(labels_of(config))
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, self.num_labels)
        self.classifier.apply(self._init_module)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> SequenceClassifierOutput:
        """Logits per token ([batch, seq, num_labels])."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
        return SequenceClassifierOutput(logits=self.classifier(self.dropout(hidden)))


class BertForQuestionAnswering(PreTrainedModel):
    """Every token's hidden state -> `qa_outputs` (2: start, end)."""

    base_model_prefix = "bert"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.qa_outputs.apply(self._init_module)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> QuestionAnsweringOutput:
        """Start and end logits per token."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
        start, end = self.qa_outputs(hidden).float().unbind(-1)
        return QuestionAnsweringOutput(start_logits=start, end_logits=end)
