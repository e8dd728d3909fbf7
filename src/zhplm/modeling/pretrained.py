"""Checkpoint I/O shared by every model: HF directories in, HF directories out.

A model directory is `config.json` + `model.safetensors` (or sharded safetensors, or a legacy
`pytorch_model.bin` read with `torch.load(weights_only=True)`, never a full unpickle) + the
tokenizer files. Key variants found in the wild are remapped on load: TF-era LayerNorm
`gamma`/`beta`, a missing or extra `bert.` prefix, stored `position_ids` buffers, and the
tied MLM decoder.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from zhplm.config import ModelConfig
from zhplm.errors import CheckpointError

logger = logging.getLogger("zhplm")

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
LEGACY_WEIGHTS_NAME = "pytorch_model.bin"
TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.json")
# Keys that are tied to other parameters or are buffers: present in some files, never loaded.
IGNORED_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids",
                    "cls.predictions.decoder.weight", "generator_lm_head.weight")

M = TypeVar("M", bound="PreTrainedModel")


def load_weights_file(path: Path) -> dict[str, Tensor]:
    """Read one weights file into CPU tensors; corrupt or unsafe files raise `CheckpointError`."""
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"{path}: not a readable safetensors file ({exc}); the file is corrupt or "
                f"truncated — save the model again or restore it from a good copy"
            ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to unpickle this file: it holds more than tensors ({exc}). zhplm "
            f"loads only plain weights; convert it to safetensors with a tool you trust"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch weights file ({exc})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(state).__name__}")
    return state


def load_state_dict(model_dir: Path) -> dict[str, Tensor]:
    """All weights of a model directory (single file, sharded safetensors, or legacy .bin)."""
    single = model_dir / WEIGHTS_NAME
    if single.is_file():
        return load_weights_file(single)
    index = model_dir / WEIGHTS_INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{index}: malformed shard index ({exc})") from None
        state: dict[str, Tensor] = {}
        for shard in shards:
            state.update(load_weights_file(model_dir / shard))
        return state
    legacy = model_dir / LEGACY_WEIGHTS_NAME
    if legacy.is_file():
        return load_weights_file(legacy)
    found = ", ".join(sorted(p.name for p in model_dir.iterdir())) or "nothing"
    raise CheckpointError(
        f"{model_dir}: no weights found (looked for {WEIGHTS_NAME}, {WEIGHTS_INDEX_NAME}, "
        f"{LEGACY_WEIGHTS_NAME}; found {found}). Save the model with save_pretrained or "
        f"`zhplm init`"
    )


BACKBONE_PARTS = ("embeddings.", "embeddings_project.", "encoder.", "pooler.")


def normalize_keys(state: dict[str, Tensor], prefix: str, backbone: str = "bert"
                   ) -> dict[str, Tensor]:
    """Map checkpoint keys onto zhplm/HF names for a model whose backbone is at `prefix`
    ("" for a bare encoder); `backbone` is the family's backbone name in head models
    (`bert`, `electra`)."""
    out: dict[str, Tensor] = {}
    for key, tensor in state.items():
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight")
        key = key.replace("LayerNorm.beta", "LayerNorm.bias")
        if key.endswith(IGNORED_SUFFIXES):
            continue
        out[key] = tensor
    if "cls.predictions.decoder.bias" in out:
        bias = out.pop("cls.predictions.decoder.bias")
        out.setdefault("cls.predictions.bias", bias)
    has_prefixed = any(k.startswith(f"{backbone}.") for k in out)
    if prefix and not has_prefixed:
        # A bare encoder checkpoint (e.g. a sentence-transformers BertModel) under a head model.
        out = {f"{prefix}.{k}" if k.startswith(BACKBONE_PARTS) else k: v
               for k, v in out.items()}
    elif not prefix and has_prefixed:
        # A head checkpoint loaded as a bare encoder: keep the backbone, drop the heads.
        out = {k[len(backbone) + 1:]: v for k, v in out.items()
               if k.startswith(f"{backbone}.")}
    return out


def tokenizer_vocab_size(model_dir: Path) -> int | None:
    """Number of entries in the directory's `vocab.txt`, if there is one."""
    vocab = model_dir / "vocab.txt"
    if not vocab.is_file():
        return None
    with vocab.open("rb") as handle:
        return sum(1 for _ in handle)


class PreTrainedModel(nn.Module):
    """Base class: weight init, `from_pretrained` and `save_pretrained` in HF layout."""

    base_model_prefix = ""
    backbone_name = "bert"  # the backbone's name inside head models of this family
    config_class: type[ModelConfig] = ModelConfig

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.source_dir: Path | None = None

    # ---- initialisation -------------------------------------------------------------------
    def _init_module(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def init_weights(self) -> None:
        """N(0, initializer_range) for linear/embedding weights, zero biases, LayerNorm 1/0."""
        self.apply(self._init_module)

    @property
    def base_model(self) -> nn.Module:
        """The backbone encoder (`self.bert`, `self.electra`; the model itself when bare)."""
        return getattr(self, self.base_model_prefix) if self.base_model_prefix else self

    def num_parameters(self) -> int:
        """Number of distinct parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters())

    # ---- loading --------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls: type[M],
        model_dir: str | os.PathLike[str],
        *,
        dtype: torch.dtype | None = None,
        config: ModelConfig | None = None,
        exclude: tuple[str, ...] = (),
        **model_kwargs: Any,
    ) -> M:
        """Load a model from an HF-layout directory; the model is returned in eval mode.

        `config` replaces the directory's `config.json` (e.g. a backbone's config with the
        labels of a new task head); it must describe the same architecture. Weights whose
        names start with a prefix in `exclude` are not loaded (newly initialised)."""
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise CheckpointError(
                f"{model_dir}: not a directory; pass a model directory holding config.json "
                f"and model.safetensors (zhplm never downloads from a hub)"
            )
        config = config or ModelConfig.from_pretrained(model_dir)
        if type(config) is not cls.config_class:
            raise CheckpointError(
                f"{model_dir}: model_type={config.model_type!r} cannot be loaded as "
                f"{cls.__name__}; load it with zhplm.modeling.load_model, which picks the "
                f"class for the directory's model_type")
        n_vocab = tokenizer_vocab_size(model_dir)
        if n_vocab is not None and n_vocab > config.vocab_size:
            raise CheckpointError(
                f"{model_dir}: vocab.txt has {n_vocab} entries but config.json says "
                f"vocab_size={config.vocab_size}; token ids would fall outside the embedding "
                f"table. Use the vocab the model was trained with, or re-create the model with "
                f"vocab_size={n_vocab}"
            )
        model = cls(config, **model_kwargs)
        state = normalize_keys(load_state_dict(model_dir), cls.base_model_prefix,
                               cls.backbone_name)
        state = {k: v for k, v in state.items() if not k.startswith(exclude)} if exclude \
            else state
        model.load_checkpoint_state(state, source=str(model_dir))
        model.source_dir = model_dir
        if dtype is not None:
            model.to(dtype)
        return model.eval()

    def load_checkpoint_state(self, state: dict[str, Tensor], source: str) -> None:
        """Copy `state` into the model, checking shapes and which keys are missing."""
        expected = self.state_dict()
        for key, tensor in state.items():
            if key in expected and expected[key].shape != tensor.shape:
                raise CheckpointError(
                    f"{source}: weight {key} has shape {tuple(tensor.shape)} but the config "
                    f"builds {tuple(expected[key].shape)}; config.json does not match the "
                    f"weights (check vocab_size, hidden_size, num_labels)"
                )
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        prefix = self.base_model_prefix

        def optional(key: str) -> bool:  # heads and the pooler may be newly initialised
            if prefix and not key.startswith(f"{prefix}."):
                return True
            return key.startswith("cls.") or "pooler." in key

        broken = [k for k in missing if not optional(k)]
        if broken:
            raise CheckpointError(
                f"{source}: {len(broken)} encoder weights are missing (first: "
                f"{', '.join(broken[:5])}); the file is not a BERT checkpoint of this architecture"
            )
        if missing:
            logger.warning("%s: newly initialised (not in the checkpoint): %s", source,
                           ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
        if unexpected:
            logger.info("%s: ignored weights not used by %s: %s", source, type(self).__name__,
                        ", ".join(unexpected[:10]) + (" ..." if len(unexpected) > 10 else ""))
        self.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)

    # ---- saving ---------------------------------------------------------------------------
    def save_pretrained(self, model_dir: str | os.PathLike[str], tokenizer: Any = None) -> Path:
        """Write `config.json`, `model.safetensors` and tokenizer files, each atomically.

        `tokenizer` (a `zhplm.Tokenizer`) is saved when given; otherwise the tokenizer files
        of the directory the model was loaded from are copied along.
        """
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        config = self.config.replace(extra={**self.config.extra, "architectures": [
            type(self).__name__]})
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        fd, tmp = tempfile.mkstemp(prefix=f".{WEIGHTS_NAME}.", dir=model_dir)
        os.close(fd)
        try:
            save_file(state, tmp, metadata={"format": "pt"})
            os.replace(tmp, model_dir / WEIGHTS_NAME)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        config.save_pretrained(model_dir)
        if tokenizer is not None:
            tokenizer.save_pretrained(model_dir)
        elif self.source_dir is not None and self.source_dir.resolve() != model_dir.resolve():
            for name in TOKENIZER_FILES:
                if (self.source_dir / name).is_file():
                    shutil.copyfile(self.source_dir / name, model_dir / name)
        return model_dir
