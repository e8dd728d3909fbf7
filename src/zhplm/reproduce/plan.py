"""What a `zhplm reproduce` run will do, fixed before any work starts and saved as
`OUT/plan.json` (a resumed run follows the saved plan, so its tables are the same).

Two tables, as the seeds report them:
- **scaling**: UER-py's miniatures tiny / mini / small, pre-trained with the MLM recipe on the
  same number of tokens each;
- **objectives**: one size (tiny) at equal *compute*: MLM (token masking), whole-word MLM,
  StructBERT, ELECTRA (the discriminator is fine-tuned) and LERT (jieba labels), each given
  the training FLOPs of MLM's token budget, plus random initialisation.

Compute is counted with a fixed model of training FLOPs per token (`flops_per_token`: 6 x
the encoder's weights, the attention scores, and the output heads at the positions they
predict), so the plan is deterministic; the machine's speed is measured once (a few MLM
steps) only to cut the run to `--budget-minutes` and to print the estimate.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zhplm.config import electra_preset, preset
from zhplm.errors import ConfigError
from zhplm.tasks.builtin import BUILTIN_TASKS as BUILTIN_KINDS

TABLES = ("scaling", "objectives")
SCALING_SIZES = ("tiny", "mini", "small")
OBJECTIVE_SIZE = "tiny"
SEQ_LENGTH = 128
BATCH_SIZE = 32
MASK_PROB = 0.15
# Fine-tuning cost model: tokens per example by task kind (classification fitted on the
# built-in reviews, tagging on People's Daily, where an example costs twice as much; pair and
# MRC are guesses from their lengths, not yet fitted)
TOKENS_PER_EXAMPLE = {"classification": 48, "pair": 64, "ner": 96, "pos": 96, "mrc": 384}
EVAL_EXAMPLES = 200  # dev examples scored after each fine-tuning epoch
BUILTIN_TASKS = ("reviews-sentiment", "pd-ner", "pd-pos")
PRETRAIN_SHARE = 0.5  # of the budget left after data preparation
MIN_STEPS = 10  # fewer pre-training steps than this: an error (nothing to compare)
MAX_CORPUS_EPOCHS = 50  # more passes over the corpus than this: too small for the budget
# Fine-tuning cost = its FLOPs at FINETUNE_FLOPS_SCALE x pre-training's seconds per GFLOP
# (batches of 16 short, padded examples) + FINETUNE_SECONDS_PER_TOKEN for the work that does
# not grow with the model (tokenising, collating, the optimiser step's Python, scoring).
# Fitted to the 144 runs of the full default run of docs/reproduce.md (4261 s; the earlier
# FLOPs + 5 s per run model predicted 1758 s); fine-tuning's total within 2.4 %, a
# column within 0.7-1.7x.
FINETUNE_FLOPS_SCALE = 1.1
FINETUNE_SECONDS_PER_TOKEN = 4.1e-5
# Fine-tuning: the settings where `make demo`'s random tiny model learns sentiment from 500
# examples (lr 5e-4 at batch 32 left every row at the majority class in 25-40 steps)
FINETUNE_LR = 1e-3
FINETUNE_BATCH = 16


@dataclass
class Row:
    """One row of a table: a pre-training recipe (or random initialisation)."""

    table: str
    name: str
    size: str
    objective: str  # mlm, wwm, structbert, electra, lert, random
    steps: int = 0
    tokens: int = 0
    run: str = ""  # pre-training run directory (relative to OUT); shared rows share it

    @property
    def pretrained(self) -> bool:
        return self.objective != "random"


@dataclass
class TaskSpec:
    """One fine-tuning column: a task on a training subset."""

    name: str  # column name, e.g. "reviews-sentiment (low)"
    task: str  # built-in task name, or a kind for files
    variant: str  # "full" or "low"
    max_train_examples: int
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    epochs: float = 3.0


@dataclass
class Plan:
    """Everything a run does; `plan.json`."""

    tables: list[str]
    rows: list[Row]
    tasks: list[TaskSpec]
    seeds: int
    grid: dict[str, list[Any]]
    corpus: list[str]
    vocab_size: int
    budget_minutes: float
    pretrain_tokens: int  # MLM-tiny's tokens; the compute budget of the objective rows
    seconds_per_gflop: float  # measured once, for the estimate
    estimate: dict[str, float] = field(default_factory=dict)
    max_eval_examples: int = EVAL_EXAMPLES
    seq_length: int = SEQ_LENGTH
    batch_size: int = BATCH_SIZE

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        data["rows"] = [Row(**r) for r in data["rows"]]
        data["tasks"] = [TaskSpec(**t) for t in data["tasks"]]
        return cls(**data)

    def pretrain_runs(self) -> list[Row]:
        """One row per distinct pre-training run (shared rows once)."""
        seen: dict[str, Row] = {}
        for row in self.rows:
            if row.pretrained and row.run not in seen:
                seen[row.run] = row
        return list(seen.values())

    def describe(self) -> str:
        """The plan as the user sees it before the run starts."""
        lines = [f"zhplm reproduce: tables {', '.join(self.tables)}; {len(self.tasks)} task "
                 f"columns x {self.seeds} seeds x grid "
                 f"{' '.join(f'{k}={v}' for k, v in self.grid.items())}",
                 f"pre-training budget: {self.pretrain_tokens:,} tokens per row for the "
                 f"scaling table (equal tokens); the objective rows get the training FLOPs of "
                 f"MLM-{OBJECTIVE_SIZE} on those tokens (equal compute)"]
        for row in self.pretrain_runs():
            lines.append(f"  {row.run:<28} {row.steps:>6} steps x {self.batch_size} x "
                         f"{self.seq_length}"
                         f" = {row.tokens:>10,} tokens")
        for task in self.tasks:
            lines.append(f"  fine-tune {task.name}: up to {task.max_train_examples} training "
                         f"examples, {task.epochs:g} epochs")
        e = self.estimate
        lines.append(f"estimated time: {e.get('total', 0) / 60:.0f} min (data "
                     f"{e.get('data', 0) / 60:.1f}, pre-training {e.get('pretrain', 0) / 60:.1f}"
                     f", fine-tuning {e.get('finetune', 0) / 60:.1f}) of the "
                     f"{self.budget_minutes:g}-minute budget")
        return "\n".join(lines)


# ---------------------------------------------------------------------------- cost model
def _shape(size: str) -> tuple[int, int, int]:
    config = preset(size, vocab_size=100)
    return config.num_hidden_layers, config.hidden_size, config.intermediate_size


def _encoder_flops(layers: int, hidden: int, inter: int, seq: int = SEQ_LENGTH) -> float:
    """Training FLOPs per token of a post-LN encoder: 6 x weights + attention scores."""
    weights = layers * (4 * hidden * hidden + 2 * hidden * inter)
    attention = layers * 2 * seq * hidden  # QK^T and AV
    return 6.0 * weights + 6.0 * attention


def flops_per_token(objective: str, size: str, vocab_size: int, seq: int = SEQ_LENGTH
                    ) -> float:
    """Training FLOPs per input token of a row's recipe (the plan's fixed cost model)."""
    if objective == "electra":
        disc, gen = electra_preset(f"electra-{size}", vocab_size=vocab_size)
        cost = _encoder_flops(disc.num_hidden_layers, disc.hidden_size, disc.intermediate_size,
                              seq)
        cost += _encoder_flops(gen.num_hidden_layers, gen.hidden_size, gen.intermediate_size,
                               seq)
        embedding = disc.embedding_size or disc.hidden_size
        cost += 6.0 * MASK_PROB * (gen.hidden_size * embedding + embedding * vocab_size)
        return cost + 6.0 * disc.hidden_size * disc.hidden_size  # the per-token head
    layers, hidden, inter = _shape(size)
    cost = _encoder_flops(layers, hidden, inter, seq)
    predicted = MASK_PROB + (0.05 if objective == "structbert" else 0.0)  # + word order
    cost += 6.0 * predicted * (hidden * hidden + hidden * vocab_size)
    if objective == "lert":
        cost += 6.0 * MASK_PROB * hidden * (28 + 13 + 14)
    return cost


def finetune_tokens(task: TaskSpec, cells: int, seeds: int) -> float:
    """Tokens one task column reads for one row: training passes, plus the dev evaluation
    after each epoch (a forward pass: a third of a training token), every cell and seed."""
    passes = task.max_train_examples * task.epochs + EVAL_EXAMPLES * task.epochs / 3
    return passes * tokens_per_example(task) * cells * seeds


def tokens_per_example(task: TaskSpec) -> int:
    """The cost model's tokens per example of a task (by its kind)."""
    return TOKENS_PER_EXAMPLE[BUILTIN_KINDS.get(task.task, task.task)]


def finetune_flops(size: str, task: TaskSpec, cells: int, seeds: int) -> float:
    """FLOPs of one task column for one row: train + dev evaluation, every cell and seed."""
    layers, hidden, inter = _shape(size)
    per_token = _encoder_flops(layers, hidden, inter, seq=tokens_per_example(task))
    return finetune_tokens(task, cells, seeds) * per_token


# ---------------------------------------------------------------------------- the plan
def table_rows(tables: list[str]) -> list[Row]:
    """The rows of the requested tables (MLM-tiny is one run shared by both tables)."""
    rows: list[Row] = []
    if "scaling" in tables:
        rows += [Row("scaling", f"MLM {size}", size, "mlm", run=f"pretrain/mlm-{size}")
                 for size in SCALING_SIZES]
    if "objectives" in tables:
        s = OBJECTIVE_SIZE
        rows += [Row("objectives", "MLM (token)", s, "mlm", run=f"pretrain/mlm-{s}"),
                 Row("objectives", "whole-word MLM", s, "wwm", run=f"pretrain/wwm-{s}"),
                 Row("objectives", "StructBERT", s, "structbert", run=f"pretrain/structbert-{s}"),
                 Row("objectives", "ELECTRA (discriminator)", s, "electra",
                     run=f"pretrain/electra-{s}"),
                 Row("objectives", "LERT (jieba labels)", s, "lert", run=f"pretrain/lert-{s}"),
                 Row("objectives", "random init", s, "random", run="")]
    if "scaling" in tables and "objectives" not in tables:
        rows.append(Row("scaling", "random init", OBJECTIVE_SIZE, "random", run=""))
    return rows


def builtin_tasks(full: int, low: int) -> list[TaskSpec]:
    """Each built-in task on a full subset and a low-resource one."""
    out = []
    for name in BUILTIN_TASKS:
        out.append(TaskSpec(f"{name} (full)", name, "full", full, epochs=3.0))
        out.append(TaskSpec(f"{name} (low)", name, "low", low, epochs=5.0))
    return out


def directory_tasks(directories: list[str], full: int, low: int) -> list[TaskSpec]:
    """Task directories in UER-py's dataset layout, checked before any work starts."""
    out = []
    for name in directories:
        directory = Path(name)
        if not directory.is_dir():
            raise ConfigError(f"--tasks {directory}: not a directory (UER-py's layout: "
                              f"train.tsv, dev.tsv, test.tsv; or train.json / dev.json)")
        kind, train, dev, test = _task_files(directory)
        label = directory.name
        out.append(TaskSpec(f"{label} (full)", kind, "full", full, str(train), str(dev),
                            str(test) if test else None))
        out.append(TaskSpec(f"{label} (low)", kind, "low", low, str(train), str(dev),
                            str(test) if test else None, epochs=5.0))
    return out


def _task_files(directory: Path) -> tuple[str, Path, Path, Path | None]:
    if (directory / "train.json").is_file():
        dev = directory / "dev.json"
        if not dev.is_file():
            raise ConfigError(f"--tasks {directory}: train.json but no dev.json")
        test = directory / "test.json"
        return "mrc", directory / "train.json", dev, test if test.is_file() else None
    train = directory / "train.tsv"
    if not train.is_file():
        raise ConfigError(f"--tasks {directory}: no train.tsv (UER-py's layout: train.tsv, "
                          f"dev.tsv, test.tsv with a header line; or CMRC-style train.json / "
                          f"dev.json)")
    dev = directory / "dev.tsv"
    if not dev.is_file():
        raise ConfigError(f"--tasks {directory}: no dev.tsv beside train.tsv")
    with train.open(encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
    if header[:2] == ["text_a", "label"] and len(header) == 2:
        kind = "ner"  # UER-py's NER TSV: characters and tags, space separated
    elif "label" in header and "text_b" in header:
        kind = "pair"
    elif "label" in header and "text_a" in header:
        kind = "classification"
    else:
        raise ConfigError(f"{train}:1: header {header} is not UER-py's (label, text_a[, "
                          f"text_b]) or NER's (text_a, label)")
    test = directory / "test.tsv"
    return kind, train, dev, test if test.is_file() else None


def corpus_characters(files: list[str]) -> int:
    """Characters of the corpus files (Chinese text: about one token each)."""
    total = 0
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"--corpus {path}: no such file")
        total += path.stat().st_size // 3  # UTF-8 Chinese: 3 bytes a character
    return total


def model_keys(rows: list[Row]) -> dict[str, Row]:
    """The distinct models to fine-tune: a pre-training run, or random init of a size."""
    keys: dict[str, Row] = {}
    for row in rows:
        keys.setdefault(row.run or f"random-{row.size}", row)
    return keys


def build_plan(*, tables: list[str], seeds: int, budget_minutes: float, tasks: list[TaskSpec],
               corpus: list[str], corpus_tokens: int, seconds_per_gflop: float,
               data_seconds: float, vocab_size: int = 8000,
               grid: dict[str, list[Any]] | None = None,
               pretrain_tokens: int | None = None, fit_tasks: bool = True,
               seq_length: int = SEQ_LENGTH, batch_size: int = BATCH_SIZE) -> Plan:
    """Fit the tables into `budget_minutes`: fine-tuning gets up to half of it (the "full"
    subsets are cut to fit, down to twice the low-resource size), pre-training the rest
    (or exactly `pretrain_tokens`). Every bad setting is an error here, before any work."""
    for table in tables:
        if table not in TABLES:
            raise ConfigError(f"--tables {table!r}: choose from {', '.join(TABLES)}")
    if not tables:
        raise ConfigError("--tables: name at least one of scaling, objectives")
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: must be >= 1")
    if budget_minutes <= 0:
        raise ConfigError(f"--budget-minutes {budget_minutes:g}: must be > 0")
    if seq_length < 16 or batch_size < 1:
        raise ConfigError(f"--seq-length {seq_length} / --batch-size {batch_size}: need a "
                          f"sequence of >= 16 tokens and a batch of >= 1")

    def cost(objective: str, size: str) -> float:
        return flops_per_token(objective, size, vocab_size, seq_length)

    grid = grid or {"lr": [FINETUNE_LR]}
    cells = math.prod(len(v) for v in grid.values())
    rows = table_rows(tables)
    models = model_keys(rows)
    budget = budget_minutes * 60.0

    def finetune_seconds() -> float:
        flops = sum(finetune_flops(r.size, task, cells, seeds)
                    for r in models.values() for task in tasks)
        tokens = sum(finetune_tokens(task, cells, seeds) for _ in models for task in tasks)
        return (flops / 1e9 * seconds_per_gflop * FINETUNE_FLOPS_SCALE
                + tokens * FINETUNE_SECONDS_PER_TOKEN)

    if fit_tasks:  # cut the "full" subsets to the fine-tuning share of the budget
        share = (budget - data_seconds) * (1.0 - PRETRAIN_SHARE)
        for task in tasks:
            if task.variant != "full":
                continue
            low = next((t.max_train_examples for t in tasks
                        if t.variant == "low" and t.task == task.task), 100)
            while finetune_seconds() > share and task.max_train_examples > 2 * low:
                task.max_train_examples = max(2 * low, int(task.max_train_examples * 0.8))
    runs = {r.run: r for r in rows if r.pretrained}
    base = cost("mlm", OBJECTIVE_SIZE)
    # tokens of a run per budget token: scaling rows and MLM 1, objective rows base / own
    weights = {run: (1.0 if r.table == "scaling" or r.objective == "mlm" else
                     base / cost(r.objective, r.size)) for run, r in runs.items()}
    flops_per_budget_token = sum(weights[run] * cost(r.objective, r.size)
                                 for run, r in runs.items())
    tune = finetune_seconds()
    if pretrain_tokens is None:
        available = budget - data_seconds - tune
        if runs and available <= 0:
            raise ConfigError(
                f"--budget-minutes {budget_minutes:g} is too small: fine-tuning alone needs "
                f"about {tune / 60:.0f} min and data preparation {data_seconds / 60:.0f} min "
                f"on this machine; raise the budget, or use fewer --seeds, --tables or tasks")
        pretrain_tokens = int(available / seconds_per_gflop * 1e9 / flops_per_budget_token) \
            if runs else 0
    step_tokens = batch_size * seq_length
    for run, row in runs.items():
        steps = int(pretrain_tokens * weights[run] // step_tokens)
        if steps < MIN_STEPS:
            raise ConfigError(
                f"--budget-minutes {budget_minutes:g} leaves {row.name} ({row.table}) "
                f"{steps} pre-training steps, fewer than {MIN_STEPS}: too small for even one "
                f"row; raise the budget (or --pretrain-tokens)")
        if steps * step_tokens > MAX_CORPUS_EPOCHS * max(corpus_tokens, 1):
            raise ConfigError(
                f"the corpus (about {corpus_tokens:,} tokens) is too small for this budget: "
                f"{row.name} would read it {steps * step_tokens / max(corpus_tokens, 1):.0f} "
                f"times (at most {MAX_CORPUS_EPOCHS}); add text with --corpus, or lower "
                f"--budget-minutes")
        row.steps, row.tokens = steps, steps * step_tokens
    for row in rows:  # shared runs: the same steps in both tables
        if row.pretrained:
            row.steps, row.tokens = runs[row.run].steps, runs[row.run].tokens
    pretrain_seconds = sum(r.tokens * cost(r.objective, r.size)
                           for r in runs.values()) / 1e9 * seconds_per_gflop
    estimate = {"data": data_seconds, "pretrain": pretrain_seconds, "finetune": tune,
                "total": data_seconds + pretrain_seconds + tune}
    return Plan(tables=list(tables), rows=rows, tasks=tasks, seeds=seeds, grid=grid,
                corpus=list(corpus), vocab_size=vocab_size, budget_minutes=budget_minutes,
                pretrain_tokens=pretrain_tokens, seconds_per_gflop=seconds_per_gflop,
                estimate=estimate, seq_length=seq_length, batch_size=batch_size)
