"""One loader for every model family: a directory is read by its `model_type`.

Tasks and pipelines ask for a *head* (`"sequence-classification"`, `"masked-lm"`, ...), never
for a class: `load_model(DIR, head)` reads `config.json`, picks the family (`bert`,
`electra`) and that family's class for the head. Adding a family is one file in `modeling/`
plus one entry in `FAMILIES`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zhplm.config import ModelConfig
from zhplm.errors import ConfigError
from zhplm.modeling.bert import BertForMaskedLM, BertForPreTraining, BertModel
from zhplm.modeling.electra import (
    ElectraForMaskedLM,
    ElectraForPreTraining,
    ElectraForQuestionAnswering,
    ElectraForSequenceClassification,
    ElectraForTokenClassification,
    ElectraModel,
)
from zhplm.modeling.heads import (
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from zhplm.modeling.pretrained import PreTrainedModel

ENCODER = "encoder"
MASKED_LM = "masked-lm"
PRETRAINING = "pretraining"  # BERT: MLM + NSP heads; ELECTRA: the discriminator
REPLACED_TOKEN_DETECTION = "replaced-token-detection"
SEQUENCE_CLASSIFICATION = "sequence-classification"
TOKEN_CLASSIFICATION = "token-classification"
QUESTION_ANSWERING = "question-answering"
TASK_HEADS = (SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, QUESTION_ANSWERING)

FAMILIES: dict[str, dict[str, type[PreTrainedModel]]] = {
    "bert": {
        ENCODER: BertModel,
        MASKED_LM: BertForMaskedLM,
        PRETRAINING: BertForPreTraining,
        SEQUENCE_CLASSIFICATION: BertForSequenceClassification,
        TOKEN_CLASSIFICATION: BertForTokenClassification,
        QUESTION_ANSWERING: BertForQuestionAnswering,
    },
    "electra": {
        ENCODER: ElectraModel,
        MASKED_LM: ElectraForMaskedLM,
        PRETRAINING: ElectraForPreTraining,
        REPLACED_TOKEN_DETECTION: ElectraForPreTraining,
        SEQUENCE_CLASSIFICATION: ElectraForSequenceClassification,
        TOKEN_CLASSIFICATION: ElectraForTokenClassification,
        QUESTION_ANSWERING: ElectraForQuestionAnswering,
    },
}
FAMILY_OF_MODEL_TYPE = {"bert": "bert", "roberta": "bert", "structbert": "bert",
                        "electra": "electra"}


def family(config: ModelConfig) -> str:
    """`bert` or `electra` for a config."""
    try:
        return FAMILY_OF_MODEL_TYPE[config.model_type]
    except KeyError:
        raise ConfigError(f"model_type={config.model_type!r} has no model family in zhplm "
                          f"(known: {', '.join(FAMILY_OF_MODEL_TYPE)})") from None


def model_class(config: ModelConfig, head: str) -> type[PreTrainedModel]:
    """The class of `config`'s family for `head`."""
    classes = FAMILIES[family(config)]
    if head not in classes:
        raise ConfigError(
            f"a {config.model_type} model has no {head!r} head (it has: "
            f"{', '.join(classes)}); replaced-token detection needs an ELECTRA discriminator")
    return classes[head]


def head_of_architecture(name: str) -> str | None:
    """The head a saved architecture name stands for (`ElectraForTokenClassification` ->
    `token-classification`), or None when unknown."""
    for classes in FAMILIES.values():
        for head, cls in classes.items():
            if cls.__name__ == name and head != REPLACED_TOKEN_DETECTION:
                return head
    return None


def check_role(model_dir: Path, config: ModelConfig, head: str) -> None:
    """Refuse an ELECTRA tower used for the other tower's job, with what to pass instead."""
    architectures = config.extra.get("architectures") or []
    if "ElectraForMaskedLM" in architectures and head != MASKED_LM:
        raise ConfigError(
            f"{model_dir} is an ELECTRA generator (ElectraForMaskedLM); "
            f"{head.replace('-', ' ')} uses the discriminator: pass the discriminator "
            f"directory (e.g. {model_dir.parent / 'discriminator'}). The generator is for "
            f"fill-mask only")
    if "ElectraForPreTraining" in architectures and head == MASKED_LM:
        raise ConfigError(
            f"{model_dir} is an ELECTRA discriminator, which has no masked-LM head; use the "
            f"generator directory for fill-mask (e.g. {model_dir.parent / 'generator'})")


def load_model(model_dir: str | os.PathLike[str], head: str, *,
               config: ModelConfig | None = None, **kwargs: Any) -> PreTrainedModel:
    """Load `model_dir` with its family's class for `head` (eval mode). `config` and the
    other keyword arguments go to `from_pretrained` (`dtype`, `exclude`)."""
    model_dir = Path(model_dir)
    saved = ModelConfig.from_pretrained(model_dir)
    check_role(model_dir, saved, head)
    config = config or saved
    return model_class(config, head).from_pretrained(model_dir, config=config, **kwargs)
