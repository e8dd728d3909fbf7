"""UER-py state dicts <-> Hugging Face BERT directories, both ways, and the LayerNorm drift.

UER-py (github.com/dbiir/UER-py) saves a BERT as `model.bin`, a plain `torch.save` of its
state dict. For the default BERT configs (`embedding word pos seg`, `encoder transformer`,
post-LN, `tie_weights`) the names are::

    embedding.word.embedding.weight            [vocab, H]   (older: embedding.word_embedding.*)
    embedding.pos.embedding.weight             [positions, H] (older: position_embedding)
    embedding.seg.embedding.weight             [3, H]: row 0 = padding, rows 1/2 = segments
                                               A/B = HF token types 0/1 (older: segment_embedding)
    embedding.layer_norm.gamma|beta
    encoder.transformer.N.self_attn.linear_layers.{0,1,2}.weight|bias  (query, key, value)
    encoder.transformer.N.self_attn.final_linear.weight|bias
    encoder.transformer.N.layer_norm_1.gamma|beta
    encoder.transformer.N.feed_forward.linear_1|linear_2.weight|bias
    encoder.transformer.N.layer_norm_2.gamma|beta
    target.mlm.linear_1.weight|bias            (older: target.mlm_linear_1.*)
    target.mlm.layer_norm.gamma|beta           (older: target.layer_norm.*)
    target.mlm.linear_2.weight|bias            (older: target.mlm_linear_2.*); the weight is
                                               the word embedding (tie_weights), saved twice
    target.sp.linear_1|linear_2.weight|bias    `bert` target only (older: target.sp_linear_*,
                                               before that target.nsp_linear_*)

UER-py's LayerNorm is `gamma * (x - mean) / (x.std(unbiased) + eps) + beta` with eps 1e-6,
not HF's `(x - mean) / sqrt(var + eps)`. A converted model under HF's LayerNorm therefore
drifts from UER-py's outputs; `uer_to_hf` measures that drift on real sentences, and
`layer_norm_type: "uer"` in config.json (zhplm only) removes it.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zhplm.config import ModelConfig, save_dir_atomically
from zhplm.convert.output import check_output_dir
from zhplm.errors import CheckpointError, ConfigError

KINDS = ("mlm", "bert")
UER_LAYER_NORM_EPS = 1e-6
# Older UER-py releases' names -> current ones (key prefixes; first match wins).
OLD_PREFIXES: tuple[tuple[str, str], ...] = (
    ("embedding.word_embedding.", "embedding.word.embedding."),
    ("embedding.position_embedding.", "embedding.pos.embedding."),
    ("embedding.segment_embedding.", "embedding.seg.embedding."),
    ("target.mlm_linear_1.", "target.mlm.linear_1."),
    ("target.mlm_linear_2.", "target.mlm.linear_2."),
    ("target.layer_norm.", "target.mlm.layer_norm."),
    ("target.sp_linear_1.", "target.sp.linear_1."),
    ("target.sp_linear_2.", "target.sp.linear_2."),
    ("target.nsp_linear_1.", "target.sp.linear_1."),
    ("target.nsp_linear_2.", "target.sp.linear_2."),
)
# UER options this converter cannot express as a BERT: a key that shows one, and the fix.
UNSUPPORTED = (
    ("encoder.layer_norm.", "a pre-LN encoder (layernorm_positioning pre)"),
    ("encoder.linear.", "factorized embeddings (ALBERT)"),
    ("encoder.relative_pos_emb.", "relative position embeddings (T5)"),
    (".feed_forward.linear_gate.", "a gated feed-forward layer"),
)
_LAYER = re.compile(r"^encoder\.transformer\.(\d+)\.")


def _layer_names(i: int) -> list[tuple[str, str]]:
    """(UER name, HF name) of transformer layer `i`."""
    u, h = f"encoder.transformer.{i}.", f"bert.encoder.layer.{i}."
    pairs = []
    for j, part in enumerate(("query", "key", "value")):
        for p in ("weight", "bias"):
            pairs.append((f"{u}self_attn.linear_layers.{j}.{p}", f"{h}attention.self.{part}.{p}"))
    for p in ("weight", "bias"):
        pairs.append((f"{u}self_attn.final_linear.{p}", f"{h}attention.output.dense.{p}"))
    pairs += [(f"{u}layer_norm_1.gamma", f"{h}attention.output.LayerNorm.weight"),
              (f"{u}layer_norm_1.beta", f"{h}attention.output.LayerNorm.bias")]
    for p in ("weight", "bias"):
        pairs.append((f"{u}feed_forward.linear_1.{p}", f"{h}intermediate.dense.{p}"))
        pairs.append((f"{u}feed_forward.linear_2.{p}", f"{h}output.dense.{p}"))
    pairs += [(f"{u}layer_norm_2.gamma", f"{h}output.LayerNorm.weight"),
              (f"{u}layer_norm_2.beta", f"{h}output.LayerNorm.bias")]
    return pairs


def name_map(layers: int, kind: str) -> list[tuple[str, str]]:
    """Every (current UER name, HF name) pair of a `layers`-layer BERT with target `kind`.

    `embedding.seg.embedding.weight` maps to the token type table minus its row 0, and
    `target.mlm.linear_2.weight` to nothing (it is the tied word embedding)."""
    _check_kind(kind)
    pairs = [
        ("embedding.word.embedding.weight", "bert.embeddings.word_embeddings.weight"),
        ("embedding.pos.embedding.weight", "bert.embeddings.position_embeddings.weight"),
        ("embedding.seg.embedding.weight", "bert.embeddings.token_type_embeddings.weight"),
        ("embedding.layer_norm.gamma", "bert.embeddings.LayerNorm.weight"),
        ("embedding.layer_norm.beta", "bert.embeddings.LayerNorm.bias"),
    ]
    for i in range(layers):
        pairs += _layer_names(i)
    pairs += [
        ("target.mlm.linear_1.weight", "cls.predictions.transform.dense.weight"),
        ("target.mlm.linear_1.bias", "cls.predictions.transform.dense.bias"),
        ("target.mlm.layer_norm.gamma", "cls.predictions.transform.LayerNorm.weight"),
        ("target.mlm.layer_norm.beta", "cls.predictions.transform.LayerNorm.bias"),
        ("target.mlm.linear_2.bias", "cls.predictions.bias"),
    ]
    if kind == "bert":
        pairs += [
            ("target.sp.linear_1.weight", "bert.pooler.dense.weight"),
            ("target.sp.linear_1.bias", "bert.pooler.dense.bias"),
            ("target.sp.linear_2.weight", "cls.seq_relationship.weight"),
            ("target.sp.linear_2.bias", "cls.seq_relationship.bias"),
        ]
    return pairs


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"--type {kind!r} is not a UER target zhplm converts; use mlm "
                          f"(target mlm) or bert (targets mlm + sp)")


def read_uer_state(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read a UER-py `model.bin` with `torch.load(weights_only=True)`; older names are
    renamed to current ones. Returns the state and {old name: new name} of renamed keys."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--input {path}: no such file; pass the model.bin UER-py's "
                              f"pretrain.py wrote")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (zip), EOFError, ...
        raise CheckpointError(
            f"--input {path}: not a readable PyTorch state dict ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). zhplm reads .bin files with "
            f"torch.load(weights_only=True) only: pass the model.bin UER-py saved (a dict of "
            f"tensors), re-download it if it is truncated"
        ) from None
    if not isinstance(state, dict) or not state or \
            not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise CheckpointError(
            f"--input {path}: holds a {type(state).__name__}, not a state dict of tensors; "
            f"pass the model.bin UER-py's pretrain.py wrote (uer.model_saver.save_model)"
        )
    renamed: dict[str, str] = {}
    out: dict[str, Tensor] = {}
    for key, tensor in state.items():
        new = key
        for old, current in OLD_PREFIXES:
            if key.startswith(old):
                new = current + key[len(old):]
                renamed[key] = new
                break
        if new in out:
            raise CheckpointError(f"--input {path}: both {key} and another key map to {new}; "
                                  f"the file mixes old and new UER-py names")
        out[new] = tensor
    return out, renamed


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def infer_config(state: dict[str, Tensor], layers: int, heads: int | None, source: str
                 ) -> ModelConfig:
    """An HF BERT config from a (renamed) UER state's shapes; `layers` is checked against the
    keys, `heads` (not in the file) defaults to hidden / 64 as UER-py's BERT configs."""
    for marker, what in UNSUPPORTED:
        found = [k for k in state if marker in k]
        if found:
            raise ConfigError(f"--input {source}: {found[0]} shows {what}, which is not a "
                              f"BERT; zhplm converts UER-py's post-LN BERT (models/bert/*)")
    word = state.get("embedding.word.embedding.weight")
    if word is None:
        raise CheckpointError(
            f"--input {source}: no embedding.word.embedding.weight (nor the older "
            f"embedding.word_embedding.weight); this is not a UER-py BERT state dict")
    found_layers = sorted({int(m.group(1)) for k in state if (m := _LAYER.match(k))})
    if len(found_layers) != layers:
        held = f"encoder.transformer.0..{found_layers[-1]}" if found_layers else "no layers"
        raise ConfigError(
            f"--layers {layers} does not match --input {source}, which holds {held} "
            f"({len(found_layers)} layers); pass --layers {len(found_layers)}")
    vocab_size, hidden = word.shape
    if heads is None:
        if hidden % 64:
            raise ConfigError(f"--heads is needed: hidden size {hidden} is not a multiple of "
                              f"64 (pass the heads_num of the UER config the model was "
                              f"trained with)")
        heads = hidden // 64
    if heads <= 0 or hidden % heads:
        raise ConfigError(f"--heads {heads} does not divide the hidden size {hidden}; pass "
                          f"the heads_num of the UER config the model was trained with")
    seg = state.get("embedding.seg.embedding.weight")
    if seg is None or seg.shape[0] != 3:
        raise CheckpointError(
            f"--input {source}: embedding.seg.embedding.weight should have 3 rows (padding, "
            f"segment A, segment B), got {None if seg is None else tuple(seg.shape)}")
    ffn = state.get("encoder.transformer.0.feed_forward.linear_1.weight")
    pos = state.get("embedding.pos.embedding.weight")
    if ffn is None or pos is None:
        absent = "embedding.pos.embedding.weight" if pos is None else \
            "encoder.transformer.0.feed_forward.linear_1.weight"
        raise CheckpointError(f"--input {source}: no {absent}; this is not a UER-py BERT "
                              f"(embedding word pos seg + encoder transformer)")
    return ModelConfig(
        vocab_size=int(vocab_size), hidden_size=int(hidden), num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=int(ffn.shape[0]),
        max_position_embeddings=int(pos.shape[0]), type_vocab_size=2,
        layer_norm_eps=UER_LAYER_NORM_EPS, hidden_act="gelu",
    )


def uer_state_to_hf(state: dict[str, Tensor], layers: int, kind: str, source: str
                    ) -> tuple[dict[str, Tensor], dict[str, str], list[str]]:
    """Rename a UER state dict to HF names. Returns the HF state, {UER: HF} of mapped keys
    and the UER keys left unmapped."""
    hf: dict[str, Tensor] = {}
    mapped: dict[str, str] = {}
    missing = []
    for uer_name, hf_name in name_map(layers, kind):
        if uer_name not in state:
            missing.append(uer_name)
            continue
        tensor = state[uer_name]
        if uer_name == "embedding.seg.embedding.weight":
            tensor = tensor[1:]  # row 0 is UER's padding segment; rows 1, 2 = types 0, 1
        hf[hf_name] = tensor.detach().clone().contiguous()
        mapped[uer_name] = hf_name
    if missing:
        hint = " (the file has no target.sp.*: convert it with --type mlm)" if kind == "bert" \
            and all(k.startswith("target.sp.") for k in missing) else ""
        raise CheckpointError(f"--input {source}: {len(missing)} weights are missing for a "
                              f"--type {kind} BERT (first: {', '.join(missing[:4])}){hint}")
    decoder = state.get("target.mlm.linear_2.weight")
    word = state["embedding.word.embedding.weight"]
    if decoder is not None:
        if decoder.shape != word.shape or not torch.equal(decoder, word):
            raise ConfigError(
                f"--input {source}: target.mlm.linear_2.weight differs from the word "
                f"embedding: the model was trained without tie_weights, and zhplm's BERT (as "
                f"HF's) ties the MLM decoder to the word embeddings")
        mapped["target.mlm.linear_2.weight"] = "(tied: bert.embeddings.word_embeddings.weight)"
    unmapped = [k for k in state if k not in mapped]
    return hf, mapped, unmapped


def _drift_sentences() -> list[str]:
    from zhplm.datasets import corpus_lines

    out = []
    for line in corpus_lines("test"):
        if 8 <= len(line) <= 120:
            out.append(line)
        if len(out) == 16:
            break
    return out


def measure_drift(model_dir: Path, kind: str, sentences: Sequence[str] | None = None
                  ) -> dict[str, Any]:
    """Run the converted model with HF's LayerNorm and with UER-py's (which reproduces UER-py
    exactly) on `sentences` (default: 16 built-in test sentences) and compare the logits."""
    from zhplm.modeling.bert import BertForMaskedLM, BertForPreTraining
    from zhplm.tokenization import Tokenizer

    sentences = list(sentences) if sentences is not None else _drift_sentences()
    cls = BertForPreTraining if kind == "bert" else BertForMaskedLM
    config = ModelConfig.from_pretrained(model_dir)
    tokenizer = Tokenizer.from_pretrained(model_dir)
    limit = config.max_position_embeddings
    outputs = {}
    with torch.no_grad():
        for lnt in ("hf", "uer"):
            model = cls.from_pretrained(model_dir, config=config.replace(layer_norm_type=lnt))
            mlm, sp = [], []
            for text in sentences:
                parts = text.split("\t", 1)
                enc = tokenizer(parts[0], parts[1] if len(parts) > 1 else None,
                                truncation=True, max_length=limit, return_tensors="pt")
                out = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
                if kind == "bert":
                    mlm.append(out.prediction_logits[0])
                    sp.append(out.seq_relationship_logits[0])
                else:
                    mlm.append(out.logits[0])
            outputs[lnt] = (torch.cat(mlm), torch.stack(sp) if sp else None)
    diff = (outputs["hf"][0] - outputs["uer"][0]).abs()
    report: dict[str, Any] = {
        "sentences": len(sentences),
        "tokens": int(diff.shape[0]),
        "max_abs_logit_diff": float(diff.max()),
        "mean_abs_logit_diff": float(diff.mean()),
        "top1_agreement": float((outputs["hf"][0].argmax(-1) == outputs["uer"][0].argmax(-1))
                                .float().mean()),
    }
    if kind == "bert":
        report["max_abs_sp_logit_diff"] = float(
            (outputs["hf"][1] - outputs["uer"][1]).abs().max())
    report["note"] = (
        "logits of plain HF LayerNorm (transformers, zhplm default) minus UER-py's; set "
        "\"layer_norm_type\": \"uer\" in config.json for zhplm to reproduce UER-py exactly")
    return report


def uer_to_hf(
    input: str | os.PathLike[str],
    vocab: str | os.PathLike[str],
    out: str | os.PathLike[str],
    layers: int,
    kind: str = "mlm",
    heads: int | None = None,
    *,
    layer_norm_type: str = "hf",
    drift_sentences: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Convert UER-py's `model.bin` (+ its `vocab.txt`) into an HF BERT directory `out`
    (`BertForMaskedLM` for `kind="mlm"`, `BertForPreTraining` for `"bert"`), written whole.

    Returns a report: every UER key mapped (to its HF name) or unmapped, the inferred config,
    and `drift`: how far HF's LayerNorm moves the logits from UER-py's (`measure_drift`).
    `layer_norm_type="uer"` writes config.json with UER's LayerNorm for zhplm (transformers
    ignores the key); pairs in `drift_sentences` are "A<TAB>B"."""
    from zhplm.modeling.bert import BertForMaskedLM, BertForPreTraining
    from zhplm.tokenization import Tokenizer

    _check_kind(kind)
    source = str(input)
    final = check_output_dir(out, [input, vocab])
    state, renamed = read_uer_state(input)
    config = infer_config(state, layers, heads, source).replace(layer_norm_type=layer_norm_type)
    vocab_path = Path(vocab)
    if not vocab_path.is_file():
        raise CheckpointError(f"--vocab {vocab_path}: no such file; pass the vocab.txt the "
                              f"UER-py model was trained with")
    n_vocab = _count_lines(vocab_path)
    if n_vocab != config.vocab_size:
        raise CheckpointError(
            f"--vocab {vocab_path} has {n_vocab} lines but --input {source} has "
            f"{config.vocab_size} word embedding rows; pass the vocab.txt the model was "
            f"trained with")
    tokenizer = Tokenizer.from_vocab(vocab_path)
    config = config.replace(pad_token_id=tokenizer.pad_token_id)
    hf_state, mapped, unmapped = uer_state_to_hf(state, layers, kind, source)
    model = (BertForPreTraining if kind == "bert" else BertForMaskedLM)(config)
    model.load_checkpoint_state(hf_state, source=source)
    save_dir_atomically(lambda tmp: model.save_pretrained(tmp, tokenizer=tokenizer), final)
    report: dict[str, Any] = {
        "input": source,
        "out": str(final),
        "architecture": type(model).__name__,
        "config": {k: getattr(config, k) for k in (
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "max_position_embeddings", "layer_norm_eps",
            "layer_norm_type")},
        "mapped": mapped,
        "renamed_old_names": renamed,
        "unmapped": unmapped,
        "segment_rows": "UER seg rows 1, 2 -> token_type 0, 1; row 0 (padding) dropped",
        "drift": measure_drift(final, kind, drift_sentences),
    }
    return report


def hf_to_uer(model: str | os.PathLike[str], out: str | os.PathLike[str], kind: str = "mlm"
              ) -> dict[str, Any]:
    """Write an HF BERT directory as a UER-py `model.bin` (current names, as UER-py's
    `save_model` would: seg embedding with 3 rows, row 0 zeros; for the tied MLM decoder
    `target.mlm.linear_2.weight` is the word embedding). Returns a report with the UER
    config values the file needs (`heads_num` is not in the weights)."""
    from zhplm.modeling.pretrained import load_state_dict, normalize_keys

    _check_kind(kind)
    model_dir = Path(model)
    config = ModelConfig.from_pretrained(model_dir)
    if config.model_type != "bert":
        raise ConfigError(f"--model {model_dir}: model_type={config.model_type!r}; hf2uer "
                          f"converts BERT directories only")
    if config.type_vocab_size != 2:
        raise ConfigError(f"--model {model_dir}: type_vocab_size={config.type_vocab_size}; "
                          f"UER-py's segment embedding has room for exactly 2 token types")
    hf = normalize_keys(load_state_dict(model_dir), "bert", "bert")
    word = hf.get("bert.embeddings.word_embeddings.weight")
    decoder = hf.pop("cls.predictions.decoder.weight", None)
    if word is not None and decoder is not None and not torch.equal(word, decoder):
        raise ConfigError(f"--model {model_dir}: cls.predictions.decoder.weight is not tied "
                          f"to the word embeddings; UER-py's BERT (tie_weights) needs them tied")
    state: OrderedDict[str, Tensor] = OrderedDict()
    missing = []
    used = set()
    for uer_name, hf_name in name_map(config.num_hidden_layers, kind):
        tensor = hf.get(hf_name)
        if tensor is None:
            missing.append(hf_name)
            continue
        used.add(hf_name)
        tensor = tensor.detach().to(torch.float32).contiguous()
        if uer_name == "embedding.seg.embedding.weight":
            tensor = torch.cat((torch.zeros_like(tensor[:1]), tensor))
        state[uer_name] = tensor
    if missing:
        hint = " (no NSP head / pooler: convert with --type mlm)" if kind == "bert" else ""
        raise CheckpointError(f"--model {model_dir}: {len(missing)} weights are missing for "
                              f"--type {kind} (first: {', '.join(missing[:4])}){hint}")
    state["target.mlm.linear_2.weight"] = state["embedding.word.embedding.weight"]  # tied
    state = _uer_order(state, config.num_hidden_layers, kind)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    notes = []
    if config.layer_norm_eps != UER_LAYER_NORM_EPS or config.layer_norm_type != "uer":
        notes.append(f"UER-py computes its own LayerNorm (eps {UER_LAYER_NORM_EPS}); this "
                     f"model was run with layer_norm_type={config.layer_norm_type!r}, eps "
                     f"{config.layer_norm_eps}, so UER-py's outputs will drift slightly")
    if config.hidden_act != "gelu":
        notes.append(f"hidden_act={config.hidden_act!r}: set \"hidden_act\" in the UER config")
    return {
        "model": str(model_dir),
        "out": str(path),
        "keys": list(state),
        "unmapped": sorted(k for k in hf if k not in used),
        "uer_config": {
            "emb_size": config.hidden_size, "hidden_size": config.hidden_size,
            "feedforward_size": config.intermediate_size, "heads_num":
                config.num_attention_heads, "layers_num": config.num_hidden_layers,
            "max_seq_length": config.max_position_embeddings, "hidden_act": config.hidden_act,
            "embedding": ["word", "pos", "seg"], "encoder": "transformer",
            "mask": "fully_visible", "target": ["mlm", "sp"] if kind == "bert" else ["mlm"],
            "data_processor": kind, "tie_weights": True,
        },
        "notes": notes,
    }


def _uer_order(state: OrderedDict[str, Tensor], layers: int, kind: str
               ) -> OrderedDict[str, Tensor]:
    """Keys in the order UER-py's `Model.state_dict()` lists them."""
    first = ["embedding.layer_norm.gamma", "embedding.layer_norm.beta",
             "embedding.word.embedding.weight", "embedding.pos.embedding.weight",
             "embedding.seg.embedding.weight"]
    layer_parts = [f"self_attn.linear_layers.{j}.{p}" for j in range(3) for p in ("weight", "bias")]
    layer_parts += [f"self_attn.final_linear.{p}" for p in ("weight", "bias")]
    layer_parts += [f"feed_forward.linear_{j}.{p}" for j in (1, 2) for p in ("weight", "bias")]
    layer_parts += [f"layer_norm_{j}.{p}" for j in (1, 2) for p in ("gamma", "beta")]
    names = first + [f"encoder.transformer.{i}.{part}" for i in range(layers)
                     for part in layer_parts]
    names += [f"target.mlm.{n}" for n in ("linear_1.weight", "linear_1.bias", "layer_norm.gamma",
                                           "layer_norm.beta", "linear_2.weight", "linear_2.bias")]
    if kind == "bert":
        names += [f"target.sp.linear_{j}.{p}" for j in (1, 2) for p in ("weight", "bias")]
    return OrderedDict((n, state[n]) for n in names)
