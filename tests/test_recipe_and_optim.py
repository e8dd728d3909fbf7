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
    assert recipe.data.seq_length in (64, 128, 512)  # 64: the demo (issue 12)
    assert recipe.train.total_steps > 0
    main = "electra" if recipe.model.preset.startswith("electra") else "mlm"
    assert recipe.objectives.get(main) == 1.0
    masking = recipe.masking_config()  # ELECTRA's is derived from the electra section
    if main == "electra":
        assert (masking.mask_replace, masking.random_replace) == (0.85, 0.0)
        assert masking.max_predictions == int((0.15 + 0.005) * recipe.data.seq_length)


def test_electra_masking_is_elecras_own_and_conflicts_are_named():
    recipe = load_recipe(PretrainRecipe, CONFIGS / "electra-small.yaml")
    assert recipe.masking_config().max_predictions == 79  # int(0.155 x 512), ELECTRA's rule
    assert recipe.train.optim.warmup == 10000 and not recipe.train.optim.bias_correction
    changed = load_recipe(PretrainRecipe, CONFIGS / "electra-demo.yaml",
                          ["masking.random_replace=0.05"])
    with pytest.raises(ConfigError, match="masking.random_replace.*electra.mask_prob"):
        changed.masking_config()


def test_electra_schedule_is_decay_times_warmup():
    """google-research/electra: lr x (1 - step / total) x min(1, step / warmup)."""
    assert lr_factor(0, 100, 10, "electra") == 0.0
    assert lr_factor(5, 100, 10, "electra") == pytest.approx(0.5 * 0.95)
    assert lr_factor(50, 100, 10, "electra") == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, "electra") == 0.0


def test_two_stage_recipes_chain():
    stage1 = load_recipe(PretrainRecipe, CONFIGS / "roberta-tiny-stage1.yaml")
    stage2 = load_recipe(PretrainRecipe, CONFIGS / "roberta-tiny-stage2.yaml")
    assert (stage1.data.seq_length, stage2.data.seq_length) == (128, 512)
    assert stage2.model.init_from == f"{stage1.output_dir}/model"


def test_overrides_are_typed():
    recipe = load_recipe(PretrainRecipe, CONFIGS / "demo.yaml",
                         ["train.total_steps=7", "train.optim.lr=3e-4", "train.dtype=fp32",
                          "masking.strategy=ngram", "objectives.nsp=0.5"])
    assert recipe.train.total_steps == 7 and isinstance(recipe.train.total_steps, int)
    assert recipe.train.optim.lr == pytest.approx(3e-4)
    assert recipe.train.dtype == "fp32"
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
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad * grad
        expected -= 0.1 * m / (v.sqrt() + 1e-6)
        expected *= 1 - 0.1 * 0.01  # decoupled decay of the updated weights (UER-py's order)
    assert torch.allclose(weight.detach(), expected, atol=1e-6)
    # With bias correction the first step has magnitude ~lr; without it, much larger steps
    # would be wrong and much smaller ones are the BERT behaviour.
    assert not math.isclose(float(m[0]), float(grads[-1][0]))


def test_layerwise_lr_decay_scales_each_depth():
    """ELECTRA's `_get_layer_lrs`: lr x decay ** (L + 2 - depth), task heads at depth L + 2,
    layer i at i + 1, embeddings (and ELECTRA's embeddings_project) at 0."""
    from zhplm.config import electra_preset, preset
    from zhplm.modeling.electra import ElectraForSequenceClassification
    from zhplm.modeling.heads import BertForSequenceClassification

    model = BertForSequenceClassification(preset("L4-H128", vocab_size=100))
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3, layer_decay=0.5))
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["classifier.weight"])] == pytest.approx(1e-3)
    assert lr_of[id(named["bert.pooler.dense.weight"])] == pytest.approx(1e-3)
    assert lr_of[id(named["bert.encoder.layer.3.output.dense.weight"])] == \
        pytest.approx(1e-3 * 0.5**2)
    assert lr_of[id(named["bert.encoder.layer.0.attention.self.query.bias"])] == \
        pytest.approx(1e-3 * 0.5**5)
    assert lr_of[id(named["bert.embeddings.word_embeddings.weight"])] == \
        pytest.approx(1e-3 * 0.5**6)
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay_of[id(named["bert.encoder.layer.0.attention.self.query.bias"])] == 0.0
    assert decay_of[id(named["bert.encoder.layer.0.attention.self.query.weight"])] == 0.01
    with pytest.raises(ConfigError, match="layer_decay"):
        OptimConfig(layer_decay=0.0)

    discriminator, _ = electra_preset("electra-tiny", vocab_size=100, embedding_size=64)
    electra = ElectraForSequenceClassification(discriminator)
    optimizer = build_optimizer(electra, OptimConfig(lr=1e-3, layer_decay=0.8))
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(electra.named_parameters())
    assert lr_of[id(named["electra.embeddings_project.weight"])] == pytest.approx(1e-3 * 0.8**4)
    assert lr_of[id(named["electra.embeddings.LayerNorm.weight"])] == \
        pytest.approx(1e-3 * 0.8**4)
    assert lr_of[id(named["electra.encoder.layer.1.output.dense.weight"])] == \
        pytest.approx(1e-3 * 0.8**2)
    assert lr_of[id(named["classifier.out_proj.weight"])] == pytest.approx(1e-3)


class ReferenceAdamW:
    """UER-py's AdamW(correct_bias=False) written out per parameter, the textbook way:
    plain tensors and Python loops, sharing nothing with zhplm's optimiser."""

    def __init__(self, groups, lr, eps=1e-6, betas=(0.9, 0.999)):
        self.groups = [{**g, "params": list(g["params"])} for g in groups]
        self.lr, self.eps, self.betas = lr, eps, betas
        self.state = {}

    def step(self, lr):
        beta1, beta2 = self.betas
        for group in self.groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                m, v = self.state.setdefault(id(p), (torch.zeros_like(p), torch.zeros_like(p)))
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                with torch.no_grad():
                    p.addcdiv_(m, v.sqrt().add(self.eps), value=-lr)
                    if group["weight_decay"] > 0:
                        p.add_(p, alpha=-lr * group["weight_decay"])


def test_uer_optimiser_matches_reference_adamw_step_for_step():
    """`OptimConfig.uer()` through the trainer's optimiser + schedule equals UER-py's
    AdamW(correct_bias=False) with its parameter groups, on a small BERT's real gradients,
    to float32 rounding (2 ulps) after every step."""
    import copy

    from zhplm.config import preset
    from zhplm.modeling.bert import BertForMaskedLM
    from zhplm.training.optim import UER_OPTIM, build_scheduler

    torch.manual_seed(0)
    ours = BertForMaskedLM(preset("L2-H128", vocab_size=300)).train()
    ref = copy.deepcopy(ours)
    config = OptimConfig.uer(lr=1e-3, warmup=0.25)
    assert (config.bias_correction, config.eps, config.weight_decay, config.max_grad_norm) == \
        (False, 1e-6, 0.01, 0.0) and UER_OPTIM["bias_correction"] is False
    optimizer = build_optimizer(ours, config)
    assert isinstance(optimizer, BertAdamW)
    steps = 12
    scheduler = build_scheduler(optimizer, config, steps)
    # UER-py's groups: decay 0.01 unless the name holds bias / gamma / beta / layer_norm
    # (its LayerNorm names); on HF names that is "bias" or "LayerNorm".
    named = list(ref.named_parameters())
    plain = [p for n, p in named if "bias" in n or "LayerNorm" in n]
    decayed = [p for n, p in named if not ("bias" in n or "LayerNorm" in n)]
    reference = ReferenceAdamW([{"params": decayed, "weight_decay": 0.01},
                                {"params": plain, "weight_decay": 0.0}], lr=1e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        ids = torch.randint(5, 300, (4, 24), generator=generator)
        labels = torch.where(torch.rand(4, 24, generator=generator) < 0.2, ids, -100)
        logits = ours(input_ids=ids).logits
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten()).backward()
        # The same real gradients go to both optimisers, so any difference is the update's.
        for mine, theirs in zip(ours.parameters(), ref.parameters(), strict=True):
            theirs.grad = mine.grad.clone()
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        reference.step(lr)
        optimizer.zero_grad(set_to_none=True)
        ref.zero_grad(set_to_none=True)
        worst = max(float((a - b).abs().max()) for a, b in
                    zip(ours.state_dict().values(), ref.state_dict().values(), strict=True))
        # 2 float32 ulps at 1.0 (LayerNorm weights): the fused kernel rounds in its own order
        assert worst <= 2.5e-7
    moved = max(float((a - b).abs().max()) for a, b in
                zip(ours.state_dict().values(), BertForMaskedLM(ours.config).state_dict()
                    .values(), strict=True))
    assert moved > 1e-3  # the weights really trained


def test_uer_optimiser_differs_from_bias_corrected_adamw():
    """The two conventions are different runs: the first step without bias correction is
    (1 - beta1) / sqrt(1 - beta2) = 3.16x the bias-corrected one (lr)."""
    grad = torch.full((3,), 0.5)
    steps = {}
    for name, config in (("uer", OptimConfig.uer(lr=0.1, weight_decay=0.0)),
                         ("torch", OptimConfig(lr=0.1, weight_decay=0.0))):
        weight = torch.nn.Parameter(torch.zeros(3))
        weight.grad = grad.clone()
        build_optimizer(torch.nn.ParameterList([weight]), config).step()
        steps[name] = float(weight.detach().abs().max())
    assert steps["torch"] == pytest.approx(0.1, rel=1e-3)
    assert steps["uer"] == pytest.approx(0.1 * 0.1 / math.sqrt(0.001), rel=1e-3)


def test_roberta_recipes_use_uer_conventions():
    for path in sorted(CONFIGS.glob("roberta-*.yaml")):
        optim = load_recipe(PretrainRecipe, path).train.optim
        assert (optim.bias_correction, optim.max_grad_norm, optim.eps, optim.weight_decay) == \
            (False, 0.0, 1e-6, 0.01), path.name
    with pytest.raises(ConfigError, match="max_grad_norm"):
        OptimConfig(max_grad_norm=-1.0)


def test_optimisers_resume_from_checkpoints_of_the_foreach_versions():
    """Checkpoints written before the optimisers moved to torch's fused kernel: BertAdamW's
    states had no step count, torch AdamW(foreach=True) groups no fused flag."""
    from zhplm.training.optim import FusedAdamW

    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(4, 3))
    param.grad = torch.randn(4, 3)
    old = {"state": {0: {"exp_avg": torch.randn(4, 3), "exp_avg_sq": torch.rand(4, 3)}},
           "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-6,
                             "weight_decay": 0.01, "params": [0]}]}
    m, v = old["state"][0]["exp_avg"].clone(), old["state"][0]["exp_avg_sq"].clone()
    bert = BertAdamW([param], lr=1e-3, weight_decay=0.01)
    bert.load_state_dict(old)
    before = param.detach().clone()
    bert.step()
    m = 0.9 * m + 0.1 * param.grad
    v = 0.999 * v + 0.001 * param.grad ** 2
    expected = (before - 1e-3 * m / (v.sqrt() + 1e-6)) * (1 - 1e-3 * 0.01)
    assert torch.allclose(param.detach(), expected, atol=1e-6)
    foreach = torch.optim.AdamW([param], lr=1e-3, foreach=True)
    foreach.step()
    fused = FusedAdamW([param], lr=1e-3)
    fused.load_state_dict(foreach.state_dict())
    fused.step()
    assert fused.param_groups[0]["fused"] and float(fused.state[param]["step"]) == 2
