"""The fine-tuning recipe: a model directory + task files -> a fine-tuned HF model directory.

`run_finetune(config)` reads the task's examples (files, or a built-in task), fixes the
label set (from train, or from a fine-tuned head being trained further), loads the model
with the task head, and drives the shared `Trainer` for `epochs` passes of length-grouped,
dynamically padded batches. It evaluates on dev after every epoch, keeps the best model in
`OUTPUT/best/`, can stop early, and writes test predictions and `results.json`.

    cfg = FinetuneConfig(task="reviews-sentiment", model="demo_out/pretrain-tiny/model")
    results = run_finetune(cfg)

`build_trainer(..., cfg_modify_fn=fn, work_dir=DIR)` is the same with a hook that edits the
loaded config first (as ModelScope's trainer API; a model card's hook, which edits
`cfg.train.optimizer.lr`, `cfg['dataset']`, ..., runs as written: see `CardConfig`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zhplm.config import ModelConfig, atomic_write_text, save_dir_atomically
from zhplm.env import requested_dtype, resolve_dtype
from zhplm.errors import CheckpointError, ConfigError
from zhplm.modeling.auto import (
    QUESTION_ANSWERING,
    SEQUENCE_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
    check_role,
    family,
    head_of_architecture,
    load_model,
)
from zhplm.modeling.heads import labels_of, with_labels
from zhplm.recipe import from_dict, load_file, recipe_from_data, to_dict
from zhplm.tasks.base import Task, TaskModule
from zhplm.tasks.batching import BatchStream, Features
from zhplm.tasks.builtin import BUILTIN_TASKS, load_builtin
from zhplm.tasks.readers import check_labels, collect_labels, read_task_file
from zhplm.tokenization import Tokenizer
from zhplm.training.checkpoint import latest_checkpoint
from zhplm.training.optim import UER_OPTIM, OptimConfig
from zhplm.training.trainer import TrainConfig, Trainer

logger = logging.getLogger("zhplm")

TASK_KINDS = ("classification", "pair", "regression", "ner", "pos", "mrc")
PREDICTION_FILES = {"classification": "test_predictions.tsv", "pair": "test_predictions.tsv",
                    "regression": "test_predictions.tsv", "ner": "test_predictions.txt",
                    "pos": "test_predictions.txt", "mrc": "test_predictions.json"}
RESULTS_NAME = "results.json"
BEST_DIR = "best"


@dataclass
class FinetuneConfig:
    """One fine-tuning run. `task` is a kind (classification, pair, regression, ner, pos,
    mrc) used with `train`/`dev`/`test` files, or a built-in task (reviews-sentiment,
    pd-ner, pd-pos) whose data ships with zhplm.

    `dtype` is `auto | fp32 | bf16` for training and prediction (`auto`: bf16 only where the
    hardware runs it natively, see `zhplm env`); the deprecated `bf16: true/false` is read
    as dtype bf16/fp32."""

    task: str = "classification"
    model: str = ""
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    output_dir: str = "runs/finetune"
    fields: dict[str, str] = field(default_factory=dict)
    scheme: str = "BIO"
    labels: list[str] = field(default_factory=list)
    max_seq_length: int = 128
    epochs: float = 3.0
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float = 3e-5
    warmup: float = 0.1
    weight_decay: float = 0.01
    layer_decay: float | None = None  # None: 0.8 for ELECTRA (its fine-tuning code), else 1
    schedule: str = "linear"
    bias_correction: bool = True  # False: BERT's / UER-py's AdamW (see `preset="uer"`)
    max_grad_norm: float = 1.0  # gradient clipping; 0 = none (UER-py)
    grad_accum: int = 1
    dtype: str = "auto"
    bf16: bool | None = None  # deprecated: use dtype
    seed: int = 42
    early_stopping: int = 0
    max_train_examples: int = 0
    max_eval_examples: int = 0
    doc_stride: int = 128
    max_query_length: int = 64
    n_best: int = 20
    max_answer_length: int = 30
    do_train: bool = True
    do_eval: bool = True
    write_test_outputs: bool = True
    save_checkpoints: bool = True
    progress: bool = True
    # Model facts a Chinese-ELECTRA hparams file states (`vocab_size`, `embedding_size`):
    # checked against the model's config.json, never applied.
    expect_model: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASK_KINDS and self.task not in BUILTIN_TASKS:
            raise ConfigError(f"task={self.task!r}; choose a kind ({', '.join(TASK_KINDS)}) or "
                              f"a built-in task ({', '.join(BUILTIN_TASKS)})")
        if self.epochs <= 0 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError("epochs, batch_size and eval_batch_size must be positive")
        if self.max_seq_length < 8:
            raise ConfigError(f"max_seq_length={self.max_seq_length} is too short (>= 8)")
        self.dtype = requested_dtype(self.dtype, self.bf16)
        self.bf16 = None

    @property
    def kind(self) -> str:
        """The task kind (a built-in task's kind, or `task` itself)."""
        return BUILTIN_TASKS.get(self.task, self.task)


# ---- data and task ---------------------------------------------------------------------------
def load_examples(config: FinetuneConfig, split: str) -> list[Any]:
    """Examples of `split` ("train", "dev", "test"): its file, else the built-in split."""
    path = getattr(config, split)
    if path:
        options: dict[str, Any] = {}
        if config.kind in ("classification", "pair", "regression") and config.fields and \
                Path(path).suffix in (".jsonl", ".json"):
            options["field_map"] = config.fields
        if config.kind in ("ner", "pos"):
            options["scheme"] = config.scheme if config.kind == "ner" else None
        if config.kind == "mrc":  # only training places answers by their offsets
            options["need_offsets"] = split == "train"
        task = "ner" if config.kind == "pos" else config.kind
        examples = read_task_file(path, task, **options)
    elif config.task in BUILTIN_TASKS:
        examples = load_builtin(config.task, split)
    else:
        return []
    limit = config.max_train_examples if split == "train" else config.max_eval_examples
    if limit and len(examples) > limit:
        keep = np.sort(np.random.default_rng(0).permutation(len(examples))[:limit])
        examples = [examples[i] for i in keep]
    return examples


KIND_HEADS = {"classification": SEQUENCE_CLASSIFICATION, "pair": SEQUENCE_CLASSIFICATION,
              "regression": SEQUENCE_CLASSIFICATION, "ner": TOKEN_CLASSIFICATION,
              "pos": TOKEN_CLASSIFICATION, "mrc": QUESTION_ANSWERING}
DEFAULT_LAYER_DECAY = {"bert": 1.0, "electra": 0.8}
ELECTRA_LARGE_LAYER_DECAY = 0.9  # configure_finetuning.py: model_size "large"


def default_layer_decay(config: ModelConfig) -> float:
    """ELECTRA's fine-tuning decays the lr layer by layer: 0.8, 0.9 for large (hidden 1024);
    BERT does not (1.0)."""
    if family(config) == "electra" and config.hidden_size >= 1024:
        return ELECTRA_LARGE_LAYER_DECAY
    return DEFAULT_LAYER_DECAY[family(config)]


def head_labels(model_dir: Path, kind: str) -> list[str] | None:
    """Labels of a fine-tuned head of this kind in `model_dir` (None for a backbone)."""
    config = ModelConfig.from_pretrained(model_dir)
    saved = {head_of_architecture(a) for a in config.extra.get("architectures") or []}
    if KIND_HEADS[kind] not in saved or kind == "mrc":
        return None
    return labels_of(config)


def choose_labels(config: FinetuneConfig, train: Sequence[Any], model_dir: Path
                  ) -> tuple[list[str], str]:
    """The label set and where it came from: a loaded head's, else `config.labels`, else
    collected from train."""
    if config.kind in ("regression", "mrc"):
        return [], ""
    where = config.train or f"{config.task} (train)"
    from_head = head_labels(model_dir, config.kind)
    if from_head is not None:
        if train:
            found = collect_labels(train, where)
            if not set(found) <= set(from_head):  # a subset may lack a rare label
                raise ConfigError(
                    f"{model_dir}: its head predicts {len(from_head)} labels "
                    f"({', '.join(from_head)}) but {where} has {len(found)} "
                    f"({', '.join(found)}); fine-tune from the backbone instead, or use data "
                    f"with the head's labels"
                )
        return from_head, f"the head in {model_dir}"
    if config.labels:
        return list(config.labels), "the config's labels"
    if not config.train and config.task in BUILTIN_TASKS:
        # a built-in task's labels are its whole inventory, every split: a training subset
        # (max_train_examples) can miss a rare tag that dev has (pd-pos: 'B-Mg')
        every = [e for split in ("train", "dev", "test") for e in load_builtin(config.task, split)]
        where = f"{config.task} (all splits)"
        return collect_labels(every, where), where
    if not train:
        raise ConfigError("no training data and no labels: give train data or `labels`")
    return collect_labels(train, where), where


def build_task(config: FinetuneConfig, labels: list[str]) -> Task:
    """The task object for `config.kind`."""
    if config.kind in ("classification", "pair", "regression"):
        from zhplm.tasks.classification import TextTask

        return TextTask(config.kind, labels)
    if config.kind in ("ner", "pos"):
        from zhplm.tasks.tagging import TaggingTask

        return TaggingTask(config.kind, labels, scheme=config.scheme)
    from zhplm.tasks.extractive_qa import QATask

    return QATask(doc_stride=config.doc_stride, max_query_length=config.max_query_length,
                  n_best=config.n_best, max_answer_length=config.max_answer_length)


# ---- the run ---------------------------------------------------------------------------------
@contextlib.contextmanager
def inference(dtype: str) -> Iterator[None]:
    """No autograd; bf16 autocast when `dtype` (already resolved: "fp32" or "bf16") is bf16."""
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                enabled=dtype == "bf16"):
        yield


class FinetuneRun:
    """The pieces of one run, built once: data, task, tokenizer, model, features."""

    def __init__(self, config: FinetuneConfig, resume: bool = False) -> None:
        if not config.model:
            raise ConfigError("model is required: a model directory (HF layout)")
        self.config = config
        self.dtype = resolve_dtype(config.dtype)  # "fp32" or "bf16", for this machine
        self.out = Path(config.output_dir)
        model_dir = Path(config.model)
        if not model_dir.is_dir():
            raise CheckpointError(f"{model_dir}: not a model directory")
        self.examples = {split: load_examples(config, split) for split in ("train", "dev", "test")}
        if config.do_train and not self.examples["train"]:
            raise ConfigError("do_train is set but there is no training data: pass `train`")
        labels, origin = choose_labels(config, self.examples["train"], model_dir)
        for split in ("train", "dev", "test"):
            labelled = [e for e in self.examples[split] if _has_gold(e)]
            if labels and labelled:
                check_labels(labelled, labels, origin)
        self.task = build_task(config, labels)
        self.tokenizer = Tokenizer.from_pretrained(model_dir)
        checkpoint = latest_checkpoint(self.out) if resume else None
        source = checkpoint or model_dir
        base = ModelConfig.from_pretrained(source)
        check_role(source, base, self.task.head)
        for key, value in config.expect_model.items():
            if getattr(base, key, None) != value:
                raise ConfigError(
                    f"the hparams say {key}={value} but {source / 'config.json'} has "
                    f"{key}={getattr(base, key, None)}; use the model the hparams were written "
                    f"for, or drop {key} from the hparams")
        model_config = base if self.task.kind == "mrc" else with_labels(
            base, labels, regression=self.task.kind == "regression")
        torch.manual_seed(config.seed)
        # A head trained for another task (same `classifier` name, other meaning) is not loaded.
        same_head = self.task.head in {head_of_architecture(a) for a in
                                       base.extra.get("architectures") or []}
        self.model = load_model(source, self.task.head, config=model_config,
                                exclude=() if same_head else ("classifier.", "qa_outputs."))
        # ELECTRA's fine-tuning decays the lr layer by layer (0.8) unless told otherwise.
        self.layer_decay = config.layer_decay if config.layer_decay is not None else \
            default_layer_decay(base)
        self.checkpoint = checkpoint
        limit = min(config.max_seq_length, self.model.config.max_position_embeddings)
        self.features: dict[str, Features] = {
            # dev/test: `encode_eval` when the task has one (MRC keeps every example there)
            split: (self.task.encode if split == "train" else getattr(
                self.task, "encode_eval", self.task.encode))(examples, self.tokenizer, limit)
            for split, examples in self.examples.items() if examples
        }

    def predict(self, split: str) -> Any:
        """Predictions of the current model for `split`."""
        self.model.eval()
        with inference(self.dtype):
            return self.task.predict(self.model, self.examples[split], self.features[split],
                                     self.config.eval_batch_size, self.tokenizer.pad_token_id)

    def scores(self, split: str, predictions: Any = None) -> dict[str, float]:
        """Official metrics on `split` (which must have gold labels)."""
        predictions = self.predict(split) if predictions is None else predictions
        return self.task.score(self.examples[split], predictions)


def _has_gold(example: Any) -> bool:
    return getattr(example, "label", None) is not None or getattr(example, "tags", None) \
        is not None or bool(getattr(example, "answers", ()))


def run_finetune(config: FinetuneConfig, resume: bool = False) -> dict[str, Any]:
    """Fine-tune (and/or evaluate) as `config` says; returns and writes `results.json`."""
    out = Path(config.output_dir)
    if config.do_train and not resume and latest_checkpoint(out) is not None:
        raise CheckpointError(f"{out} already holds checkpoints; pass --resume to continue "
                              f"that run, or choose another output_dir")
    run = FinetuneRun(config, resume=resume)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "finetune_config.json",
                      json.dumps(to_dict(config), indent=2, ensure_ascii=False) + "\n")
    results: dict[str, Any] = {"task": config.task, "kind": config.kind, "model": config.model,
                               "seed": config.seed, "main_metric": run.task.main_metric,
                               "dtype": run.dtype, "layer_decay": run.layer_decay}
    has_dev = "dev" in run.features and config.do_eval
    if has_dev and not all(_has_gold(e) for e in run.examples["dev"]):
        logger.warning("%s: the dev set has examples without labels; it is not evaluated "
                       "(the last model is kept instead of the best)", config.dev or "dev")
        has_dev = False
    for split, features in run.features.items():  # MRC: answers relocated / not found
        if isinstance(getattr(features.task_data, "stats", None), dict):
            results[f"{split}_features"] = features.task_data.stats
    if config.do_train:
        results.update(_train(run, has_dev))
    final_dir = out / BEST_DIR if (out / BEST_DIR).is_dir() else out / "model"
    if config.do_train and final_dir.is_dir():
        run.model = load_model(final_dir, run.task.head)
    if has_dev:
        results["dev"] = run.scores("dev")
    if "test" in run.features:
        predictions = run.predict("test")
        if config.write_test_outputs:
            path = out / PREDICTION_FILES[run.task.kind]
            run.task.write_predictions(path, run.examples["test"], predictions)
            results["test_predictions"] = str(path)
        if all(_has_gold(e) for e in run.examples["test"]):
            results["test"] = run.scores("test", predictions)
    atomic_write_text(out / RESULTS_NAME,
                      json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return results


def _train(run: FinetuneRun, has_dev: bool) -> dict[str, Any]:
    config, out = run.config, Path(run.config.output_dir)
    stream = BatchStream(run.features["train"], config.batch_size, run.tokenizer.pad_token_id,
                         config.seed)
    steps_per_epoch = stream.steps_per_epoch
    total_steps = max(1, math.ceil(config.epochs * steps_per_epoch))
    train_config = TrainConfig(
        total_steps=total_steps, batch_size=config.batch_size, grad_accum=config.grad_accum,
        optim=OptimConfig(lr=config.lr, weight_decay=config.weight_decay, warmup=config.warmup,
                          schedule=config.schedule, layer_decay=run.layer_decay,
                          bias_correction=config.bias_correction,
                          max_grad_norm=config.max_grad_norm),
        dtype=run.dtype, seed=config.seed,
        save_checkpoint_steps=steps_per_epoch if config.save_checkpoints else 0,
        report_steps=max(1, min(50, steps_per_epoch // 5)),
        eval_steps=steps_per_epoch if has_dev else 0, keep_last=1, progress=config.progress,
    )
    best = BestOnDev(out / "best.json", config.early_stopping,
                     resume_step=checkpoint_step(run.checkpoint) if run.checkpoint else None)
    main = f"eval_{run.task.main_metric}"

    def evaluate() -> dict[str, float]:
        return run.task.score(run.examples["dev"], run.task.predict(
            run.model, run.examples["dev"], run.features["dev"], config.eval_batch_size,
            run.tokenizer.pad_token_id))

    def on_evaluate(step: int, metrics: dict[str, float]) -> bool:
        return best.update(step, metrics.get(main, float("nan")), lambda: save_dir_atomically(
            lambda d: run.model.save_pretrained(d, tokenizer=run.tokenizer), out / BEST_DIR))

    module = TaskModule(run.model, run.task)
    trainer = Trainer(module, stream, train_config, out, evaluate=evaluate if has_dev else None,
                      on_evaluate=on_evaluate if has_dev else None,
                      save_model=lambda d: run.model.save_pretrained(d, tokenizer=run.tokenizer))
    if run.checkpoint is not None:
        trainer.resume(run.checkpoint)
    last: dict[str, float] = {}
    if best.stopped:
        logger.warning("%s stopped early at step %d; nothing left to train", out, trainer.step)
    else:
        last = trainer.fit()
        save_dir_atomically(lambda d: run.model.save_pretrained(d, tokenizer=run.tokenizer),
                            out / "model")
    return {"steps": trainer.step, "steps_per_epoch": steps_per_epoch,
            "train_loss": last.get("loss"), "best_step": best.best_step,
            "stopped_early": best.stopped}


def checkpoint_step(checkpoint: Path) -> int:
    """The step of a checkpoint directory (`step-00000120` -> 120)."""
    return int(checkpoint.name.split("-")[-1])


class BestOnDev:
    """Best-on-dev bookkeeping in `best.json`: every evaluation (step, main metric), the
    best so far, early stopping. On resume, evaluations after the checkpoint's step are
    forgotten (they are replayed exactly), so the state always matches the checkpoint."""

    def __init__(self, path: Path, patience: int, resume_step: int | None) -> None:
        self.path = path
        self.patience = patience
        self.history: list[tuple[int, float]] = []
        self.stopped = False
        if resume_step is not None and path.is_file():
            state = json.loads(path.read_text(encoding="utf-8"))
            self.history = [(int(step), -math.inf if value is None else float(value))
                            for step, value in state.get("history", []) if step <= resume_step]
            self.stopped = bool(state.get("stopped")) and \
                int(state.get("stopped_step", resume_step + 1)) <= resume_step

    @property
    def best_step(self) -> int | None:
        """Step of the best evaluation (the first, on ties)."""
        if not self.history:
            return None
        best = max(value for _, value in self.history)
        return next(step for step, value in self.history if value == best)

    def update(self, step: int, value: float, save_best: Callable[[], None]) -> bool:
        """Record an evaluation; save the model when it is the best; True = stop early.
        A NaN metric (e.g. Pearson of constant predictions) counts as the worst."""
        value = -math.inf if math.isnan(value) else value
        improved = not self.history or value > max(v for _, v in self.history)
        self.history.append((step, value))
        if improved:
            save_best()
        since_best = len(self.history) - 1 - [s for s, _ in self.history].index(self.best_step)
        if self.patience and since_best >= self.patience:
            self.stopped = True
        state = {"best_step": self.best_step, "history": [
            [s, None if math.isinf(v) else v] for s, v in self.history],
            "stopped": self.stopped, "stopped_step": step if self.stopped else None}
        atomic_write_text(self.path, json.dumps(state, indent=2) + "\n")
        return self.stopped


# ---- configs: files, overrides, the Chinese-ELECTRA hparams, the trainer API -----------------
ELECTRA_HPARAMS = {
    "task_names": "task", "max_seq_length": "max_seq_length", "do_train": "do_train",
    "do_eval": "do_eval", "write_test_outputs": "write_test_outputs",
    "num_train_epochs": "epochs", "learning_rate": "lr", "train_batch_size": "batch_size",
    "eval_batch_size": "eval_batch_size", "layerwise_lr_decay": "layer_decay",
    "warmup_proportion": "warmup", "weight_decay_rate": "weight_decay",
    "doc_stride": "doc_stride", "max_query_length": "max_query_length",
    "n_best_size": "n_best", "max_answer_length": "max_answer_length",
}


ELECTRA_MODEL_HPARAMS = ("vocab_size", "embedding_size")


def hparams_to_dict(hparams: dict[str, Any], source: str = "hparams") -> dict[str, Any]:
    """Chinese-ELECTRA `--hparams` keys -> FinetuneConfig fields (unknown keys are errors)."""
    unknown = sorted(set(hparams) - set(ELECTRA_HPARAMS) - {"model_size"}
                     - set(ELECTRA_MODEL_HPARAMS))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(ELECTRA_HPARAMS))}")
    out = {ELECTRA_HPARAMS[k]: v for k, v in hparams.items() if k in ELECTRA_HPARAMS}
    # configure_finetuning.py: model_size "large" means lr 5e-5 and layer decay 0.9 unless
    # the hparams set them; vocab_size / embedding_size describe the model (checked on load).
    size = hparams.get("model_size")
    if size is not None and size not in ("small", "base", "large"):
        raise ConfigError(f"{source}: model_size={size!r}; ELECTRA's sizes are small, base, "
                          f"large")
    if size == "large":
        out.setdefault("lr", 5e-5)
        out.setdefault("layer_decay", ELECTRA_LARGE_LAYER_DECAY)
    expected = {k: hparams[k] for k in ELECTRA_MODEL_HPARAMS if k in hparams}
    if expected:
        out["expect_model"] = expected
    task = out.get("task")
    if isinstance(task, list):
        if len(task) != 1:
            raise ConfigError(f"{source}: task_names={task}: give exactly one task")
        out["task"] = task[0]
    return out


# Presets: the defaults of a seed's fine-tuning scripts, under a config file and overrides.
# "uer": UER-py's finetune/run_*.py (--learning_rate 2e-5, --batch_size 32, --epochs_num 3,
# --seq_length 128, --warmup 0.1, --seed 7, --scheduler linear; its build_optimizer uses
# AdamW(correct_bias=False) with weight decay 0.01 except bias/LayerNorm, and it clips no
# gradients). The miniatures' grid then varies epochs 3/5/8, batch 32/64, lr 3e-5/1e-4/3e-4.
FINETUNE_PRESETS: dict[str, dict[str, Any]] = {
    "uer": {"lr": 2e-5, "batch_size": 32, "epochs": 3.0, "max_seq_length": 128, "warmup": 0.1,
            "seed": 7, "schedule": "linear",
            **{k: UER_OPTIM[k] for k in ("weight_decay", "bias_correction", "max_grad_norm")}},
}


def preset_values(name: str | None) -> dict[str, Any]:
    """The FinetuneConfig values of preset `name` (none for None)."""
    if name is None:
        return {}
    if name not in FINETUNE_PRESETS:
        raise ConfigError(f"preset={name!r}; choose one of {', '.join(FINETUNE_PRESETS)}")
    return dict(FINETUNE_PRESETS[name])


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (),
                hparams: str | Path | None = None, preset: str | None = None
                ) -> FinetuneConfig:
    """A config from a preset's defaults, then a YAML/JSON file and/or a Chinese-ELECTRA
    hparams JSON, then `key=value` overrides (each later source wins)."""
    data = {**preset_values(preset), **(load_file(path) if path else {})}
    where = str(path) if path else (f"preset {preset}" if preset else "config")
    if hparams is not None:
        hparams = Path(hparams)
        try:
            values = json.loads(hparams.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{hparams}: cannot read the hparams JSON ({exc})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{hparams}: expected a JSON object")
        data.update(hparams_to_dict(values, str(hparams)))
        where = str(hparams)
    return recipe_from_data(FinetuneConfig, data, overrides, where)


class FinetuneTrainer:
    """A trainer built from a config object (see `build_trainer`)."""

    def __init__(self, config: FinetuneConfig) -> None:
        self.config = config

    def train(self, resume: bool = False) -> dict[str, Any]:
        """Fine-tune, evaluate on dev, predict test; returns `results.json`'s content."""
        return run_finetune(self.config, resume=resume)

    def evaluate(self, model_dir: str | None = None) -> dict[str, Any]:
        """Evaluate a fine-tuned model (default: this run's best) on dev/test."""
        best = Path(self.config.output_dir) / BEST_DIR
        model = model_dir or (str(best) if best.is_dir() else self.config.model)
        cfg = dataclasses.replace(self.config, model=model, do_train=False,
                                  output_dir=str(Path(self.config.output_dir) / "evaluation"))
        return run_finetune(cfg)


def build_trainer(
    config: FinetuneConfig | dict[str, Any] | str | Path | None = None,
    *,
    cfg_modify_fn: Callable[[FinetuneConfig], FinetuneConfig | None] | None = None,
    work_dir: str | Path | None = None,
    preset: str | None = None,
    **fields: Any,
) -> FinetuneTrainer:
    """A `FinetuneTrainer` from a config (object, dict, or YAML/JSON file) plus keyword
    fields (`model=`, `train=`, `task=`, ...). `preset` (e.g. "uer") fills the fields that a
    dict or file leaves unset. `cfg_modify_fn` receives the loaded config and returns it
    changed (or changes it in place); it is a `CardConfig`, so a ModelScope model card's
    hook runs unchanged (`cfg.train.max_epochs`, `cfg['dataset']['train']['labels']`, ...).
    `work_dir` is where everything is written.
    """
    if isinstance(config, FinetuneConfig):
        if preset is not None:
            raise ConfigError(f"build_trainer: preset={preset!r} fills unset fields, but a "
                              "FinetuneConfig object sets them all; pass a dict, a file or "
                              "keyword fields with the preset")
        data = to_dict(config)
    elif isinstance(config, dict):
        data = dict(config)
    elif config is not None:
        data = load_file(config)
    else:
        data = {}
    data = {**preset_values(preset), **data, **fields}
    if work_dir is not None:
        data["output_dir"] = str(work_dir)
    cfg = from_dict(FinetuneConfig, data, "build_trainer")
    if cfg_modify_fn is not None:
        card = CardConfig.of(cfg)
        changed = cfg_modify_fn(card)
        changed = changed if changed is not None else card
        if not isinstance(changed, FinetuneConfig):
            raise ConfigError("cfg_modify_fn must return a FinetuneConfig (or None)")
        values = changed.finetune_values() if isinstance(changed, CardConfig) \
            else to_dict(changed)
        cfg = from_dict(FinetuneConfig, values, "cfg_modify_fn result")
    return FinetuneTrainer(cfg)


# ---- ModelScope model-card hooks ---------------------------------------------------------
# A card's `cfg_modify_fn` edits ModelScope's config tree (`cfg.train.optimizer.lr`,
# `cfg['dataset']`, `cfg.task = 'sentence-similarity'`, ...). `CardConfig` is a
# FinetuneConfig that also takes those edits: the ones zhplm has a field for are applied,
# the rest (`preprocessor`, `lr_scheduler`, `model`'s sections, ...) are kept aside and unused.
MODELSCOPE_TASKS = {"sentence-similarity": "pair", "nli": "pair",
                    "text-classification": "classification", "sentiment-classification":
                    "classification", "named-entity-recognition": "ner",
                    "token-classification": "ner", "part-of-speech": "pos"}
# ModelScope dataset keys -> FinetuneConfig.fields roles (the JSON-lines field map).
MODELSCOPE_DATASET_ROLES = ("first_sequence", "second_sequence", "label")


class Section(dict):
    """A ModelScope config section: a dict whose keys are also attributes (a missing one
    reads as a new empty section, as addict does). `links` ties keys to fields of `owner`."""

    def __init__(self, data: dict[str, Any] | None = None, owner: Any = None,
                 links: dict[str, str] | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_links", links or {})
        for key, value in (data or {}).items():
            self[key] = value

    def __getitem__(self, key: str) -> Any:
        if key in self._links:
            return getattr(self._owner, self._links[key])
        if key not in self:
            super().__setitem__(key, Section())
        return super().__getitem__(key)

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, dict) and not isinstance(value, Section):
            value = Section(value)
        if key in self._links:
            setattr(self._owner, self._links[key], value)
        else:
            super().__setitem__(key, value)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        return self[key]

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


class TrainPath(str):
    """`cfg.train` in a card hook: still the train file's path (a str), and also ModelScope's
    `train` section: `max_epochs` is `epochs`, `optimizer.lr` is `lr`,
    `dataloader.batch_size_per_gpu` is `batch_size`; other keys (`lr_scheduler`, hooks) are
    kept and unused (zhplm's schedule follows `schedule`/`warmup` over `epochs`)."""

    section: Section

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__") or key == "section":
            raise AttributeError(key)
        return self.section[key]

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "section":
            object.__setattr__(self, key, value)
        else:
            self.section[key] = value


@dataclass
class CardConfig(FinetuneConfig):
    """The FinetuneConfig a `cfg_modify_fn` receives: its fields as usual, plus ModelScope's
    tree (`cfg[...]`, `cfg.train.*`, `cfg.dataset.train.*`, `cfg.task` names such as
    'sentence-similarity')."""

    @classmethod
    def of(cls, config: FinetuneConfig) -> CardConfig:
        """A card view of `config` (the same values)."""
        card = cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})
        object.__setattr__(card, "_extras", Section())
        object.__setattr__(card, "_modelscope_task", None)
        return card

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "task" and "_extras" in self.__dict__ and isinstance(value, str) and \
                value not in TASK_KINDS and value not in BUILTIN_TASKS:
            object.__setattr__(self, "_modelscope_task", value)
            if value in MODELSCOPE_TASKS and MODELSCOPE_TASKS[value] != self.kind:
                object.__setattr__(self, "task", MODELSCOPE_TASKS[value])
            elif value in MODELSCOPE_TASKS:
                pass  # already that kind (e.g. a built-in task): keep it
            else:
                logger.info("cfg_modify_fn: task %r is not a zhplm task; keeping task=%r",
                            value, self.task)
            return
        if key in self.__dataclass_fields__ or "_extras" not in self.__dict__ or \
                isinstance(getattr(type(self), key, None), property):
            object.__setattr__(self, key, value)
        else:
            self._extras[key] = value

    def __getattribute__(self, key: str) -> Any:
        value = object.__getattribute__(self, key)
        if key == "train" and "_extras" in object.__getattribute__(self, "__dict__") and \
                not isinstance(value, TrainPath):
            value = TrainPath(value or "")
            value.section = Section(owner=self, links={
                "max_epochs": "epochs", "optimizer": "_optimizer",
                "dataloader": "_dataloader"})
            object.__setattr__(self, "train", value)
        return value

    def __getattr__(self, key: str) -> Any:  # not a field: ModelScope's tree
        if key.startswith("_") or "_extras" not in self.__dict__:
            raise AttributeError(key)
        return self._extras[key]

    @property
    def _optimizer(self) -> Section:
        return Section(owner=self, links={"lr": "lr", "weight_decay": "weight_decay"})

    @_optimizer.setter
    def _optimizer(self, value: dict[str, Any]) -> None:
        section = self._optimizer
        for key, item in value.items():
            section[key] = item

    @property
    def _dataloader(self) -> Section:
        return Section(owner=self, links={"batch_size_per_gpu": "batch_size"})

    @_dataloader.setter
    def _dataloader(self, value: dict[str, Any]) -> None:
        section = self._dataloader
        for key, item in value.items():
            section[key] = item

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, key, value)

    def __contains__(self, key: str) -> bool:
        return key in self.__dataclass_fields__ or dict.__contains__(self._extras, key)

    def finetune_values(self) -> dict[str, Any]:
        """The FinetuneConfig fields, with the card's `dataset.train` keys applied:
        `first_sequence`/`second_sequence`/`label` name the JSON-lines fields
        (`fields`) and `labels` is the label list (`labels`)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(FinetuneConfig)}
        values["train"] = str(values["train"]) or None
        dataset = self._extras.get("dataset") or {}
        spec = dataset.get("train") if isinstance(dataset, dict) else None
        if isinstance(spec, dict):
            fields = dict(values["fields"])
            for role in MODELSCOPE_DATASET_ROLES:
                if isinstance(spec.get(role), str) and spec[role]:
                    fields[role] = spec[role]
            values["fields"] = fields
            if spec.get("labels"):
                values["labels"] = [str(label) for label in spec["labels"]]
        return values
