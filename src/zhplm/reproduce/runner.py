"""Carry out a reproduce plan: data, pre-training per row, fine-tuning per (model, task)
through the grid code, then the report. Every finished piece is reused: a pre-training run
with `done.json`, a grid seed with `results.json`; an interrupted pre-training run resumes
from its last checkpoint (exactly, as `zhplm pretrain --resume`)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from zhplm.config import atomic_write_text, preset
from zhplm.errors import ConfigError
from zhplm.reproduce.plan import FINETUNE_BATCH, FINETUNE_LR, Plan, Row, TaskSpec, model_keys

logger = logging.getLogger("zhplm")

OPTIM = {"lr": 1.0e-3, "warmup": 0.05, "schedule": "linear"}
MASKING = {"mask_prob": 0.15, "max_predictions": 20}


def recipe_dict(row: Row, plan: Plan, out: Path, data: dict[str, Path]) -> dict[str, Any]:
    """The pre-training recipe of a row (zhplm's recipes at the plan's budget)."""
    steps = row.steps
    every = max(10, steps // 4)
    recipe: dict[str, Any] = {
        "output_dir": str(out / row.run),
        # the MLM output bias starts at the unigram log-frequencies (as the demo recipe):
        # the first few hundred steps then go to context rather than to token frequencies
        "model": {"preset": row.size, "mlm_bias": "unigram"},
        "data": {"dataset": str(data["dataset"]), "vocab": str(data["vocab"]),
                 "kind": "full_sentences", "seq_length": plan.seq_length, "dev_fraction": 0.02,
                 "eval_instances": 256},
        "masking": {"strategy": "token", **MASKING},
        "objectives": {"mlm": 1.0},
        "train": {"total_steps": steps, "batch_size": plan.batch_size, "dtype": "auto",
                  "optim": dict(OPTIM), "save_checkpoint_steps": every, "report_steps": 10,
                  "eval_steps": every, "keep_last": 1},
    }
    if row.objective == "wwm":
        recipe["masking"]["strategy"] = "wwm"
    elif row.objective == "structbert":
        recipe["masking"]["strategy"] = "wwm"
        recipe["data"]["kind"] = "sentence_order"
        recipe["objectives"] = {"mlm": 1.0, "word_order": 1.0, "sentence_order": 1.0}
        recipe["structbert"] = {"wso_ratio": 0.05}
    elif row.objective == "lert":
        recipe["data"]["dataset"] = str(data["annotated"])
        recipe["masking"]["strategy"] = "ngram"
        recipe["objectives"] = {"mlm": 1.0, "lert": 1.0}
        recipe["lert"] = {"tasks": ["pos", "ner", "dep"]}
    elif row.objective == "electra":
        # no dropout, as configs/pretrain/electra-demo.yaml: with dropout 0.1 a tiny
        # discriminator in fp32 collapses to "all original" within a few hundred steps
        recipe["model"] = {"preset": f"electra-{row.size}", "hidden_dropout_prob": 0.0,
                           "attention_probs_dropout_prob": 0.0}
        recipe["masking"] = {"strategy": "token"}
        recipe["objectives"] = {"electra": 1.0}
        recipe["electra"] = {"generator_hidden_fraction": 0.25, "gen_weight": 1.0,
                             "disc_weight": 50.0, "mask_prob": 0.15, "temperature": 2.0}
        recipe["train"]["optim"] = {**OPTIM, "schedule": "electra", "bias_correction": False,
                                    "eps": 1.0e-6, "weight_decay": 0.01}
    return recipe


def model_dir(row: Row, out: Path) -> Path:
    """The directory fine-tuning starts from."""
    if not row.pretrained:
        return out / f"random-{row.size}"
    if row.objective == "electra":
        return out / row.run / "model" / "discriminator"
    return out / row.run / "model"


def prepare_data(plan: Plan, out: Path) -> dict[str, Path]:
    """Corpus, vocab and datasets (the annotated one only for a LERT row); reused when
    done."""
    from zhplm import datasets
    from zhplm.data.corpus import preprocess
    from zhplm.tokenization import build_vocab

    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    corpus = [Path(c) for c in plan.corpus]
    if not corpus:
        builtin = data / "corpus.txt"
        if not builtin.is_file():
            datasets.write_corpus(builtin)
        corpus = [builtin]
    vocab = data / "vocab.txt"
    if not vocab.is_file():
        build_vocab(corpus, vocab_size=plan.vocab_size, out=vocab)
    paths = {"vocab": vocab, "dataset": data / "dataset"}
    if not (paths["dataset"] / "meta.json").is_file():
        preprocess(corpus, vocab, paths["dataset"], workers=2, overwrite=True)
    if any(r.objective == "lert" for r in plan.rows):
        paths["annotated"] = data / "dataset-lert"
        if not (paths["annotated"] / "meta.json").is_file():
            preprocess(corpus, vocab, paths["annotated"], workers=2, overwrite=True,
                       annotate="jieba")
    return paths


def pretrain(row: Row, plan: Plan, out: Path, data: dict[str, Path]) -> dict[str, Any]:
    """Pre-train one row (resuming an interrupted run); its final metrics."""
    from zhplm.pretraining import PretrainRecipe, run_pretraining
    from zhplm.recipe import from_dict
    from zhplm.training.checkpoint import latest_checkpoint

    run_dir = out / row.run
    done = run_dir / "done.json"
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    recipe = from_dict(PretrainRecipe, recipe_dict(row, plan, out, data),
                       f"reproduce {row.run}")
    started = time.perf_counter()
    metrics = run_pretraining(recipe, resume=latest_checkpoint(run_dir) is not None)
    result = {"row": row.name, "steps": row.steps, "tokens": row.tokens,
              "seconds": round(time.perf_counter() - started, 1),
              "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
    atomic_write_text(done, json.dumps(result, indent=2) + "\n")
    return result


def random_init(row: Row, out: Path, vocab: Path) -> None:
    """A seeded randomly initialised model of the row's size (the baseline row)."""
    from zhplm.modeling import BertForMaskedLM
    from zhplm.tokenization import Tokenizer

    target = model_dir(row, out)
    if (target / "config.json").is_file():
        return
    tokenizer = Tokenizer.from_pretrained(vocab)
    torch.manual_seed(0)
    config = preset(row.size, vocab_size=tokenizer.vocab_size,
                    pad_token_id=tokenizer.pad_token_id)
    BertForMaskedLM(config).save_pretrained(target, tokenizer=tokenizer)


def task_slug(task: TaskSpec) -> str:
    return task.name.replace(" (", "-").replace(")", "").replace(" ", "_").replace("/", "_")


def finetune(plan: Plan, key: str, row: Row, task: TaskSpec, out: Path) -> dict[str, Any]:
    """The grid x seeds of one (model, task) column; reused seed by seed."""
    from zhplm.finetuning import FinetuneConfig, run_finetune
    from zhplm.tasks.grid import run_grid

    base = FinetuneConfig(task=task.task, model=str(model_dir(row, out)), train=task.train,
                          dev=task.dev, test=task.test, epochs=task.epochs,
                          batch_size=FINETUNE_BATCH, lr=FINETUNE_LR,
                          max_train_examples=task.max_train_examples,
                          # every row the same optimiser: ELECTRA's default layer-wise lr
                          # decay (0.8) keeps a tiny random ELECTRA at chance on sentiment
                          layer_decay=1.0,
                          max_eval_examples=plan.max_eval_examples, seed=0,
                          save_checkpoints=False, progress=False, write_test_outputs=False)
    target = out / "finetune" / key.replace("/", "_") / task_slug(task)
    return run_grid(base, plan.grid, plan.seeds, target, run_finetune)


def execute(plan: Plan, out: Path, log: Any = print) -> dict[str, Any]:
    """Run (or finish) every piece of `plan` in `out`; returns the raw results."""
    started = time.perf_counter()
    data = prepare_data(plan, out)
    log(f"data ready ({time.perf_counter() - started:.0f}s)")
    pretraining: dict[str, Any] = {}
    for row in plan.pretrain_runs():
        log(f"pre-training {row.run}: {row.steps} steps")
        pretraining[row.run] = pretrain(row, plan, out, data)
    for row in plan.rows:
        if not row.pretrained:
            random_init(row, out, data["vocab"])
    finetuning: dict[str, dict[str, Any]] = {}
    for key, row in model_keys(plan.rows).items():
        for task in plan.tasks:
            log(f"fine-tuning {key} on {task.name}")
            finetuning.setdefault(key, {})[task.name] = finetune(plan, key, row, task, out)
    return {"pretraining": pretraining, "finetuning": finetuning,
            "seconds": time.perf_counter() - started}


def load_or_save_plan(plan: Plan | None, out: Path, resume: bool) -> Plan:
    """The saved plan of `out` when resuming; else save `plan` (refusing to overwrite)."""
    saved = out / "plan.json"
    if saved.is_file():
        if not resume and plan is not None:
            raise ConfigError(f"{out} already holds a reproduce run (plan.json); pass --resume "
                              f"to finish it, or choose another --out")
        return Plan.from_json(saved.read_text(encoding="utf-8"))
    if plan is None:
        raise ConfigError(f"{out} has no plan.json: nothing to resume")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved, plan.to_json())
    return plan
