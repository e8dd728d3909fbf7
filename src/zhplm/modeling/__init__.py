"""Models with Hugging Face parameter names and checkpoint layout."""

from zhplm.modeling.bert import (
    BertForMaskedLM,
    BertForPreTraining,
    BertModel,
    EncoderOutput,
    MaskedLMOutput,
    PreTrainingOutput,
)
from zhplm.modeling.electra import (
    ElectraForMaskedLM,
    ElectraForPreTraining,
    ElectraForQuestionAnswering,
    ElectraForSequenceClassification,
    ElectraForTokenClassification,
    ElectraModel,
    ElectraPretrainingPair,
)
from zhplm.modeling.pretrained import PreTrainedModel

__all__ = [
    "BertForMaskedLM",
    "BertForPreTraining",
    "BertModel",
    "ElectraForMaskedLM",
    "ElectraForPreTraining",
    "ElectraForQuestionAnswering",
    "ElectraForSequenceClassification",
    "ElectraForTokenClassification",
    "ElectraModel",
    "ElectraPretrainingPair",
    "EncoderOutput",
    "MaskedLMOutput",
    "PreTrainedModel",
    "PreTrainingOutput",
]
