"""BERT modeling: numerical parity with transformers, HF checkpoint round trips, bad checkpoints."""

import json
import logging
import pickle

import pytest
import torch
import transformers
from safetensors.torch import save_file

from zhplm.config import preset
from zhplm.errors import CheckpointError
from zhplm.modeling import BertForMaskedLM, BertForPreTraining, BertModel
from zhplm.modeling.pretrained import load_state_dict

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "BERT encoders map text to contextual vectors.",
    "Hi!",
    "Numbers like 3.14159 and words like antidisestablishmentarianism are split into pieces.",
]


@pytest.fixture(scope="module")
def minilm_pair(minilm_dir):
    ours = BertModel.from_pretrained(minilm_dir)
    theirs = transformers.BertModel.from_pretrained(minilm_dir, attn_implementation="sdpa")
    tokenizer = transformers.BertTokenizer.from_pretrained(minilm_dir)
    return ours, theirs.eval(), tokenizer


def _compare(ours, theirs, batch):
    with torch.inference_mode():
        a = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        b = theirs(**batch)
    real = batch["attention_mask"].bool()
    hidden_diff = (a.last_hidden_state - b.last_hidden_state)[real].abs().max().item()
    pooled_diff = (a.pooler_output - b.pooler_output).abs().max().item()
    return hidden_diff, pooled_diff


def test_minilm_single_sentences_match_transformers(minilm_pair):
    ours, theirs, tokenizer = minilm_pair
    for text in SENTENCES:
        hidden, pooled = _compare(ours, theirs, tokenizer(text, return_tensors="pt"))
        assert hidden <= 1e-5 and pooled <= 1e-5, text


def test_minilm_pairs_match_transformers(minilm_pair):
    ours, theirs, tokenizer = minilm_pair
    batch = tokenizer(SENTENCES[:2], SENTENCES[2:], padding=True, return_tensors="pt")
    assert batch["token_type_ids"].sum() > 0
    hidden, pooled = _compare(ours, theirs, batch)
    assert hidden <= 1e-5 and pooled <= 1e-5


def test_minilm_padded_batch_matches_transformers_and_unpadded(minilm_pair):
    ours, theirs, tokenizer = minilm_pair
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()
    hidden, pooled = _compare(ours, theirs, batch)
    assert hidden <= 1e-5 and pooled <= 1e-5
    # Padding must not change the real tokens' states.
    alone = tokenizer(SENTENCES[2], return_tensors="pt")
    with torch.inference_mode():
        single = ours(**alone).last_hidden_state[0]
        padded = ours(batch["input_ids"], batch["attention_mask"]).last_hidden_state[2]
    assert (single - padded[: single.shape[0]]).abs().max() <= 1e-5


def _tiny_inputs(vocab_size, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (3, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    types = torch.zeros_like(ids)
    types[:, 6:] = 1
    return ids, mask, types


def test_zhplm_pretraining_checkpoint_loads_in_transformers(tmp_path):
    torch.manual_seed(0)
    model = BertForPreTraining(preset("tiny", vocab_size=500)).eval()
    model.save_pretrained(tmp_path)
    theirs = transformers.BertForPreTraining.from_pretrained(tmp_path).eval()
    ids, mask, types = _tiny_inputs(500)
    with torch.inference_mode():
        a = model(ids, mask, types)
        b = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types)
    assert (a.prediction_logits - b.prediction_logits).abs().max() <= 1e-5
    assert (a.seq_relationship_logits - b.seq_relationship_logits).abs().max() <= 1e-5
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [
        "BertForPreTraining"
    ]


def test_zhplm_mlm_checkpoint_loads_in_transformers(tmp_path):
    torch.manual_seed(1)
    model = BertForMaskedLM(preset("tiny", vocab_size=400)).eval()
    with torch.no_grad():  # a non-zero bias proves the bias is saved and used
        model.cls.predictions.bias.normal_()
    model.save_pretrained(tmp_path)
    theirs = transformers.BertForMaskedLM.from_pretrained(tmp_path).eval()
    ids, mask, types = _tiny_inputs(400)
    with torch.inference_mode():
        diff = (model(ids, mask, types).logits - theirs(input_ids=ids, attention_mask=mask,
                                                        token_type_ids=types).logits)
    assert diff.abs().max() <= 1e-5


def test_transformers_checkpoint_loads_in_zhplm(tmp_path):
    torch.manual_seed(2)
    config = transformers.BertConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=128)
    theirs = transformers.BertForPreTraining(config).eval()
    theirs.save_pretrained(tmp_path)
    ours = BertForPreTraining.from_pretrained(tmp_path)
    mlm = BertForMaskedLM.from_pretrained(tmp_path)
    ids, mask, types = _tiny_inputs(300)
    with torch.inference_mode():
        b = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types)
        a = ours(ids, mask, types)
        m = mlm(ids, mask, types)
    assert (a.prediction_logits - b.prediction_logits).abs().max() <= 1e-5
    assert (a.seq_relationship_logits - b.seq_relationship_logits).abs().max() <= 1e-5
    assert (m.logits - b.prediction_logits).abs().max() <= 1e-5


def test_old_key_variants_load(tmp_path, caplog):
    """TF-era gamma/beta names, stored position_ids, no pooler, a .bin file."""
    torch.manual_seed(3)
    reference = BertModel(preset("tiny", vocab_size=200)).eval()
    state = {}
    for key, tensor in reference.state_dict().items():
        if key.startswith("pooler."):
            continue
        key = key.replace("LayerNorm.weight", "LayerNorm.gamma")
        key = key.replace("LayerNorm.bias", "LayerNorm.beta")
        state[f"bert.{key}"] = tensor.clone()
    state["bert.embeddings.position_ids"] = torch.arange(512)[None]
    reference.config.save_pretrained(tmp_path)
    torch.save(state, tmp_path / "pytorch_model.bin")
    with caplog.at_level(logging.WARNING, logger="zhplm"):
        loaded = BertModel.from_pretrained(tmp_path)
    assert "pooler" in caplog.text  # newly initialised, and said so
    ids, mask, _ = _tiny_inputs(200)
    with torch.inference_mode():
        diff = loaded(ids, mask).last_hidden_state - reference(ids, mask).last_hidden_state
    assert diff.abs().max() == 0


def test_bare_encoder_checkpoint_under_mlm_head(minilm_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="zhplm"):
        model = BertForMaskedLM.from_pretrained(minilm_dir)
    assert "cls.predictions" in caplog.text
    encoder = BertModel.from_pretrained(minilm_dir)
    assert torch.equal(model.bert.encoder.layer[5].output.dense.weight,
                       encoder.encoder.layer[5].output.dense.weight)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    model = BertForMaskedLM(preset("tiny", vocab_size=100))
    model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_init_follows_bert(tmp_path):
    torch.manual_seed(0)
    model = BertForPreTraining(preset("mini", vocab_size=5000))
    weight = model.bert.encoder.layer[0].intermediate.dense.weight
    assert abs(weight.std().item() - 0.02) < 0.001
    assert torch.equal(model.bert.encoder.layer[0].output.LayerNorm.weight,
                       torch.ones(256))
    assert model.bert.embeddings.word_embeddings.weight[0].abs().sum() == 0  # [PAD] row
    assert model.cls.predictions.bias.abs().sum() == 0


# ---- bad checkpoints ------------------------------------------------------------------------
def test_missing_directory_and_config(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        BertModel.from_pretrained(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no config.json"):
        BertModel.from_pretrained(tmp_path)


def test_missing_weights_lists_what_is_there(tmp_path):
    preset("tiny", vocab_size=100).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="no weights found.*config.json"):
        BertModel.from_pretrained(tmp_path)


def test_corrupt_safetensors_names_the_file(tmp_path):
    BertModel(preset("tiny", vocab_size=100)).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors.*corrupt"):
        BertModel.from_pretrained(tmp_path)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_untrusted_pickle_is_refused(tmp_path):
    preset("tiny", vocab_size=100).save_pretrained(tmp_path)
    with open(tmp_path / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"weights": _Payload()}, handle, protocol=2)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_state_dict(tmp_path)


def test_vocab_larger_than_config_is_refused(tmp_path):
    BertModel(preset("tiny", vocab_size=100)).save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("\n".join(f"tok{i}" for i in range(150)) + "\n")
    with pytest.raises(CheckpointError, match="150 entries.*vocab_size=100"):
        BertModel.from_pretrained(tmp_path)


def test_shape_mismatch_names_weight_and_fix(tmp_path):
    BertModel(preset("tiny", vocab_size=100)).save_pretrained(tmp_path)
    preset("tiny", vocab_size=120).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="word_embeddings.*vocab_size"):
        BertModel.from_pretrained(tmp_path)


def test_foreign_weights_are_refused(tmp_path):
    preset("tiny", vocab_size=100).save_pretrained(tmp_path)
    save_file({"linear.weight": torch.zeros(2, 2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="encoder weights are missing"):
        BertModel.from_pretrained(tmp_path)
