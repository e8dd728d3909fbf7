"""ELECTRA modeling: every class against transformers both ways, the discriminator/generator
pair and its shared embeddings, and clear errors for directories used the wrong way."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

from zhplm.config import ElectraConfig, ModelConfig, electra_preset, preset
from zhplm.errors import CheckpointError, ConfigError
from zhplm.finetuning import FinetuneConfig, run_finetune
from zhplm.modeling import BertForMaskedLM
from zhplm.modeling.auto import load_model
from zhplm.modeling.electra import (
    ElectraForMaskedLM,
    ElectraForPreTraining,
    ElectraForQuestionAnswering,
    ElectraForSequenceClassification,
    ElectraForTokenClassification,
    ElectraModel,
    ElectraPretrainingPair,
)
from zhplm.modeling.heads import with_labels
from zhplm.tasks.builtin import load_builtin
from zhplm.tokenization import Tokenizer

transformers.logging.set_verbosity_error()

HIDDEN = 64
EMBEDDING_SIZES = {"E<H": 32, "E=H": HIDDEN}


@pytest.fixture(scope="module")
def zh_tok(zh_vocab_dir: Path) -> Tokenizer:
    return Tokenizer.from_pretrained(zh_vocab_dir)


@pytest.fixture(scope="module")
def batch(zh_tok: Tokenizer) -> dict[str, torch.Tensor]:
    """Real review pairs (built-in data), padded, with segment B token types."""
    reviews = load_builtin("reviews-sentiment", "dev")[:8]
    first = [r.text_a[:n] for r, n in zip(reviews[::2], (40, 8, 25, 16), strict=True)]
    second = [r.text_a[:n] for r, n in zip(reviews[1::2], (6, 15, 3, 10), strict=True)]
    encoded = zh_tok(first, second, padding=True, truncation=True, max_length=64,
                     return_tensors="pt")
    assert (encoded["attention_mask"] == 0).any()  # padding present
    assert (encoded["token_type_ids"] == 1).any()  # a second segment present
    return {k: encoded[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


@pytest.fixture(scope="module")
def sentiment_labels() -> list[str]:
    return sorted({e.label for e in load_builtin("reviews-sentiment", "train")})


@pytest.fixture(scope="module")
def ner_labels() -> list[str]:
    return sorted({t for e in load_builtin("pd-ner", "dev") for t in e.tags})


def zh_config(vocab_size: int, embedding_size: int) -> ElectraConfig:
    return ElectraConfig(vocab_size=vocab_size, hidden_size=HIDDEN, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=128,
                         embedding_size=embedding_size)


def hf_config(vocab_size: int, embedding_size: int, **kwargs) -> transformers.ElectraConfig:
    return transformers.ElectraConfig(vocab_size=vocab_size, hidden_size=HIDDEN,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=128, embedding_size=embedding_size,
                                      **kwargs)


def perturb(model: torch.nn.Module, seed: int) -> None:
    """Move every parameter off its initial value (zero biases, unit LayerNorms), so that a
    weight that is not saved or not loaded shows in the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)


def outputs(out) -> list[torch.Tensor]:
    """The tensors a model returns: logits, start/end logits, or hidden states."""
    if hasattr(out, "start_logits"):
        return [out.start_logits, out.end_logits]
    if hasattr(out, "logits"):
        return [out.logits]
    return [out.last_hidden_state]


def max_diff(ours, theirs) -> float:
    pairs = list(zip(outputs(ours), outputs(theirs), strict=True))
    for a, b in pairs:
        assert a.shape == b.shape
    return max((a.float() - b.float()).abs().max().item() for a, b in pairs)


def no_loading_problems(info: dict) -> bool:
    return not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys",
                                     "error_msgs"))


# head name in zhplm.modeling.auto, zhplm class, transformers class, label kind
CLASSES = {
    "replaced-token-detection": (ElectraForPreTraining, transformers.ElectraForPreTraining),
    "masked-lm": (ElectraForMaskedLM, transformers.ElectraForMaskedLM),
    "sequence-classification": (ElectraForSequenceClassification,
                                transformers.ElectraForSequenceClassification),
    "regression": (ElectraForSequenceClassification,
                   transformers.ElectraForSequenceClassification),
    "token-classification": (ElectraForTokenClassification,
                             transformers.ElectraForTokenClassification),
    "question-answering": (ElectraForQuestionAnswering,
                           transformers.ElectraForQuestionAnswering),
    "encoder": (ElectraModel, transformers.ElectraModel),
}


def labelled(config: ElectraConfig, kind: str, sentiment: list[str], ner: list[str]
             ) -> ElectraConfig:
    if kind == "sequence-classification":
        return with_labels(config, sentiment)
    if kind == "token-classification":
        return with_labels(config, ner)
    if kind == "regression":
        return with_labels(config, [], regression=True)
    return config


@pytest.mark.parametrize("size", list(EMBEDDING_SIZES))
@pytest.mark.parametrize("kind", list(CLASSES))
def test_zhplm_directory_loads_in_transformers_with_identical_outputs(
        kind, size, zh_tok, batch, sentiment_labels, ner_labels, tmp_path):
    zh_class, hf_class = CLASSES[kind]
    config = labelled(zh_config(zh_tok.vocab_size, EMBEDDING_SIZES[size]), kind,
                      sentiment_labels, ner_labels)
    torch.manual_seed(0)
    model = zh_class(config).eval()
    perturb(model, seed=1)
    model.save_pretrained(tmp_path, tokenizer=zh_tok)
    saved = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert saved["architectures"] == [zh_class.__name__]
    assert saved["model_type"] == "electra"
    assert saved["embedding_size"] == EMBEDDING_SIZES[size]
    theirs, info = hf_class.from_pretrained(tmp_path, output_loading_info=True)
    assert no_loading_problems(info), info
    theirs.eval()
    if kind == "regression":
        assert theirs.config.num_labels == 1 and theirs.config.problem_type == "regression"
    if kind in ("sequence-classification", "token-classification"):
        expected = sentiment_labels if kind == "sequence-classification" else ner_labels
        assert [theirs.config.id2label[i] for i in range(len(expected))] == expected
    with torch.inference_mode():
        a = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        b = theirs(**batch)
    assert max_diff(a, b) <= 1e-5


@pytest.mark.parametrize("size", list(EMBEDDING_SIZES))
@pytest.mark.parametrize("kind", list(CLASSES))
def test_transformers_directory_loads_in_zhplm_with_identical_outputs(
        kind, size, zh_tok, batch, sentiment_labels, ner_labels, tmp_path, caplog):
    zh_class, hf_class = CLASSES[kind]
    labels = {"sequence-classification": sentiment_labels,
              "token-classification": ner_labels}.get(kind)
    extra: dict = {}
    if labels:
        extra = {"id2label": dict(enumerate(labels)),
                 "label2id": {label: i for i, label in enumerate(labels)}}
    if kind == "regression":
        extra = {"num_labels": 1, "problem_type": "regression"}
    torch.manual_seed(0)
    theirs = hf_class(hf_config(zh_tok.vocab_size, EMBEDDING_SIZES[size], **extra)).eval()
    perturb(theirs, seed=2)
    theirs.save_pretrained(tmp_path)
    zh_tok.save_pretrained(tmp_path)
    head = "sequence-classification" if kind == "regression" else kind
    with caplog.at_level(logging.INFO, logger="zhplm"):
        ours = load_model(tmp_path, head)
    assert type(ours) is zh_class
    assert "newly initialised" not in caplog.text and "ignored weights" not in caplog.text
    assert not ours.training
    if labels:
        assert [ours.config.extra["id2label"][str(i)] for i in range(len(labels))] == labels
    with torch.inference_mode():
        a = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        b = theirs(**batch)
    assert max_diff(a, b) <= 1e-5


# ---- the discriminator/generator pair -----------------------------------------------------------
EMBEDDING_KEYS = ("word_embeddings.weight", "position_embeddings.weight",
                  "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias")


def assert_shared(pair: ElectraPretrainingPair) -> None:
    disc = pair.discriminator.electra.embeddings.state_dict(keep_vars=True)
    gen = pair.generator.electra.embeddings.state_dict(keep_vars=True)
    for key in EMBEDDING_KEYS:
        assert gen[key].data_ptr() == disc[key].data_ptr(), key
    word = disc["word_embeddings.weight"]
    assert pair.generator.generator_lm_head.weight.data_ptr() == word.data_ptr()
    # One set of tensors: counted once in the pair's parameters.
    assert pair.num_parameters() == pair.discriminator.num_parameters() + sum(
        p.numel() for n, p in pair.generator.named_parameters()
        if not n.startswith("electra.embeddings."))


@pytest.fixture(scope="module")
def pair_dir(zh_tok, tmp_path_factory) -> tuple[Path, ElectraPretrainingPair]:
    """electra-tiny (discriminator E=H=128, generator H=32 with embeddings_project) with the
    built-in vocab, its weights moved off their init, saved."""
    disc, gen = electra_preset("electra-tiny", vocab_size=zh_tok.vocab_size)
    assert disc.embedding_size == gen.embedding_size != gen.hidden_size
    torch.manual_seed(0)
    pair = ElectraPretrainingPair(disc, gen).eval()
    assert_shared(pair)
    perturb(pair, seed=3)
    assert_shared(pair)
    out = tmp_path_factory.mktemp("electra_pair")
    pair.save_pretrained(out, tokenizer=zh_tok)
    return out, pair


def test_pair_saves_two_hf_directories_with_identical_embeddings(pair_dir):
    out, _ = pair_dir
    assert sorted(p.name for p in out.iterdir()) == ["discriminator", "generator"]
    disc = load_file(out / "discriminator" / "model.safetensors")
    gen = load_file(out / "generator" / "model.safetensors")
    for key in EMBEDDING_KEYS:
        assert torch.equal(disc[f"electra.embeddings.{key}"], gen[f"electra.embeddings.{key}"])
    assert "electra.embeddings_project.weight" in gen  # generator: 128 -> 32
    assert "electra.embeddings_project.weight" not in disc  # discriminator: 128 = 128
    assert "generator_lm_head.bias" in gen
    for name, arch in (("discriminator", "ElectraForPreTraining"),
                       ("generator", "ElectraForMaskedLM")):
        config = json.loads((out / name / "config.json").read_text(encoding="utf-8"))
        assert config["architectures"] == [arch]
        assert (out / name / "vocab.txt").is_file()


def test_pair_reloads_with_shared_embeddings_and_the_same_outputs(pair_dir, batch):
    out, pair = pair_dir
    loaded = ElectraPretrainingPair.from_pretrained(out)
    assert_shared(loaded)
    args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    with torch.inference_mode():
        assert max_diff(loaded.discriminator.eval()(*args), pair.discriminator(*args)) == 0
        assert max_diff(loaded.generator.eval()(*args), pair.generator(*args)) == 0
    # One tensor really: a change through the discriminator is seen by the generator.
    with torch.no_grad():
        loaded.discriminator.electra.embeddings.word_embeddings.weight[7].fill_(0.5)
    assert torch.equal(loaded.generator.generator_lm_head.weight[7], torch.full((128,), 0.5))


def test_pair_towers_load_in_transformers_with_tied_generator_head(pair_dir, batch):
    out, pair = pair_dir
    generator, info = transformers.ElectraForMaskedLM.from_pretrained(
        out / "generator", output_loading_info=True)
    assert no_loading_problems(info), info
    generator.eval()
    word = generator.electra.embeddings.word_embeddings.weight
    assert generator.generator_lm_head.weight.data_ptr() == word.data_ptr()  # tied
    assert torch.equal(word, pair.embeddings.word_embeddings.weight)
    discriminator, info = transformers.ElectraForPreTraining.from_pretrained(
        out / "discriminator", output_loading_info=True)
    assert no_loading_problems(info), info
    discriminator.eval()
    args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    with torch.inference_mode():
        assert max_diff(pair.generator(*args), generator(**batch)) <= 1e-5
        assert max_diff(pair.discriminator(*args), discriminator(**batch)) <= 1e-5


# ---- bad input ----------------------------------------------------------------------------------
def test_pair_with_different_embedding_sizes_is_refused(zh_tok, pair_dir, tmp_path):
    disc, gen = electra_preset("electra-tiny", vocab_size=zh_tok.vocab_size)
    with pytest.raises(ConfigError, match="embedding_size=64 but discriminator "
                                          "embedding_size=128"):
        ElectraPretrainingPair(disc, gen.replace(embedding_size=64))
    out, pair = pair_dir
    pair.save_pretrained(tmp_path / "edited")
    path = tmp_path / "edited" / "generator" / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["embedding_size"] = 64
    path.write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(CheckpointError, match="edited: generator embedding_size=64 but "
                                              "discriminator embedding_size=128"):
        ElectraPretrainingPair.from_pretrained(tmp_path / "edited")


def test_bert_directory_is_not_an_electra_discriminator(zh_tok, tmp_path):
    BertForMaskedLM(preset("tiny", vocab_size=zh_tok.vocab_size)).save_pretrained(
        tmp_path, tokenizer=zh_tok)
    with pytest.raises(CheckpointError, match="model_type='bert' cannot be loaded as "
                                              "ElectraForPreTraining"):
        ElectraForPreTraining.from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="replaced-token detection needs an ELECTRA "
                                          "discriminator"):
        load_model(tmp_path, "replaced-token-detection")


def test_generator_given_for_fine_tuning_points_to_the_discriminator(pair_dir, tmp_path):
    out, _ = pair_dir
    config = FinetuneConfig(task="reviews-sentiment", model=str(out / "generator"),
                            output_dir=str(tmp_path / "run"), epochs=1,
                            max_train_examples=32, progress=False)
    with pytest.raises(ConfigError) as err:
        run_finetune(config)
    message = str(err.value)
    assert "ELECTRA generator" in message and "use" in message
    assert str(out / "discriminator") in message
    assert not (tmp_path / "run" / "results.json").exists()
    with pytest.raises(ConfigError, match="uses the discriminator"):
        load_model(out / "generator", "replaced-token-detection")
    with pytest.raises(ConfigError, match="use the generator directory for fill-mask"):
        load_model(out / "discriminator", "masked-lm")


def test_pair_directory_as_one_model_names_both_towers(pair_dir):
    out, _ = pair_dir
    with pytest.raises(CheckpointError) as err:
        ModelConfig.from_pretrained(out)
    message = str(err.value)
    assert str(out / "discriminator") in message and str(out / "generator") in message
    with pytest.raises(CheckpointError, match="ELECTRA pair"):
        load_model(out, "sequence-classification")
