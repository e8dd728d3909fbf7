"""zhplm: BERT-family language models, Chinese first.

Public names mirror `transformers` on purpose: `Tokenizer`, `ModelConfig`, `BertModel`,
`BertForMaskedLM`, `BertForPreTraining`, `ElectraForPreTraining`, `load_model`, `pipeline`.
Heavy modules load on first use, so `import zhplm` (and `zhplm --help`) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ModelConfig": "zhplm.config",
    "preset": "zhplm.config",
    "BertModel": "zhplm.modeling.bert",
    "BertForMaskedLM": "zhplm.modeling.bert",
    "BertForPreTraining": "zhplm.modeling.bert",
    "ElectraConfig": "zhplm.config",
    "electra_preset": "zhplm.config",
    "ElectraModel": "zhplm.modeling.electra",
    "ElectraForPreTraining": "zhplm.modeling.electra",
    "ElectraForMaskedLM": "zhplm.modeling.electra",
    "load_model": "zhplm.modeling.auto",
    "Tokenizer": "zhplm.tokenization",
    "build_vocab": "zhplm.tokenization",
    "pipeline": "zhplm.pipelines",
    "ZhplmError": "zhplm.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'zhplm' has no attribute {name!r}")
