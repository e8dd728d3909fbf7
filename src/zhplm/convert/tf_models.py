"""TF 1.x checkpoints of Google BERT, HFL ELECTRA and HFL LERT -> Hugging Face directories.

`convert_tf(checkpoint, config, out, model=...)` reads the checkpoint with
`tf_checkpoint.TFCheckpoint` (no TensorFlow), maps its variable names onto the state dict of
the zhplm model the released config describes (HF names), checks every shape against the
config, and writes a directory `transformers` loads (`config.json`, `model.safetensors`,
the vocab). Kernels are transposed (TF stores `[in, out]`), LayerNorm gamma / beta become
weight / bias.

- `bert`: `bert/embeddings/*`, `bert/encoder/layer_N/*`, `bert/pooler/dense/*`, and the
  heads it has: `cls/predictions/*` (MLM) and `cls/seq_relationship/*` (NSP). Both heads ->
  `BertForPreTraining`, the MLM head only -> `BertForMaskedLM`, none -> `BertModel`.
- `electra-discriminator` / `electra-generator`: one ELECTRA checkpoint holds both towers.
  The word / position / type embeddings are shared (`electra/embeddings/*`, or
  `generator/embeddings/*` when they were untied); each tower has its own
  `*/embeddings_project` (when embedding_size != hidden_size) and `*/encoder/*`; the heads
  are `discriminator_predictions/dense|dense_1` (`ElectraForPreTraining`) and
  `generator_predictions/dense|LayerNorm|output_bias` (`ElectraForMaskedLM`). Convert the
  same checkpoint twice, with the discriminator's and the generator's config.
- `lert`: the BERT names plus `cls/predictions/output_{pos,ner,dep}_layer/{kernel,bias}`
  (28 / 13 / 14 labels), written as zhplm's `lert_heads.safetensors` + `lert_labels.json`
  in LERT's label order (`data.annotate.lert_labels`), so `fill-mask --linguistic` works.

Optimizer slots (`*/adam_m`, `*/adam_v`, `*/Adam*`), `global_step` and the like are
skipped, the other ELECTRA tower's variables counted apart; any other variable the model
does not use (e.g. the pooler of a model without a sentence head) is reported as unmapped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zhplm.config import ElectraConfig, ModelConfig, save_dir_atomically
from zhplm.convert.output import check_output_dir
from zhplm.convert.tf_checkpoint import TFCheckpoint, resolve_prefix
from zhplm.errors import CheckpointError, ConfigError

MODELS = ("bert", "electra-discriminator", "electra-generator", "lert")
OPTIMIZER_VARIABLE = re.compile(
    r"(^|/)(adam_m|adam_v|Adam|Adam_\d+|Momentum|RMSProp(_\d+)?|Adagrad|Adafactor\w*|"
    r"ExponentialMovingAverage)$|^(global_step|beta1_power|beta2_power|good_steps|"
    r"loss_scale|current_loss_scale)$")
# keys of a released TF config that are TF-only and have no HF meaning
TF_ONLY_KEYS = {"directionality", "pooler_fc_size", "pooler_num_attention_heads",
                "pooler_num_fc_layers", "pooler_size_per_head", "pooler_type", "output_past",
                "_num_labels", "architectures"}
LERT_TASK_SIZES = {"pos": 28, "ner": 13, "dep": 14}

# one mapping: HF key -> (TF variable, transposed?)
Mapping = dict[str, tuple[str, bool]]


# ---------------------------------------------------------------------------- name tables
def _layer_norm(hf: str, tf: str) -> Mapping:
    return {f"{hf}.weight": (f"{tf}/gamma", False), f"{hf}.bias": (f"{tf}/beta", False)}


def _dense(hf: str, tf: str) -> Mapping:
    return {f"{hf}.weight": (f"{tf}/kernel", True), f"{hf}.bias": (f"{tf}/bias", False)}


def _embeddings(hf: str, tf: str) -> Mapping:
    names = {f"{hf}.{n}.weight": (f"{tf}/{n}", False)
             for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")}
    return {**names, **_layer_norm(f"{hf}.LayerNorm", f"{tf}/LayerNorm")}


def _encoder(hf: str, tf: str, layers: int) -> Mapping:
    out: Mapping = {}
    for i in range(layers):
        h, t = f"{hf}.layer.{i}", f"{tf}/layer_{i}"
        for part in ("query", "key", "value"):
            out |= _dense(f"{h}.attention.self.{part}", f"{t}/attention/self/{part}")
        out |= _dense(f"{h}.attention.output.dense", f"{t}/attention/output/dense")
        out |= _layer_norm(f"{h}.attention.output.LayerNorm", f"{t}/attention/output/LayerNorm")
        out |= _dense(f"{h}.intermediate.dense", f"{t}/intermediate/dense")
        out |= _dense(f"{h}.output.dense", f"{t}/output/dense")
        out |= _layer_norm(f"{h}.output.LayerNorm", f"{t}/output/LayerNorm")
    return out


def bert_mapping(layers: int, heads: tuple[str, ...]) -> Mapping:
    """HF names of a BERT with `heads` ("mlm", "nsp") -> Google BERT's TF names."""
    out = _embeddings("bert.embeddings", "bert/embeddings")
    out |= _encoder("bert.encoder", "bert/encoder", layers)
    out |= _dense("bert.pooler.dense", "bert/pooler/dense")
    if "mlm" in heads:
        out |= _dense("cls.predictions.transform.dense", "cls/predictions/transform/dense")
        out |= _layer_norm("cls.predictions.transform.LayerNorm",
                           "cls/predictions/transform/LayerNorm")
        out["cls.predictions.bias"] = ("cls/predictions/output_bias", False)
    if "nsp" in heads:  # output_weights is stored [2, hidden], as torch's Linear
        out["cls.seq_relationship.weight"] = ("cls/seq_relationship/output_weights", False)
        out["cls.seq_relationship.bias"] = ("cls/seq_relationship/output_bias", False)
    return out


def electra_mapping(tower: str, layers: int, project: bool, shared: str) -> Mapping:
    """HF names of one ELECTRA tower -> google-research/electra's TF names. `tower` is
    "discriminator" (scope `electra`) or "generator"; `shared` the embeddings' scope."""
    scope = "electra" if tower == "discriminator" else "generator"
    out = _embeddings("electra.embeddings", f"{shared}/embeddings")
    if project:
        out |= _dense("electra.embeddings_project", f"{scope}/embeddings_project")
    out |= _encoder("electra.encoder", f"{scope}/encoder", layers)
    if tower == "discriminator":
        out |= _dense("discriminator_predictions.dense", "discriminator_predictions/dense")
        out |= _dense("discriminator_predictions.dense_prediction",
                      "discriminator_predictions/dense_1")
    else:
        out |= _dense("generator_predictions.dense", "generator_predictions/dense")
        out |= _layer_norm("generator_predictions.LayerNorm", "generator_predictions/LayerNorm")
        out["generator_lm_head.bias"] = ("generator_predictions/output_bias", False)
    return out


def lert_mapping() -> Mapping:
    """LERT's linguistic heads (zhplm `LinguisticHeads` names) -> TF names."""
    out: Mapping = {}
    for task in LERT_TASK_SIZES:
        out |= _dense(f"tasks.{task}", f"cls/predictions/output_{task}_layer")
    return out


# ---------------------------------------------------------------------------- configs
def read_released_config(path: Path, electra: bool) -> ModelConfig:
    """A released `bert_config.json` / `lert_config.json` / ELECTRA config as a zhplm config
    (TF-only keys dropped; the HF defaults for what TF configs do not say)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--config {path} does not exist; pass the config released with "
                          f"the checkpoint (bert_config.json, lert_config.json, ELECTRA's "
                          f"discriminator / generator json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--config {path}: not a JSON config ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: a JSON object is expected")
    cls = ElectraConfig if electra else ModelConfig
    known = {f.name for f in dataclasses.fields(cls)} - {"extra", "model_type"}
    kept = {k: v for k, v in data.items() if k in known}
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers",
                           "num_attention_heads", "intermediate_size") if k not in kept]
    if missing:
        raise ConfigError(f"--config {path} lacks {', '.join(missing)}; is it the model's "
                          f"released config?")
    return cls(**kept)


# ---------------------------------------------------------------------------- conversion
def _fill(checkpoint: TFCheckpoint, mapping: Mapping, expected: dict[str, torch.Tensor],
          config_path: Path, used: set[str]) -> dict[str, torch.Tensor]:
    """The state dict for `expected`'s keys from the checkpoint, shapes checked."""
    state: dict[str, torch.Tensor] = {}
    for key, want in expected.items():
        if key not in mapping:
            raise CheckpointError(f"no TF name is known for {key}; this is a bug in zhplm's "
                                  f"name table")
        name, transposed = mapping[key]
        if name not in checkpoint:
            raise CheckpointError(f"{checkpoint.prefix}: no variable {name} (for {key}); is "
                                  f"this checkpoint the model --model names, with {config_path}?")
        array = checkpoint.read(name)
        if transposed:
            array = array.T
        if tuple(array.shape) != tuple(want.shape):
            stored = checkpoint.entry(name).shape
            raise ConfigError(f"{checkpoint.prefix}: {name} has shape {list(stored)}, but "
                              f"{config_path} implies {list(want.shape)}"
                              f"{' (transposed)' if transposed else ''} for {key}; use the "
                              f"config released with this checkpoint")
        state[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        used.add(name)
    return state


def _load(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k in model.state_dict()]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"the converted weights do not fit the model: missing "
                              f"{missing}, unexpected {result.unexpected_keys}")


def convert_tf(checkpoint: str | os.PathLike[str], config: str | os.PathLike[str],
               out: str | os.PathLike[str], model: str = "bert",
               vocab: str | os.PathLike[str] | None = None, lowercase: bool = True
               ) -> dict[str, Any]:
    """Convert a TF 1.x checkpoint into an HF directory `out` (written whole); returns a
    report: architecture, counts of mapped / skipped variables, the unmapped ones."""
    from zhplm.modeling.bert import BertForMaskedLM, BertForPreTraining, BertModel
    from zhplm.modeling.electra import ElectraForMaskedLM, ElectraForPreTraining
    from zhplm.tokenization import Tokenizer

    started = time.perf_counter()
    if model not in MODELS:
        raise ConfigError(f"--model {model!r}: choose one of {', '.join(MODELS)}")
    prefix = resolve_prefix(checkpoint)
    config_path = Path(config)
    vocab_path = Path(vocab) if vocab is not None else prefix.parent / "vocab.txt"
    out = check_output_dir(out, [f"{prefix}.index", config_path, vocab_path])
    if not vocab_path.is_file():
        raise ConfigError(f"{vocab_path} does not exist; pass --vocab VOCAB_TXT (the vocab "
                          f"released with the checkpoint)")
    electra = model.startswith("electra")
    model_config = read_released_config(config_path, electra)
    tokenizer = Tokenizer.from_vocab(vocab_path, lowercase=lowercase,
                                     model_max_length=model_config.max_position_embeddings)
    with vocab_path.open(encoding="utf-8") as f:  # lines = ids, as Tokenizer.from_vocab
        vocab_lines = sum(1 for _ in f)
    if vocab_lines != model_config.vocab_size:
        raise ConfigError(f"{vocab_path} has {vocab_lines} lines (token ids) but {config_path} "
                          f"says vocab_size {model_config.vocab_size}; use the vocab released "
                          f"with the checkpoint")
    ckpt = TFCheckpoint(prefix)
    ckpt.check_shards()
    used: set[str] = set()
    extra_files: Callable[[Path], None] | None = None
    layers = model_config.num_hidden_layers

    if electra:
        tower = model.split("-")[1]
        scope = "electra" if tower == "discriminator" else "generator"
        if f"{scope}/encoder/layer_0/output/dense/kernel" not in ckpt:
            raise CheckpointError(f"{ckpt.prefix} has no {scope}/encoder variables: not an "
                                  f"ELECTRA checkpoint with a {tower}")
        assert isinstance(model_config, ElectraConfig)
        shared = "generator" if tower == "generator" and \
            "generator/embeddings/word_embeddings" in ckpt else "electra"
        project = model_config.embedding_size != model_config.hidden_size
        net: torch.nn.Module = (ElectraForPreTraining if tower == "discriminator"
                                else ElectraForMaskedLM)(model_config)
        mapping = electra_mapping(tower, layers, project, shared)
    else:
        heads = tuple(h for h, name in (("mlm", "cls/predictions/output_bias"),
                                        ("nsp", "cls/seq_relationship/output_weights"))
                      if name in ckpt)
        net_class = (BertForPreTraining if heads == ("mlm", "nsp") else
                     BertForMaskedLM if "mlm" in heads else BertModel)
        net = net_class(model_config)
        mapping = bert_mapping(layers, heads if net_class is not BertModel else ())
        if net_class is BertModel:  # BertModel's keys carry no "bert." prefix
            mapping = {k.removeprefix("bert."): v for k, v in mapping.items()}
    state = _fill(ckpt, mapping, net.state_dict(), config_path, used)
    _load(net, state)

    report: dict[str, Any] = {"checkpoint": str(ckpt.prefix), "config": str(config_path),
                              "model": model, "architecture": type(net).__name__}
    if model == "lert":
        extra_files, lert_used = _lert_heads(ckpt, model_config, config_path)
        used |= lert_used
        report["lert_heads"] = {t: n for t, n in LERT_TASK_SIZES.items()}
        report["note"] = ("POS and DEP labels are in LERT's published order; LERT never "
                          "published its 13 NER labels' order, so NER names follow zhplm's "
                          "(lert_labels.json)")
    elif any(f"cls/predictions/output_{t}_layer/kernel" in ckpt for t in LERT_TASK_SIZES):
        report["hint"] = "this checkpoint has LERT's linguistic heads: --model lert keeps them"

    def save(directory: Path) -> None:
        net.save_pretrained(directory, tokenizer=tokenizer)  # type: ignore[attr-defined]
        if extra_files is not None:
            extra_files(directory)

    save_dir_atomically(save, out)
    names = ckpt.names()
    skipped = [n for n in names if OPTIMIZER_VARIABLE.search(n)]
    other = [n for n in names if n not in used and n not in skipped and
             _other_tower(model, n)]
    unmapped = [n for n in names if n not in used and n not in skipped and n not in other]
    if other:  # the ELECTRA tower not converted in this run
        report["other_tower"] = len(other)
    report.update({"out": str(out), "mapped": len(used), "skipped": len(skipped),
                   "unmapped": unmapped,
                   "parameters": int(sum(t.numel() for t in state.values())),
                   "seconds": round(time.perf_counter() - started, 2)})
    return report


def _other_tower(model: str, name: str) -> bool:
    """Whether `name` belongs to the ELECTRA tower `model` does not convert."""
    if model == "electra-discriminator":
        return name.startswith(("generator/", "generator_predictions/"))
    if model == "electra-generator":
        return name.startswith(("electra/embeddings_project/", "electra/encoder/",
                                "discriminator_predictions/"))
    return False


def _lert_heads(ckpt: TFCheckpoint, config: ModelConfig, config_path: Path
                ) -> tuple[Callable[[Path], None], set[str]]:
    """LERT's POS / NER / DEP heads from the checkpoint, and a writer of their sidecar."""
    from zhplm.data.annotate import lert_labels
    from zhplm.modeling.lert_heads import LinguisticHeads

    missing = [t for t in LERT_TASK_SIZES
               if f"cls/predictions/output_{t}_layer/kernel" not in ckpt]
    if missing:
        raise CheckpointError(f"{ckpt.prefix}: no cls/predictions/output_{missing[0]}_layer; "
                              f"not a LERT checkpoint with its linguistic heads (convert it "
                              f"with --model bert)")
    labels = lert_labels()
    heads = LinguisticHeads(config.hidden_size, {t: labels[t] for t in LERT_TASK_SIZES})
    used: set[str] = set()
    _load(heads, _fill(ckpt, lert_mapping(), heads.state_dict(), config_path, used))
    return heads.save_pretrained, used
