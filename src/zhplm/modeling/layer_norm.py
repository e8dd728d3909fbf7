"""The LayerNorm a model's config asks for: torch's (HF's, the default) or UER-py's.

UER-py normalises with the unbiased standard deviation and adds eps outside the root::

    gamma * (x - mean) / (x.std(-1, unbiased=True) + eps) + beta      (eps 1e-6)

where BERT, torch and transformers use ``(x - mean) / sqrt(var_biased + eps) * gamma + beta``.
A model converted from UER-py (`zhplm convert uer2hf`) therefore drifts slightly under HF's
LayerNorm; `layer_norm_type: "uer"` in its config.json makes zhplm compute UER's formula, op
for op, so it reproduces UER-py's outputs. The parameters keep torch's names (`weight`,
`bias`), so state dicts and transformers loading are unchanged.
"""

from __future__ import annotations

from torch import Tensor, nn

from zhplm.config import ModelConfig


class UerLayerNorm(nn.LayerNorm):
    """UER-py's LayerNorm (`uer/layers/layer_norm.py`) with torch's parameter names."""

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.weight * (x - mean) / (std + self.eps) + self.bias


def make_layer_norm(width: int, config: ModelConfig) -> nn.LayerNorm:
    """A LayerNorm over `width` features of the type and eps `config` names."""
    if config.layer_norm_type == "uer":
        return UerLayerNorm(width, eps=config.layer_norm_eps)
    return nn.LayerNorm(width, eps=config.layer_norm_eps)
