"""ModelScope StructBERT directories (`nlp_structbert_backbone_base_std` layout): read as BERT,
fine-tuned through `build_trainer` with the model card's `cfg_modify_fn`, saved so that
transformers loads the result."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
import transformers

from zhplm.config import ModelConfig, preset
from zhplm.finetuning import FinetuneConfig, build_trainer, load_examples
from zhplm.modeling import BertModel
from zhplm.modeling.auto import ENCODER, FAMILY_OF_MODEL_TYPE, load_model
from zhplm.modeling.heads import BertForSequenceClassification
from zhplm.tasks.builtin import load_builtin
from zhplm.tokenization import Tokenizer

transformers.logging.set_verbosity_error()

# ModelScope's configuration.json of a StructBERT backbone (task/pipeline/train settings that
# zhplm reads nothing from).
CONFIGURATION = {
    "framework": "pytorch",
    "task": "backbone",
    "model": {"type": "structbert"},
    "pipeline": {"type": "sentence-similarity"},
    "preprocessor": {"type": "sen-sim-tokenizer", "first_sequence": "sentence1",
                     "second_sequence": "sentence2"},
    "train": {"work_dir": "/tmp", "max_epochs": 10,
              "dataloader": {"batch_size_per_gpu": 32, "workers_per_gpu": 1},
              "optimizer": {"type": "AdamW", "lr": 2e-5},
              "lr_scheduler": {"type": "LinearLR", "start_factor": 1.0, "end_factor": 0.0,
                               "total_iters": 100, "options": {"by_epoch": False}},
              "hooks": [{"type": "CheckpointHook", "interval": 1}]},
    "evaluation": {"dataloader": {"batch_size_per_gpu": 32}, "metrics": ["seq-cls-metric"]},
}


@pytest.fixture(scope="module")
def tiny_encoder(zh_vocab_dir, tmp_path_factory) -> Path:
    """A randomly initialised tiny BERT encoder saved by zhplm."""
    out = tmp_path_factory.mktemp("tiny_encoder")
    tokenizer = Tokenizer.from_pretrained(zh_vocab_dir)
    torch.manual_seed(0)
    BertModel(preset("tiny", vocab_size=tokenizer.vocab_size)).save_pretrained(
        out, tokenizer=tokenizer)
    return out


@pytest.fixture(scope="module")
def structbert_dir(tiny_encoder, tmp_path_factory) -> Path:
    """The tiny encoder in ModelScope's layout: config.json (model_type structbert),
    configuration.json, pytorch_model.bin with TF-era gamma/beta and no `bert.` prefix,
    vocab.txt only."""
    out = tmp_path_factory.mktemp("nlp_structbert_backbone_tiny_std")
    encoder = load_model(tiny_encoder, ENCODER)
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma")
              .replace("LayerNorm.bias", "LayerNorm.beta"): v.clone()
             for k, v in encoder.state_dict().items()}
    assert any(k.endswith("LayerNorm.gamma") for k in state)
    assert not any(k.startswith("bert.") for k in state)
    torch.save(state, out / "pytorch_model.bin")
    config = json.loads((tiny_encoder / "config.json").read_text())
    config.pop("architectures", None)
    config["model_type"] = "structbert"
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "configuration.json").write_text(json.dumps(CONFIGURATION, indent=2))
    shutil.copyfile(tiny_encoder / "vocab.txt", out / "vocab.txt")
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def pair_rows(split: str, n: int, keys=("sentence1", "sentence2", "label")) -> list[dict]:
    """AFQMC-like pairs from the built-in reviews: label "1" when both share a sentiment."""
    reviews = load_builtin("reviews-sentiment", split)[: 2 * n]
    first, second, label = keys
    return [{first: a.text_a[:60], second: b.text_a[:60], label: str(int(a.label == b.label))}
            for a, b in zip(reviews[::2], reviews[1::2], strict=True)]


def card_cfg_modify_fn(train_dataset):
    """The StructBERT sentence-similarity model card's hook, unchanged but for the data."""

    def cfg_modify_fn(cfg):
        cfg.task = 'sentence-similarity'
        cfg['preprocessor'] = {'type': 'sen-sim-tokenizer'}
        cfg.train.optimizer.lr = 2e-5
        cfg.train.max_epochs = 2
        cfg['dataset'] = {
            'train': {
                'labels': ['0', '1'],
                'first_sequence': 'sentence1',
                'second_sequence': 'sentence2',
                'label': 'label',
            }
        }
        cfg.train.lr_scheduler.total_iters = int(len(train_dataset) / 32) * \
            cfg.train.max_epochs
        return cfg

    return cfg_modify_fn


def test_structbert_config_reads_as_bert(structbert_dir):
    assert FAMILY_OF_MODEL_TYPE["structbert"] == "bert"
    config = ModelConfig.from_pretrained(structbert_dir)
    assert type(config) is ModelConfig
    assert config.model_type == "bert"
    assert config.extra["original_model_type"] == "structbert"
    saved = config.to_dict()
    assert (saved["model_type"], saved["original_model_type"]) == ("bert", "structbert")
    # Why "bert" is written: transformers 5 does not know the name.
    with pytest.raises(ValueError, match="structbert"):
        transformers.AutoConfig.from_pretrained(structbert_dir)


def test_structbert_dir_loads_with_identical_hidden_states(structbert_dir, tiny_encoder):
    original = load_model(tiny_encoder, ENCODER)
    loaded = load_model(structbert_dir, ENCODER)
    ids = torch.randint(5, original.config.vocab_size, (2, 12), generator=torch.Generator()
                        .manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    with torch.no_grad():
        expected = original(input_ids=ids, attention_mask=mask)
        got = loaded(input_ids=ids, attention_mask=mask)
    expected = expected[0] if isinstance(expected, tuple) else expected.last_hidden_state
    got = got[0] if isinstance(got, tuple) else got.last_hidden_state
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # Under a classification head the bare encoder keys go under `bert.` (head new).
    head = BertForSequenceClassification.from_pretrained(structbert_dir)
    torch.testing.assert_close(head.bert.embeddings.LayerNorm.weight,
                               original.embeddings.LayerNorm.weight, rtol=0, atol=0)


def test_card_dataset_keys_are_the_field_map(structbert_dir, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl",
                        pair_rows("train", 8, ("query", "candidate", "gold")))

    def cfg_modify_fn(cfg):
        cfg.task = 'sentence-similarity'
        cfg['preprocessor'] = {'type': 'sen-sim-tokenizer'}
        cfg.train.optimizer.lr = 2e-5
        cfg.train.max_epochs = 2
        cfg.train.dataloader.batch_size_per_gpu = 16
        cfg['dataset'] = {'train': {'labels': ['0', '1'], 'first_sequence': 'query',
                                    'second_sequence': 'candidate', 'label': 'gold'}}
        assert cfg.dataset.train.first_sequence == 'query'
        assert cfg.train == str(train)  # still the train file
        return cfg

    cfg = build_trainer(model=str(structbert_dir), train=str(train), progress=False,
                        cfg_modify_fn=cfg_modify_fn, work_dir=tmp_path / "work").config
    assert type(cfg) is FinetuneConfig
    assert (cfg.task, cfg.lr, cfg.epochs, cfg.batch_size) == ("pair", 2e-5, 2, 16)
    assert cfg.labels == ["0", "1"]
    assert cfg.fields == {"first_sequence": "query", "second_sequence": "candidate",
                          "label": "gold"}
    examples = load_examples(cfg, "train")
    assert len(examples) == 8
    assert examples[0].text_b and examples[0].label in ("0", "1")


def test_card_cfg_modify_fn_fine_tunes_structbert(structbert_dir, tmp_path):
    rows = pair_rows("train", 256)
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    dev = write_jsonl(tmp_path / "dev.jsonl", pair_rows("dev", 64))
    trainer = build_trainer(model=str(structbert_dir), task="pair", train=str(train),
                            dev=str(dev), max_seq_length=64, progress=False,
                            cfg_modify_fn=card_cfg_modify_fn(rows),
                            work_dir=tmp_path / "work")
    assert (trainer.config.lr, trainer.config.epochs) == (2e-5, 2)
    assert trainer.config.labels == ["0", "1"]
    results = trainer.train()
    assert results["steps"] == 16  # 256 pairs / 32, two epochs
    assert 0.0 <= results["dev"]["accuracy"] <= 1.0
    best = tmp_path / "work" / "best"
    saved = json.loads((best / "config.json").read_text())
    assert saved["model_type"] == "bert"
    assert saved["original_model_type"] == "structbert"
    assert saved["architectures"] == ["BertForSequenceClassification"]

    ours = BertForSequenceClassification.from_pretrained(best)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(handler)
    transformers.logging.set_verbosity_warning()
    try:
        theirs = transformers.BertForSequenceClassification.from_pretrained(best)
    finally:
        transformers.logging.set_verbosity_error()
        hf_logger.removeHandler(handler)
    assert not [r for r in records if "model of type" in r.getMessage()], \
        [r.getMessage() for r in records]
    assert transformers.AutoConfig.from_pretrained(best).model_type == "bert"
    theirs.eval()
    tokenizer = transformers.BertTokenizer.from_pretrained(best)
    enc = tokenizer(["这个手机很好用"], ["质量太差了"], return_tensors="pt")
    with torch.no_grad():
        expected = theirs(**enc).logits
        got = ours(**enc)
    got = got[0] if isinstance(got, tuple) else got.logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
