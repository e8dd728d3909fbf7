"""LERT end to end on the built-in corpus, annotated with jieba: linguistic heads on the MLM
transform, the LIP schedule in the loss and the logs, plain-BERT output with the heads
beside it, exact resume, and fill-mask with the tags of each mask."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import transformers
from pretrain_helpers import kill_then_resume, recipe_args
from safetensors.torch import load_file

from zhplm.data.annotate import lert_labels
from zhplm.data.collate import PretrainBatch
from zhplm.errors import CheckpointError, ConfigError
from zhplm.modeling.bert import BertForMaskedLM
from zhplm.modeling.lert_heads import HEADS_FILE, LABELS_FILE, LinguisticHeads
from zhplm.objectives.lert import LertSection, LinguisticTasks, lip_weight
from zhplm.objectives.pretraining import PretrainingModule, build_objectives
from zhplm.pipelines import pipeline
from zhplm.pretraining import PretrainRecipe, run_pretraining
from zhplm.recipe import load_recipe

LERT = {"objectives.mlm": 1.0, "objectives.lert": 1.0, "masking.strategy": "ngram"}
TOTAL = 120


@pytest.fixture(scope="module")
def lert_run(annotated_dataset, zh_vocab_dir, tmp_path_factory):
    """One tiny LERT run of 120 steps (eval at 0 and 120)."""
    run = tmp_path_factory.mktemp("lert") / "run"
    recipe = load_recipe(PretrainRecipe, None, recipe_args(annotated_dataset, zh_vocab_dir, run, **{
        **LERT, "train.total_steps": TOTAL, "train.eval_steps": 60, "train.report_steps": 10,
        "train.save_checkpoint_steps": TOTAL, "train.dtype": "fp32"}))
    metrics = run_pretraining(recipe)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return run, metrics, records


def test_short_lert_run_lowers_every_loss_and_logs_the_lip_weights(lert_run):
    run, metrics, records = lert_run
    train = [r for r in records if "pos_loss" in r]
    first = train[0]
    # jieba gives POS and NER; with no dependency parse the DEP task has weight 0, no head
    for name in ("mlm", "pos", "ner"):
        assert metrics[f"eval_{name}_loss"] < first[f"{name}_loss"], (name, metrics, first)
    assert "dep_loss" not in first and "eval_dep_loss" not in metrics
    # update n runs with n - 1 updates before it (TF's global_step): lambda = lip(n - 1)
    ends = LertSection().ramp_ends
    for record in train:
        step = record["step"]
        assert record["lambda_pos"] == pytest.approx(lip_weight(step - 1, TOTAL, ends["pos"]),
                                                     abs=1e-6)
        assert record["lambda_ner"] == pytest.approx(lip_weight(step - 1, TOTAL, ends["ner"]),
                                                     abs=1e-6)
        assert record["lambda_dep"] == 0.0
    by_step = {r["step"]: r for r in train}
    assert by_step[10]["lambda_pos"] == pytest.approx(9 / 20)  # ramp/2 region: pos ends at 20
    assert by_step[30]["lambda_pos"] == 1.0 and by_step[30]["lambda_ner"] < 1.0  # beyond
    assert by_step[TOTAL]["lambda_ner"] == 1.0


def test_lert_output_is_a_plain_bert_with_the_heads_beside_it(lert_run):
    run, _, _ = lert_run
    model_dir = run / "model"
    ours = BertForMaskedLM.from_pretrained(model_dir).eval()
    theirs = transformers.BertForMaskedLM.from_pretrained(model_dir).eval()
    ids = torch.tensor([[2, 100, 200, 300, 3]])
    with torch.no_grad():
        assert (ours(ids).logits - theirs(input_ids=ids).logits).abs().max() <= 1e-5
    labels = json.loads((model_dir / LABELS_FILE).read_text(encoding="utf-8"))
    assert labels == {k: lert_labels()[k] for k in ("pos", "ner")}
    heads = load_file(str(model_dir / HEADS_FILE))
    assert sorted(heads) == ["ner.bias", "ner.weight", "pos.bias", "pos.weight"]
    assert heads["pos.weight"].shape == (28, 128) and heads["ner.weight"].shape == (13, 128)
    saved = load_file(str(run / "checkpoints" / f"step-{TOTAL:08d}" / HEADS_FILE))
    assert all(torch.equal(heads[k], saved[k]) for k in heads)


def test_fill_mask_with_the_linguistic_heads(lert_run, annotated_dataset):
    run, _, _ = lert_run
    model_dir = run / "model"
    fill = pipeline("fill-mask", model=model_dir, linguistic=True, top_k=3, dtype="fp32")
    text = "我们在北京[MASK]行了会议。"
    result = fill(text)
    assert set(result) == {"tokens", "pos", "ner"}
    assert [p["token_str"] for p in result["tokens"]] == \
        [p["token_str"] for p in pipeline("fill-mask", model=model_dir, top_k=3,
                                          dtype="fp32")(text)]
    assert all(t["label"] in lert_labels()["pos"] for t in result["pos"])
    # the sidecar reloads into the same predictions as the heads computed by hand
    model = BertForMaskedLM.from_pretrained(model_dir).eval()
    heads = LinguisticHeads.from_pretrained(model_dir)
    ids = fill.tokenizer(text)["input_ids"]
    with torch.no_grad():
        mask = ids.index(fill.tokenizer.mask_token_id)
        hidden = model.bert(torch.tensor([ids])).last_hidden_state[0, mask]
        probs = heads(model.cls.predictions.transform(hidden[None]))["pos"].softmax(-1)[0]
    top = probs.topk(3)
    assert [t["label"] for t in result["pos"]] == [lert_labels()["pos"][i] for i in top.indices]
    assert [t["score"] for t in result["pos"]] == pytest.approx(top.values.tolist(), abs=1e-6)
    # a per-call top_k applies to the labels too; the caller's heads are not changed
    assert len(fill(text, top_k=4)["pos"]) == 4
    bf16 = pipeline("fill-mask", model=model.to(torch.bfloat16), tokenizer=fill.tokenizer,
                    linguistic=heads)
    assert bf16(text)["pos"][0]["label"] in lert_labels()["pos"]
    assert next(heads.parameters()).dtype == torch.float32
    # two masks: one result per mask
    two = fill("[MASK]京是中国的首[MASK]。")
    assert len(two) == 2 and all(set(m) == {"tokens", "pos", "ner"} for m in two)
    # linguistic=False in one call: the plain fill-mask answer
    assert fill(text, linguistic=False) == pipeline("fill-mask", model=model_dir, top_k=3,
                                                    dtype="fp32")(text)
    # the CLI prints them
    out = subprocess.run([sys.executable, "-m", "zhplm", "fill-mask", "--model", str(model_dir),
                          "--linguistic", "--top-k", "2", text], capture_output=True, text=True,
                         check=True).stdout
    assert "pos:" in out and "ner:" in out


def test_lert_sigkill_then_resume_reproduces_the_losses(annotated_dataset, zh_vocab_dir,
                                                        tmp_path):
    # ramp ends inside the run, so a restart from 0 would change the losses after step 10
    full, killed = kill_then_resume(lambda out: recipe_args(
        annotated_dataset, zh_vocab_dir, out, **LERT, **{"lert.ramp_ends.pos": 16,
                                                          "lert.ramp_ends.ner": 0.9}), tmp_path)
    for name in ("model.safetensors", HEADS_FILE):
        a = load_file(str(full / "model" / name))
        b = load_file(str(killed / "model" / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    lambdas = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["lambda_pos"] for r in lambdas if "lambda_pos" in r][10:12] == \
        pytest.approx([10 / 16, 11 / 16])


def test_linguistic_loss_is_lerts_weighted_mean():
    torch.manual_seed(0)
    from zhplm.config import preset

    model = BertForMaskedLM(preset("tiny", vocab_size=500)).eval()
    labels = {t: lert_labels()[t] for t in ("pos", "ner", "dep")}
    objective = LinguisticTasks(LertSection(), labels, {"pos": 5, "ner": 5, "dep": 5})
    module = PretrainingModule(model, [(objective, 1.0)])
    ids = torch.randint(5, 500, (2, 12))
    positions = torch.tensor([1, 4, 7, 13, 20])
    ling = torch.tensor([[0, 1, 2], [3, -1, 4], [-1, 0, -1], [5, 2, 6], [7, 0, 1]])
    batch = PretrainBatch(ids, torch.zeros_like(ids), torch.ones_like(ids), positions,
                          ids.flatten()[positions], torch.rand(5), None, 24,
                          linguistic_labels=ling)
    lambdas = module.begin_step(50, 600)  # pos ramps to 100, ner 200, dep 300
    assert lambdas == {"lambda_pos": 0.5, "lambda_ner": 0.25, "lambda_dep": 50 / 300}
    with torch.no_grad():
        loss, stats = module(batch, module.normalizers([batch]))
        hidden = model.bert(ids).last_hidden_state.flatten(0, 1)[positions]
        logits = module.heads["lert"](model.cls.predictions.transform(hidden))
    expected = 0.0
    for column, task in enumerate(("pos", "ner", "dep")):
        target = ling[:, column]
        known = target >= 0
        ce = F.cross_entropy(logits[task][known], target[known], reduction="sum")
        expected += lambdas[f"lambda_{task}"] * ce / (known.sum() + 1e-5)
        assert stats[f"{task}_count"] == known.sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_lert_needs_an_annotated_dataset(small_dataset, zh_vocab_dir, tmp_path):
    recipe = load_recipe(PretrainRecipe, None, recipe_args(small_dataset, zh_vocab_dir,
                                                           tmp_path / "run", **LERT))
    with pytest.raises(ConfigError, match="--annotate"):
        run_pretraining(recipe)


def test_heads_refuse_other_labels_and_corrupt_files(tmp_path, zh_vocab_dir):
    heads = LinguisticHeads(64, {"pos": lert_labels()["pos"]})
    heads.save_pretrained(tmp_path)
    LinguisticHeads.from_pretrained(tmp_path)  # round trip
    other = LinguisticHeads(64, {"pos": lert_labels()["pos"], "ner": lert_labels()["ner"]})
    with pytest.raises(CheckpointError, match=LABELS_FILE):
        other.load_weights(tmp_path)
    (tmp_path / HEADS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match=HEADS_FILE):
        LinguisticHeads.from_pretrained(tmp_path)
    from zhplm.config import preset
    from zhplm.tokenization import Tokenizer

    plain = tmp_path / "plain"
    BertForMaskedLM(preset("tiny", vocab_size=8000)).save_pretrained(
        plain, tokenizer=Tokenizer.from_pretrained(zh_vocab_dir))
    with pytest.raises(ConfigError, match="no LERT heads"):
        pipeline("fill-mask", model=plain, linguistic=True)


def test_build_objectives_drops_tasks_without_labels(caplog):
    annotation = {"labels": lert_labels(), "labelled_tokens": {"pos": 9, "ner": 9, "dep": 0}}
    [(objective, _)] = [o for o in build_objectives({"mlm": 1.0, "lert": 1.0}, None,
                                                    LertSection(), annotation)
                        if o[0].name == "lert"]
    assert objective.trained == ["pos", "ner"]
    assert "dep" in caplog.text and "weight 0" in caplog.text


def test_heads_of_other_tasks_load_partially_when_starting_from_a_model(tmp_path, caplog):
    labels = lert_labels()
    saved = LinguisticHeads(32, {"pos": labels["pos"], "ner": labels["ner"]})
    saved.save_pretrained(tmp_path)
    fresh = LinguisticHeads(32, labels)
    dep_before = fresh.tasks["dep"].weight.clone()
    with pytest.raises(CheckpointError, match="differ"):
        fresh.load_weights(tmp_path)  # resume: the same heads or nothing
    fresh.load_weights(tmp_path, partial=True)  # init_from: what matches, the rest stays new
    assert torch.equal(fresh.tasks["pos"].weight, saved.tasks["pos"].weight)
    assert torch.equal(fresh.tasks["ner"].bias, saved.tasks["ner"].bias)
    assert torch.equal(fresh.tasks["dep"].weight, dep_before)
    assert "dep" in caplog.text and "untrained" in caplog.text


def test_server_answers_linguistic_and_targets_like_the_pipeline(lert_run):
    from fastapi.testclient import TestClient

    from zhplm.serving import Settings, create_app, load_models

    model_dir = lert_run[0] / "model"
    settings = Settings(dtype="fp32")
    text = "我们在北京[MASK]行了会议。"
    fill = pipeline("fill-mask", model=model_dir, linguistic=True, dtype="fp32")
    with TestClient(create_app(load_models([str(model_dir)], settings), settings)) as client:
        tagged = client.post("/fill-mask", json={"inputs": text, "linguistic": True}).json()
        plain = client.post("/fill-mask", json={"inputs": text}).json()
        targeted = client.post("/fill-mask", json={"inputs": text, "targets": ["举", "进"],
                                                   "top_k": 2}).json()
    expected = fill(text)
    assert tagged["pos"] == [{"label": t["label"], "score": pytest.approx(t["score"], abs=1e-6)}
                             for t in expected["pos"]]
    assert [p["token_str"] for p in tagged["tokens"]] == \
        [p["token_str"] for p in expected["tokens"]]
    assert [p["token_str"] for p in plain] == [p["token_str"] for p in expected["tokens"]]
    assert sorted(p["token_str"] for p in targeted) == ["举", "进"]
    assert [p["token_str"] for p in targeted] == \
        [p["token_str"] for p in fill(text, targets=["举", "进"], linguistic=False)]
