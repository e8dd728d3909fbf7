"""`zhplm convert tf`: checkpoints written by real TensorFlow (Google BERT, HFL ELECTRA with
Adam slots and global_step, LERT with its linguistic heads, a sharded one) become HF
directories that transformers and zhplm load with identical outputs, equal to the outputs
TensorFlow itself computed from the checkpoint (`PREFIX.outputs.npz`, written by
`tests/fixtures/make_tf_checkpoints.py`). TensorFlow is never imported here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zhplm.convert.tf_models import convert_tf
from zhplm.errors import CheckpointError, ConfigError

transformers = pytest.importorskip("transformers")

FIXTURES = Path(__file__).parent / "fixtures" / "tf"
TF_TOL = 1e-5  # TF's and torch's float32 kernels differ in summation order (seen: <= 1e-6)
# with N(0, 0.02) weights attention is nearly uniform: a transposed query or key kernel moves
# the attention probabilities by ~4e-5 but the logits by far less, so they are checked tightly
ATTENTION_TOL = 1e-6
SAME_TOL = 1e-5


def _inputs(prefix: Path) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
    outputs = dict(np.load(f"{prefix}.outputs.npz"))
    feed = {"input_ids": torch.from_numpy(outputs["input_ids"].astype(np.int64)),
            "attention_mask": torch.from_numpy(outputs["input_mask"].astype(np.int64)),
            "token_type_ids": torch.from_numpy(outputs["token_type_ids"].astype(np.int64))}
    return outputs, feed


def _attention(model: torch.nn.Module, feed: dict[str, torch.Tensor]) -> np.ndarray:
    """[layers, batch, heads, seq, seq] attention probabilities of a transformers model."""
    with torch.no_grad():
        found = model(**feed, output_attentions=True).attentions
    return torch.stack(found).numpy()


def _close(ours: torch.Tensor, reference: np.ndarray, tol: float, what: str) -> None:
    diff = float(np.abs(ours.detach().float().numpy() - reference).max())
    assert diff <= tol, f"{what}: max |diff| {diff:.2e} > {tol:g}"


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    root = tmp_path_factory.mktemp("converted")
    runs = {"bert": ("bert", FIXTURES / "bert" / "bert_model.ckpt", "bert_config.json"),
            "lert": ("lert", FIXTURES / "lert" / "lert_model.ckpt", "lert_config.json"),
            "disc": ("electra-discriminator", FIXTURES / "electra" / "electra_tiny",
                     "discriminator.json"),
            "gen": ("electra-generator", FIXTURES / "electra" / "electra_tiny",
                    "generator.json")}
    return {name: (root / name, convert_tf(prefix, prefix.parent / config, root / name,
                                           model=model))
            for name, (model, prefix, config) in runs.items()}


def test_bert_equals_tensorflow_and_transformers(converted) -> None:
    from zhplm.modeling.bert import BertForPreTraining

    out, report = converted["bert"]
    assert report["architecture"] == "BertForPreTraining"
    assert report["unmapped"] == [] and report["mapped"] == 46
    tf_out, feed = _inputs(FIXTURES / "bert" / "bert_model.ckpt")
    theirs = transformers.BertForPreTraining.from_pretrained(
        out, attn_implementation="eager").eval()
    ours = BertForPreTraining.from_pretrained(out).eval()
    _close(torch.from_numpy(_attention(theirs, feed)), tf_out["attention_probs"],
           ATTENTION_TOL, "attention probabilities vs TF")
    with torch.no_grad():
        hf = theirs(**feed, output_hidden_states=True)
        zh = ours(feed["input_ids"], feed["attention_mask"], feed["token_type_ids"])
    _close(hf.hidden_states[-1], tf_out["sequence_output"], TF_TOL, "sequence output vs TF")
    _close(hf.prediction_logits, tf_out["mlm_logits"], TF_TOL, "MLM logits vs TF")
    _close(hf.seq_relationship_logits, tf_out["nsp_logits"], TF_TOL, "NSP logits vs TF")
    _close(zh.prediction_logits, hf.prediction_logits.numpy(), SAME_TOL, "zhplm vs HF MLM")
    _close(zh.seq_relationship_logits, hf.seq_relationship_logits.numpy(), SAME_TOL,
           "zhplm vs HF NSP")
    vocab = (FIXTURES / "bert" / "vocab.txt").read_bytes()
    assert (out / "vocab.txt").read_bytes() == vocab


def test_electra_towers_equal_tensorflow_and_transformers(converted) -> None:
    from zhplm.modeling.electra import ElectraForMaskedLM, ElectraForPreTraining

    tf_out, feed = _inputs(FIXTURES / "electra" / "electra_tiny")
    disc_dir, disc_report = converted["disc"]
    gen_dir, gen_report = converted["gen"]
    for report in (disc_report, gen_report):
        assert report["unmapped"] == []
        assert report["skipped"] == 165  # 82 x (adam_m, adam_v) + global_step
    assert disc_report["other_tower"] > 0 and gen_report["other_tower"] > 0
    disc = transformers.ElectraForPreTraining.from_pretrained(
        disc_dir, attn_implementation="eager").eval()
    gen = transformers.ElectraForMaskedLM.from_pretrained(
        gen_dir, attn_implementation="eager").eval()
    for name, tower in (("disc", disc), ("gen", gen)):
        _close(torch.from_numpy(_attention(tower, feed)), tf_out[f"{name}_attention_probs"],
               ATTENTION_TOL, f"{name} attention probabilities vs TF")
    with torch.no_grad():
        disc_logits = disc(**feed).logits
        gen_logits = gen(**feed).logits
        ours_disc = ElectraForPreTraining.from_pretrained(disc_dir).eval()(
            feed["input_ids"], feed["attention_mask"], feed["token_type_ids"]).logits
        ours_gen = ElectraForMaskedLM.from_pretrained(gen_dir).eval()(
            feed["input_ids"], feed["attention_mask"], feed["token_type_ids"]).logits
    _close(disc_logits, tf_out["disc_logits"], TF_TOL, "discriminator vs TF")
    _close(gen_logits, tf_out["gen_logits"], TF_TOL, "generator vs TF")
    _close(ours_disc, disc_logits.numpy(), SAME_TOL, "zhplm vs HF discriminator")
    _close(ours_gen, gen_logits.numpy(), SAME_TOL, "zhplm vs HF generator")
    # the shared embeddings are the same tensors in both directories
    a = transformers.ElectraModel.from_pretrained(disc_dir).embeddings.word_embeddings.weight
    b = gen.electra.embeddings.word_embeddings.weight
    assert torch.equal(a, b)


def test_lert_heads_equal_tensorflow_and_serve_fill_mask_linguistic(converted) -> None:
    from zhplm.data.annotate import lert_labels
    from zhplm.modeling.bert import BertForMaskedLM
    from zhplm.modeling.lert_heads import LABELS_FILE, LinguisticHeads
    from zhplm.pipelines import pipeline

    out, report = converted["lert"]
    assert report["lert_heads"] == {"pos": 28, "ner": 13, "dep": 14}
    assert report["unmapped"] == ["bert/pooler/dense/bias", "bert/pooler/dense/kernel"]
    tf_out, feed = _inputs(FIXTURES / "lert" / "lert_model.ckpt")
    model = BertForMaskedLM.from_pretrained(out).eval()
    heads = LinguisticHeads.from_pretrained(out)
    theirs = transformers.BertForMaskedLM.from_pretrained(out, attn_implementation="eager").eval()
    _close(torch.from_numpy(_attention(theirs, feed)), tf_out["attention_probs"],
           ATTENTION_TOL, "LERT attention probabilities vs TF")
    with torch.no_grad():
        hidden = model.bert(feed["input_ids"], feed["attention_mask"],
                            feed["token_type_ids"]).last_hidden_state
        tags = heads(model.cls.predictions.transform(hidden))
        hf_logits = theirs(**feed).logits
    _close(hidden, tf_out["sequence_output"], TF_TOL, "LERT sequence output vs TF")
    _close(hf_logits, tf_out["mlm_logits"], TF_TOL, "LERT MLM logits vs TF")
    for task in ("pos", "ner", "dep"):
        _close(tags[task], tf_out[f"{task}_logits"], TF_TOL, f"LERT {task} vs TF")
    labels = json.loads((out / LABELS_FILE).read_text(encoding="utf-8"))
    assert labels == lert_labels()
    fill = pipeline("fill-mask", model=out, linguistic=True, dtype="fp32", top_k=2)
    result = fill("我们[MASK]北京。")
    for task in ("pos", "ner", "dep"):
        assert len(result[task]) == 2
        assert all(t["label"] in lert_labels()[task] for t in result[task])


def test_sharded_checkpoint_converts(tmp_path: Path) -> None:
    config = json.loads((FIXTURES / "bert" / "bert_config.json").read_text(encoding="utf-8"))
    config.update(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2)
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    report = convert_tf(FIXTURES / "sharded" / "model.ckpt", tmp_path / "config.json",
                        tmp_path / "out", vocab=FIXTURES / "bert" / "vocab.txt")
    assert report["architecture"] == "BertForPreTraining" and report["unmapped"] == []
    transformers.BertForPreTraining.from_pretrained(tmp_path / "out")


def test_errors_name_what_disagrees(tmp_path: Path) -> None:
    bert = FIXTURES / "bert" / "bert_model.ckpt"
    config = json.loads((FIXTURES / "bert" / "bert_config.json").read_text(encoding="utf-8"))
    wrong = tmp_path / "wrong_config.json"
    wrong.write_text(json.dumps({**config, "intermediate_size": 48}), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        convert_tf(bert, wrong, tmp_path / "o", vocab=FIXTURES / "bert" / "vocab.txt")
    message = str(info.value)
    assert "intermediate/dense/kernel has shape [32, 64]" in message and str(wrong) in message
    short = tmp_path / "vocab.txt"
    short.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) + "\n",
                     encoding="utf-8")
    with pytest.raises(ConfigError, match="has 5 lines .* vocab_size 100"):
        convert_tf(bert, FIXTURES / "bert" / "bert_config.json", tmp_path / "o", vocab=short)
    with pytest.raises(CheckpointError, match="no electra/encoder variables"):
        convert_tf(bert, FIXTURES / "electra" / "discriminator.json", tmp_path / "o",
                   model="electra-discriminator", vocab=FIXTURES / "bert" / "vocab.txt")
    with pytest.raises(CheckpointError, match="not a LERT checkpoint"):
        convert_tf(bert, FIXTURES / "bert" / "bert_config.json", tmp_path / "o", model="lert")
    with pytest.raises(ConfigError, match="--config .* does not exist"):
        convert_tf(bert, tmp_path / "none.json", tmp_path / "o")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a model directory"):
        convert_tf(bert, FIXTURES / "bert" / "bert_config.json", mine)
    assert (mine / "notes.txt").read_text(encoding="utf-8") == "keep"
    assert not (tmp_path / "o").exists()


def test_a_damaged_checkpoint_stops_the_conversion(tmp_path: Path) -> None:
    for path in (FIXTURES / "bert").iterdir():
        shutil.copy(path, tmp_path / path.name)
    data = tmp_path / "bert_model.ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="fails its CRC-32C check"):
        convert_tf(tmp_path / "bert_model.ckpt", tmp_path / "bert_config.json",
                   tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_convert_tf(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "zhplm", "convert", "tf", "--checkpoint",
         str(FIXTURES / "electra" / "electra_tiny"), "--config",
         str(FIXTURES / "electra" / "generator.json"), "--model", "electra-generator",
         "--out", str(tmp_path / "gen")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["architecture"] == "ElectraForMaskedLM" and report["unmapped"] == []
    bad = subprocess.run(
        [sys.executable, "-m", "zhplm", "convert", "tf", "--checkpoint",
         str(FIXTURES / "bert" / "bert_model.ckpt"), "--config", str(tmp_path / "x.json"),
         "--out", str(tmp_path / "o")], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "x.json does not exist" in bad.stderr
