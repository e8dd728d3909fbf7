"""UER-py <-> HF conversion on real UER-py checkpoints (tests/fixtures/uer, written by UER-py's
own pretrain.py; see make_uer_fixture.py). UER-py itself is not needed here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from zhplm.cli import main
from zhplm.config import ModelConfig
from zhplm.convert.uer import OLD_PREFIXES, hf_to_uer, uer_to_hf
from zhplm.errors import ConfigError, ZhplmError
from zhplm.modeling.bert import BertForMaskedLM, BertForPreTraining

FIXTURES = Path(__file__).parent / "fixtures" / "uer"
VOCAB = FIXTURES / "vocab.txt"
KINDS = ("mlm", "bert")
HEADS = 2  # the fixtures' UER config (heads_num); hidden 32 is below UER's 64 per head


def fixture_state(kind: str) -> dict[str, torch.Tensor]:
    return torch.load(FIXTURES / kind / "model.bin", map_location="cpu", weights_only=True)


def fixture_logits(kind: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / kind / "logits.npz") as data:
        return {k: data[k] for k in data.files}


def fixture_sentences(kind: str) -> list[str]:
    return [str(s) for s in fixture_logits(kind)["sentences"]]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    out = {}
    for kind in KINDS:
        target = tmp_path_factory.mktemp("uer2hf") / kind
        report = uer_to_hf(FIXTURES / kind / "model.bin", VOCAB, target, layers=2, kind=kind,
                           heads=HEADS)
        out[kind] = (target, report)
    return out


def run_uer_inputs(model: Any, kind: str, transformers_model: bool = False
                   ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """The model's MLM (and NSP) logits on the fixture's token ids (UER segments 1/2 ->
    token types 0/1)."""
    data = fixture_logits(kind)
    out = []
    with torch.no_grad():
        for i in range(len(data["sentences"])):
            ids = torch.tensor(data[f"input_ids_{i}"])[None]
            types = torch.tensor(data[f"segment_ids_{i}"])[None] - 1
            if transformers_model:
                res = model(input_ids=ids, token_type_ids=types)
            else:
                res = model(ids, torch.ones_like(ids), types)
            if kind == "bert":
                out.append((res.prediction_logits[0], res.seq_relationship_logits[0]))
            else:
                out.append((res.logits[0], None))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_uer_layer_norm_reproduces_uer_py(converted: dict, kind: str) -> None:
    model_dir, _ = converted[kind]
    config = ModelConfig.from_pretrained(model_dir).replace(layer_norm_type="uer")
    cls = BertForPreTraining if kind == "bert" else BertForMaskedLM
    model = cls.from_pretrained(model_dir, config=config)
    data = fixture_logits(kind)
    for i, (mlm, sp) in enumerate(run_uer_inputs(model, kind)):
        np.testing.assert_allclose(mlm.numpy(), data[f"mlm_logits_{i}"], rtol=0, atol=1e-5)
        if kind == "bert":
            np.testing.assert_allclose(sp.numpy(), data[f"sp_logits_{i}"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_transformers_loads_and_stays_within_measured_drift(converted: dict, kind: str) -> None:
    transformers = pytest.importorskip("transformers")
    model_dir, report = converted[kind]
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "bert" and config["layer_norm_eps"] == 1e-6
    assert "layer_norm_type" not in config  # plain HF by default
    cls = transformers.BertForPreTraining if kind == "bert" else transformers.BertForMaskedLM
    model = cls.from_pretrained(model_dir).eval()
    drift = report["drift"]["max_abs_logit_diff"]
    assert drift > 0
    data = fixture_logits(kind)
    worst = 0.0
    for i, (mlm, _) in enumerate(run_uer_inputs(model, kind, transformers_model=True)):
        worst = max(worst, float(np.abs(mlm.numpy() - data[f"mlm_logits_{i}"]).max()))
    assert 0 < worst <= drift + 1e-5, (worst, drift)
    # Measured on the fixture's own sentences, the reported drift is exactly that difference.
    again = uer_to_hf(FIXTURES / kind / "model.bin", VOCAB, model_dir.parent / f"{kind}-again",
                      layers=2, kind=kind, heads=HEADS,
                      drift_sentences=fixture_sentences(kind))["drift"]
    assert again["max_abs_logit_diff"] == pytest.approx(worst, abs=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_report_maps_every_key(converted: dict, kind: str) -> None:
    _, report = converted[kind]
    assert report["unmapped"] == []
    assert set(report["mapped"]) == set(fixture_state(kind))
    assert report["architecture"] == ("BertForPreTraining" if kind == "bert" else
                                      "BertForMaskedLM")


@pytest.mark.parametrize("kind", KINDS)
def test_hf2uer_round_trips_the_uer_state_dict(converted: dict, kind: str, tmp_path: Path
                                               ) -> None:
    model_dir, _ = converted[kind]
    out = tmp_path / "model.bin"
    report = hf_to_uer(model_dir, out, kind=kind)
    written = torch.load(out, map_location="cpu", weights_only=True)
    original = fixture_state(kind)
    # Same key set and shapes: UER-py's model class loads it with strict=True.
    assert list(written) == list(original) == report["keys"]
    for key, tensor in original.items():
        assert written[key].shape == tensor.shape, key
        if key == "embedding.seg.embedding.weight":
            assert torch.equal(written[key][1:], tensor[1:])
            assert not written[key][0].any()  # row 0 = padding segment, zeros
        else:
            assert torch.equal(written[key], tensor), key
    assert written["target.mlm.linear_2.weight"].data_ptr() == \
        written["embedding.word.embedding.weight"].data_ptr()  # tied, as UER-py saves it
    assert report["uer_config"]["heads_num"] == HEADS


def test_hf2uer_bert_needs_the_nsp_head(converted: dict, tmp_path: Path) -> None:
    model_dir, _ = converted["mlm"]
    with pytest.raises(ZhplmError, match="--type mlm"):
        hf_to_uer(model_dir, tmp_path / "model.bin", kind="bert")


@pytest.mark.parametrize("kind", KINDS)
def test_older_uer_names_are_accepted(converted: dict, kind: str, tmp_path: Path) -> None:
    reverse = {new: old for old, new in OLD_PREFIXES}
    if kind == "bert":
        reverse["target.sp.linear_1."] = "target.nsp_linear_1."  # the 2019-2021 names
        reverse["target.sp.linear_2."] = "target.nsp_linear_2."
    old_state = {}
    for key, tensor in fixture_state(kind).items():
        for new, old in reverse.items():
            if key.startswith(new):
                key = old + key[len(new):]
                break
        old_state[key] = tensor
    assert "embedding.word_embedding.weight" in old_state
    assert "target.mlm_linear_1.weight" in old_state and "target.layer_norm.gamma" in old_state
    path = tmp_path / "old.bin"
    torch.save(old_state, path)
    report = uer_to_hf(path, VOCAB, tmp_path / "hf", layers=2, kind=kind, heads=HEADS)
    assert report["unmapped"] == [] and len(report["renamed_old_names"]) > 5
    from safetensors.torch import load_file

    new = load_file(tmp_path / "hf" / "model.safetensors")
    ref = load_file(converted[kind][0] / "model.safetensors")
    assert new.keys() == ref.keys()
    assert all(torch.equal(new[k], ref[k]) for k in ref)


def test_wrong_layers_names_both(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--layers 3 .*2 layers.*--layers 2"):
        uer_to_hf(FIXTURES / "mlm" / "model.bin", VOCAB, tmp_path / "o", layers=3, heads=HEADS)


def test_vocab_size_mismatch_names_file_and_numbers(tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(VOCAB.read_text(encoding="utf-8").splitlines(keepends=True)[:250]),
                     encoding="utf-8")
    with pytest.raises(ZhplmError, match=rf"{vocab}.*250 lines.*300 word embedding rows"):
        uer_to_hf(FIXTURES / "mlm" / "model.bin", vocab, tmp_path / "o", layers=2, heads=HEADS)
    assert not (tmp_path / "o").exists()


def test_heads_must_divide_hidden(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--heads"):
        uer_to_hf(FIXTURES / "mlm" / "model.bin", VOCAB, tmp_path / "o", layers=2)


def test_bert_type_on_an_mlm_model_says_use_mlm(tmp_path: Path) -> None:
    with pytest.raises(ZhplmError, match="--type mlm"):
        uer_to_hf(FIXTURES / "mlm" / "model.bin", VOCAB, tmp_path / "o", layers=2,
                  kind="bert", heads=HEADS)


@pytest.mark.parametrize("content", ["corrupt", "not-a-dict", "pickled-object"])
def test_unreadable_inputs_are_clear_errors(tmp_path: Path, content: str) -> None:
    path = tmp_path / "model.bin"
    if content == "corrupt":
        data = (FIXTURES / "mlm" / "model.bin").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "not-a-dict":
        torch.save([torch.zeros(2)], path)
    else:
        torch.save({"args": argparse_namespace()}, path)
    with pytest.raises(ZhplmError, match=rf"--input {path}: .*(state dict|model\.bin)"):
        uer_to_hf(path, VOCAB, tmp_path / "o", layers=2, heads=HEADS)


def argparse_namespace() -> Any:
    import argparse

    return argparse.Namespace(a=1)


def test_cli_uer2hf_prints_the_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    code = main(["convert", "uer2hf", "--input", str(FIXTURES / "bert" / "model.bin"),
                 "--vocab", str(VOCAB), "--out", str(tmp_path / "hf"), "--layers", "2",
                 "--heads", "2", "--type", "bert"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["drift"]["max_abs_logit_diff"] > 0
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    code = main(["convert", "hf2uer", "--model", str(tmp_path / "hf"), "--out",
                 str(tmp_path / "back.bin"), "--type", "bert"])
    assert code == 0
    assert set(torch.load(tmp_path / "back.bin", weights_only=True)) == \
        set(fixture_state("bert"))


def test_layer_norm_type_is_saved_only_when_not_default(tmp_path: Path) -> None:
    config = ModelConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64)
    assert "layer_norm_type" not in config.to_dict()
    uer = config.replace(layer_norm_type="uer")
    uer.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["layer_norm_type"] == "uer"
    assert ModelConfig.from_pretrained(tmp_path).layer_norm_type == "uer"
    with pytest.raises(ConfigError, match="layer_norm_type"):
        config.replace(layer_norm_type="rms")


def test_out_holding_the_input_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "work"
    shutil.copytree(FIXTURES / "mlm", work)
    shutil.copy(FIXTURES / "vocab.txt", work / "vocab.txt")
    (work / "notes.txt").write_text("keep", encoding="utf-8")
    with pytest.raises(ConfigError, match="holds the input"):
        uer_to_hf(work / "model.bin", work / "vocab.txt", work, layers=2, heads=HEADS)
    assert (work / "model.bin").is_file() and (work / "notes.txt").is_file()
