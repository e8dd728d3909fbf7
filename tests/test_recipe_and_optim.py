"""Recipe loading (YAML + overrides, unknown keys) and the optimiser/schedules."""

import math
from pathlib import Path

import pytest
import torch

from zhplm.errors import ConfigError
from zhplm.pretraining import PretrainRecipe
from zhplm.recipe import load_recipe
from zhplm.training.optim import BertAdamW, OptimConfig, build_optimizer, lr_factor, no_decay

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pretrain"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(path):
    recipe = load_recipe(PretrainRecipe, path)
    assert recipe.data.seq_length in (128, 512)
    assert recipe.train.total_steps > 0
    assert recipe.objectives.get("mlm") == 1.0


def test_two_stage_recipes_chain():
    stage1 = load_recipe(PretrainRecipe, CONFIGS / "roberta-tiny-stage1.yaml")
    stage2 = load_recipe(PretrainRecipe, CONFIGS / "roberta-tiny-stage2.yaml")
    assert (stage1.data.seq_length, stage2.data.seq_length) == (128, 512)
    assert stage2.model.init_from == f"{stage1.output_dir}/model"


def test_overrides_are_typed():
    recipe = load_recipe(PretrainRecipe, CONFIGS / "demo.yaml",
                         ["train.total_steps=7", "train.optim.lr=3e-4", "train.bf16=false",
                          "masking.strategy=ngram", "objectives.nsp=0.5"])
    assert recipe.train.total_steps == 7 and isinstance(recipe.train.total_steps, int)
    assert recipe.train.optim.lr == pytest.approx(3e-4)
    assert recipe.train.bf16 is False
    assert recipe.masking.strategy == "ngram"
    assert recipe.objectives == {"mlm": 1.0, "nsp": 0.5}


def test_unknown_keys_are_errors_naming_the_file_and_valid_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  total_stepz: 5\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*train.*total_stepz.*total_steps"):
        load_recipe(PretrainRecipe, bad)
    with pytest.raises(ConfigError, match="learning_rate"):
        load_recipe(PretrainRecipe, None, ["train.optim.learning_rate=1"])
    with pytest.raises(ConfigError, match="expected int"):
        load_recipe(PretrainRecipe, None, ["train.total_steps=1.5"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_recipe(PretrainRecipe, None, ["train.total_steps"])


def test_lr_schedules():
    total, warmup = 100, 10
    assert lr_factor(0, total, warmup, "linear") == pytest.approx(0.1)
    assert lr_factor(9, total, warmup, "linear") == pytest.approx(1.0)
    assert lr_factor(55, total, warmup, "linear") == pytest.approx(0.5)
    assert lr_factor(99, total, warmup, "linear") == pytest.approx(1 / 90)
    assert lr_factor(55, total, warmup, "cosine") == pytest.approx(0.5)
    assert lr_factor(10, total, warmup, "cosine") == pytest.approx(1.0)
    assert lr_factor(80, total, warmup, "constant") == 1.0
    with pytest.raises(ConfigError, match="schedule"):
        OptimConfig(schedule="step")


def test_weight_decay_skips_bias_and_layernorm():
    assert no_decay("bert.encoder.layer.0.output.LayerNorm.weight")
    assert no_decay("cls.predictions.bias")
    assert not no_decay("bert.encoder.layer.0.output.dense.weight")
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    optimizer = build_optimizer(model, OptimConfig(weight_decay=0.01))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.01 and len(decayed["params"]) == 2  # Linear + LN weight
    assert plain["weight_decay"] == 0.0


def test_bert_adamw_without_bias_correction_matches_the_formula():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(5))
    grads = [torch.randn(5) for _ in range(3)]
    optimizer = BertAdamW([weight], lr=0.1, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01)
    expected = weight.detach().clone()
    m = torch.zeros(5)
    v = torch.zeros(5)
    for grad in grads:
        weight.grad = grad.clone()
        optimizer.step()
        expected *= 1 - 0.1 * 0.01
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad * grad
        expected -= 0.1 * m / (v.sqrt() + 1e-6)
    assert torch.allclose(weight.detach(), expected, atol=1e-6)
    # With bias correction the first step has magnitude ~lr; without it, much larger steps
    # would be wrong and much smaller ones are the BERT behaviour.
    assert not math.isclose(float(m[0]), float(grads[-1][0]))


def test_layerwise_lr_decay_scales_each_depth():
    from zhplm.config import preset
    from zhplm.modeling.heads import BertForSequenceClassification

    model = BertForSequenceClassification(preset("L4-H128", vocab_size=100))
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3, layer_decay=0.5))
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    # 4 layers: the head has depth 5 (lr x 1), layer 3 depth 4 (x 0.5), ..., embeddings x 0.5^5
    assert lr_of[id(named["classifier.weight"])] == pytest.approx(1e-3)
    assert lr_of[id(named["bert.encoder.layer.3.output.dense.weight"])] == pytest.approx(5e-4)
    assert lr_of[id(named["bert.encoder.layer.0.attention.self.query.bias"])] == \
        pytest.approx(1e-3 * 0.5**4)
    assert lr_of[id(named["bert.embeddings.word_embeddings.weight"])] == \
        pytest.approx(1e-3 * 0.5**5)
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay_of[id(named["bert.encoder.layer.0.attention.self.query.bias"])] == 0.0
    assert decay_of[id(named["bert.encoder.layer.0.attention.self.query.weight"])] == 0.01
    with pytest.raises(ConfigError, match="layer_decay"):
        OptimConfig(layer_decay=0.0)
