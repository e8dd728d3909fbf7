"""PyTorch backend: a zhplm model (any family) under inference mode, bf16 where native."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zhplm.backends.base import OUTPUT_NAMES
from zhplm.env import TORCH_DTYPES, resolve_dtype
from zhplm.errors import ConfigError, InputError
from zhplm.modeling.auto import MASKED_LM, REPLACED_TOKEN_DETECTION, load_model
from zhplm.modeling.pretrained import PreTrainedModel

logger = logging.getLogger("zhplm")


class TorchBackend:
    """Runs `model` (a head of `zhplm.modeling.auto`) on numpy inputs."""

    name = "torch"

    def __init__(self, model: PreTrainedModel, head: str, dtype: str = "fp32") -> None:
        self.model = model.eval()
        self.head = head
        self.dtype = dtype
        self.config = model.config

    @classmethod
    def from_dir(cls, model_dir: str | os.PathLike[str], head: str, dtype: str = "auto",
                 **model_kwargs: Any) -> TorchBackend:
        """Load `head` of a model directory; bf16 weights when `dtype` resolves to bf16 (faster
        than autocast, which keeps LayerNorm in fp32)."""
        resolved = resolve_dtype(dtype)
        model_dir = Path(model_dir)
        try:
            model = load_model(model_dir, head, dtype=TORCH_DTYPES[resolved], **model_kwargs)
        except ConfigError as exc:  # e.g. no such head in this family: name the directory
            if str(model_dir) in str(exc):
                raise
            raise ConfigError(f"{model_dir}: {exc}") from None
        return cls(model, head, resolved)

    @classmethod
    def from_model(cls, model: PreTrainedModel, head: str, dtype: str = "auto") -> TorchBackend:
        """An in-memory model, run as given (bf16 weights stay bf16)."""
        resolved = resolve_dtype(dtype)
        if next(model.parameters()).dtype == torch.bfloat16 and resolved != "bf16":
            logger.warning("dtype=%s resolved to %s, but the model's weights are bf16, so it "
                           "runs in bf16; pass model.float() for fp32", dtype, resolved)
            resolved = "bf16"
        return cls(model, head, resolved)

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray,
            token_type_ids: np.ndarray, positions: np.ndarray | None = None
            ) -> dict[str, np.ndarray]:
        ids, mask, types = (torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
                            for a in (input_ids, attention_mask, token_type_ids))
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                    enabled=self.dtype == "bf16"):
            if self.head == MASKED_LM and positions is not None:
                hidden = self.model.base_model(ids, mask, types).last_hidden_state
                rows = hidden.flatten(0, 1)[torch.from_numpy(positions)]
                return {"logits": self.model.masked_lm_logits(rows).float().numpy()}
            out = self.model(ids, mask, types)
            if self.head == REPLACED_TOKEN_DETECTION:
                logits = getattr(out, "logits", None)
                if logits is None or logits.shape != ids.shape:
                    raise InputError(
                        f"{type(self.model).__name__} gives no replaced-token logit per "
                        f"token; replaced-token detection needs an ELECTRA discriminator "
                        f"(ElectraForPreTraining, saved in DIR/discriminator)")
            arrays = {name: getattr(out, name).float().numpy()
                      for name in OUTPUT_NAMES[self.head]}
        if positions is not None:
            arrays = {k: v.reshape(-1, *v.shape[2:])[positions] for k, v in arrays.items()}
        return arrays
