"""Model configuration: `ModelConfig` <-> Hugging Face `config.json`, and named size presets.

The presets cover the UER-py RoBERTa miniature grid (L in {2,4,6,8,10,12} x H in
{128,256,512,768}, heads = H/64, FFN = 4H) with the aliases tiny/mini/small/medium/base,
BERT-large and LERT-small; and HFL's Chinese ELECTRA sizes (`electra_preset`), each a
discriminator config plus its generator config.

A `config.json` is read by its `model_type`: `bert` (and `roberta`) give a `ModelConfig`,
`electra` an `ElectraConfig` (the same fields plus `embedding_size` and HF's `summary_*`).
ModelScope's StructBERT (`structbert`, BERT's keys and weights) is read as `bert`, with
`original_model_type: structbert` kept in `extra`: transformers' AutoConfig refuses the name,
so a saved copy must say `bert` to load there.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zhplm.errors import CheckpointError, ConfigError

CONFIG_NAME = "config.json"
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "tanh")
# `hf`: torch's LayerNorm, (x - mean) / sqrt(var + eps), as BERT and transformers;
# `uer`: UER-py's, gamma * (x - mean) / (std_unbiased + eps) + beta (zhplm only).
LAYER_NORM_TYPES = ("hf", "uer")


@dataclass
class ModelConfig:
    """Architecture of a BERT-family encoder, field for field as HF's `BertConfig`.

    Keys of a loaded `config.json` that zhplm does not use (`architectures`, `id2label`,
    `transformers_version`, ...) are kept in `extra` and written back unchanged.
    """

    vocab_size: int = 21128
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02
    model_type: str = "bert"
    # zhplm-only: "uer" reproduces UER-py's LayerNorm exactly (models converted with
    # `zhplm convert uer2hf`); written to config.json only when not "hf", and transformers
    # ignores it (it always runs "hf").
    layer_norm_type: str = "hf"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def head_dim(self) -> int:
        """Size of one attention head."""
        return self.hidden_size // self.num_attention_heads

    def validate(self) -> None:
        """Raise `ConfigError` naming the first inconsistent field and how to fix it."""
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(
                    f"config field {name!r} must be a positive integer, got {value!r}"
                )
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}; choose heads so that "
                f"hidden_size/heads is a whole number (the UER grid uses heads = hidden_size/64)"
            )
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(
                f"hidden_act={self.hidden_act!r} is not supported; use one of "
                f"{', '.join(SUPPORTED_ACTIVATIONS)}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not 0.0 <= float(value) < 1.0:
                raise ConfigError(f"config field {name!r} must be in [0, 1), got {value!r}")
        if self.layer_norm_type not in LAYER_NORM_TYPES:
            raise ConfigError(
                f"config field 'layer_norm_type' must be one of {', '.join(LAYER_NORM_TYPES)}, "
                f"got {self.layer_norm_type!r} (\"hf\" is the default; \"uer\" reproduces "
                f"UER-py's LayerNorm)"
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(
                f"pad_token_id={self.pad_token_id} is outside the vocabulary "
                f"(vocab_size={self.vocab_size})"
            )

    # ---- dict / JSON ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The HF `config.json` content (known fields plus the preserved extras)."""
        out = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name != "extra":
                out[f.name] = getattr(self, f.name)
        if out.get("layer_norm_type") == "hf":  # the default: plain configs stay HF's
            del out["layer_norm_type"]
        return dict(sorted(out.items()))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> ModelConfig:
        """Build from an HF config dict (the class its `model_type` names); unknown keys go
        to `extra`."""
        model_type = data.get("model_type", "bert")
        if model_type in READ_AS_BERT:
            data = {**data, "model_type": "bert", "original_model_type": model_type}
            model_type = "bert"
        if model_type not in CONFIG_CLASSES:
            raise ConfigError(
                f"{source}: model_type={model_type!r} is not a BERT-family encoder zhplm loads "
                f"(expected one of {', '.join(sorted(CONFIG_CLASSES))})"
            )
        target = CONFIG_CLASSES[model_type]
        if target is not cls and issubclass(target, cls):
            return target.from_dict(data, source)
        if target is not cls:
            raise ConfigError(f"{source}: model_type={model_type!r} is not a {cls.__name__}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        try:
            return cls(**kwargs, extra=extra)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def to_json_file(self, path: str | os.PathLike[str]) -> Path:
        """Write `config.json` atomically."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def from_json_file(cls, path: str | os.PathLike[str]) -> ModelConfig:
        """Read an HF `config.json`; errors name the file."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(
                f"{path}: no config.json here; a model directory needs config.json next to "
                f"its weights (create one with `zhplm init` or save_pretrained)"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: not valid UTF-8 JSON ({exc})") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike[str]) -> ModelConfig:
        """Read `config.json` from a model directory."""
        model_dir = Path(model_dir)
        if not (model_dir / CONFIG_NAME).is_file() and \
                (model_dir / "discriminator" / CONFIG_NAME).is_file():
            raise CheckpointError(
                f"{model_dir}: holds an ELECTRA pair, not one model; pass "
                f"{model_dir / 'discriminator'} (fine-tuning, embeddings, replaced-token "
                f"detection) or {model_dir / 'generator'} (fill-mask)"
            )
        return cls.from_json_file(model_dir / CONFIG_NAME)

    def save_pretrained(self, model_dir: str | os.PathLike[str]) -> Path:
        """Write `config.json` into `model_dir` (created if needed)."""
        Path(model_dir).mkdir(parents=True, exist_ok=True)
        return self.to_json_file(Path(model_dir) / CONFIG_NAME)

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


@dataclass
class ElectraConfig(ModelConfig):
    """HF's `ElectraConfig`: a BERT encoder whose embeddings are `embedding_size` wide
    (projected to `hidden_size` by `embeddings_project` when the two differ), plus the
    `summary_*` keys HF writes. A discriminator and its generator each have one."""

    embedding_size: int | None = None  # None: hidden_size
    summary_type: str = "first"
    summary_use_proj: bool = True
    summary_activation: str = "gelu"
    summary_last_dropout: float = 0.1
    position_embedding_type: str = "absolute"
    model_type: str = "electra"

    def validate(self) -> None:
        if self.embedding_size is None:
            self.embedding_size = self.hidden_size
        super().validate()
        value = self.embedding_size
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"config field 'embedding_size' must be a positive integer, "
                              f"got {value!r}")
        if self.position_embedding_type != "absolute":
            raise ConfigError(f"position_embedding_type={self.position_embedding_type!r}: "
                              f"zhplm's ELECTRA has absolute positions only")


CONFIG_CLASSES: dict[str, type[ModelConfig]] = {"bert": ModelConfig, "roberta": ModelConfig,
                                                "structbert": ModelConfig,
                                                "electra": ElectraConfig}
# model_types that are BERT under another name and that transformers does not know (its
# AutoConfig raises; BertConfig loads them with a warning): read and saved as "bert".
READ_AS_BERT = ("structbert",)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file in the same directory and `os.replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_dir_atomically(save: Callable[[Path], Any], final: Path) -> None:
    """Write a model directory into a temp dir beside `final`, then swap it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        save(tmp)
        if final.exists():
            old = final.with_name(f".old-{final.name}")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---- presets ------------------------------------------------------------------------------
UER_LAYERS = (2, 4, 6, 8, 10, 12)
UER_HIDDEN = (128, 256, 512, 768)
UER_ALIASES = {"tiny": "L2-H128", "mini": "L4-H256", "small": "L4-H512", "medium": "L8-H512",
               "base": "L12-H768"}


def _shape(layers: int, hidden: int, heads: int | None = None) -> dict[str, int]:
    heads = heads if heads is not None else max(1, hidden // 64)
    return {"num_hidden_layers": layers, "hidden_size": hidden, "num_attention_heads": heads,
            "intermediate_size": 4 * hidden}


PRESETS: dict[str, dict[str, int]] = {
    f"L{layers}-H{hidden}": _shape(layers, hidden) for layers in UER_LAYERS for hidden in UER_HIDDEN
}
PRESETS.update({alias: PRESETS[name] for alias, name in UER_ALIASES.items()})
PRESETS["bert-base"] = _shape(12, 768)
PRESETS["bert-large"] = _shape(24, 1024, 16)
PRESETS["lert-small"] = _shape(12, 256, 4)


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A `ModelConfig` for a named size (`tiny`, `L4-H256`, `bert-large`, `lert-small`, ...)."""
    if name in ELECTRA_PRESETS:
        raise ConfigError(f"preset {name!r} is an ELECTRA pair: use electra_preset({name!r}), "
                          f"which gives the discriminator and the generator config")
    if name not in PRESETS:
        raise ConfigError(
            f"unknown preset {name!r}; choose one of: "
            f"{', '.join(sorted(PRESETS) + sorted(ELECTRA_PRESETS))}"
        )
    return ModelConfig(**{**PRESETS[name], **overrides})


# HFL's Chinese ELECTRA (ymcui/Chinese-ELECTRA): discriminator sizes, with embedding_size.
# The generator has the same layers and embeddings, hidden = generator_hidden_fraction x H.
ELECTRA_PRESETS: dict[str, dict[str, int]] = {
    "electra-tiny": {**_shape(2, 128, 2), "embedding_size": 128},
    "electra-small": {**_shape(12, 256, 4), "embedding_size": 128},
    "electra-small-ex": {**_shape(24, 256, 4), "embedding_size": 256},
    "electra-base": {**_shape(12, 768, 12), "embedding_size": 768},
    "electra-large": {**_shape(24, 1024, 16), "embedding_size": 1024},
}
GENERATOR_HIDDEN_FRACTION = 0.25


def generator_config(discriminator: ElectraConfig,
                     fraction: float = GENERATOR_HIDDEN_FRACTION) -> ElectraConfig:
    """ELECTRA's generator for a discriminator (google-research/electra
    `get_generator_config`): same layers and embeddings, hidden = round(fraction x H),
    heads = max(1, hidden // 64), FFN = 4 x hidden."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"generator_hidden_fraction={fraction} must be in (0, 1]")
    hidden = max(1, int(round(discriminator.hidden_size * fraction)))
    return discriminator.replace(hidden_size=hidden, num_attention_heads=max(1, hidden // 64),
                                 intermediate_size=4 * hidden, extra=dict(discriminator.extra))


def electra_preset(name: str, generator_hidden_fraction: float = GENERATOR_HIDDEN_FRACTION,
                   **overrides: Any) -> tuple[ElectraConfig, ElectraConfig]:
    """(discriminator, generator) configs of a named ELECTRA size (`electra-tiny`,
    `electra-small`, `electra-small-ex`, `electra-base`, `electra-large`)."""
    if name not in ELECTRA_PRESETS:
        raise ConfigError(f"unknown ELECTRA preset {name!r}; choose one of: "
                          f"{', '.join(ELECTRA_PRESETS)}")
    discriminator = ElectraConfig(**{**ELECTRA_PRESETS[name], **overrides})
    return discriminator, generator_config(discriminator, generator_hidden_fraction)
