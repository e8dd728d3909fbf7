"""Models with Hugging Face parameter names and checkpoint layout."""

from zhplm.modeling.bert import (
    BertForMaskedLM,
    BertForPreTraining,
    BertModel,
    EncoderOutput,
    MaskedLMOutput,
    PreTrainingOutput,
)
from zhplm.modeling.pretrained import PreTrainedModel

__all__ = [
    "BertForMaskedLM",
    "BertForPreTraining",
    "BertModel",
    "EncoderOutput",
    "MaskedLMOutput",
    "PreTrainedModel",
    "PreTrainingOutput",
]
