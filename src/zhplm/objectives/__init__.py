"""Pre-training objectives: each a loss over the encoder's output and the batch.

An objective has a `name`, `count(batch)` (what its loss is divided by, summed over the
global batch) and `loss(model, encoded, batch, normalizer) -> (loss, stats)`.
"""

from zhplm.objectives.mlm import MaskedLM
from zhplm.objectives.pretraining import OBJECTIVES, PretrainingModule, build_objectives
from zhplm.objectives.sentence import SentenceRelation

__all__ = ["OBJECTIVES", "MaskedLM", "PretrainingModule", "SentenceRelation",
           "build_objectives"]
