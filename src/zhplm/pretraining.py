"""The pre-training recipe: a dataset from `zhplm preprocess` -> a pre-trained HF model dir.

One readable function, `run_pretraining`, wires the shared pieces together: tokenizer and
dataset (checked to share a vocab), instances per epoch, dynamic masking, the objectives,
and the trainer. Run it with `zhplm pretrain --config configs/pretrain/demo.yaml`, or under
`torchrun --nproc_per_node N -m zhplm pretrain ...` for several processes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zhplm.config import atomic_write_text, preset
from zhplm.data.collate import InstanceStream, PretrainCollator
from zhplm.data.instances import InstanceConfig, Instances, SpecialIds, build_instances
from zhplm.data.masking import MaskingConfig
from zhplm.data.shards import TokenDataset
from zhplm.errors import CheckpointError, ConfigError
from zhplm.modeling.bert import BertForMaskedLM, BertForPreTraining
from zhplm.objectives.pretraining import (
    SENTENCE_OBJECTIVES,
    PretrainingModule,
    build_objectives,
)
from zhplm.recipe import to_dict
from zhplm.tokenization import Tokenizer
from zhplm.training.checkpoint import latest_checkpoint
from zhplm.training.distributed import init_distributed, shutdown
from zhplm.training.trainer import TrainConfig, Trainer

logger = logging.getLogger("zhplm")
DEV_EPOCH = 2**31 - 1  # masking seed of the held-out instances: fixed, unlike training epochs


@dataclass
class ModelSection:
    """The model to train: a size preset, or an existing model directory to start from."""

    preset: str = "tiny"
    init_from: str | None = None
    max_position_embeddings: int = 512
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1


@dataclass
class DataSection:
    """The dataset (from `zhplm preprocess`), its vocab, and how instances are built."""

    dataset: str = ""
    vocab: str | None = None
    kind: str = "full_sentences"
    seq_length: int = 128
    short_seq_prob: float = 0.1
    dev_fraction: float = 0.01
    eval_instances: int = 512

    def instance_config(self) -> InstanceConfig:
        return InstanceConfig(self.kind, self.seq_length, self.short_seq_prob)


@dataclass
class PretrainRecipe:
    """Everything one pre-training run needs; filled from YAML/JSON plus overrides."""

    output_dir: str = "runs/pretrain"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    objectives: dict[str, float] = field(default_factory=lambda: {"mlm": 1.0})
    train: TrainConfig = field(default_factory=TrainConfig)


def split_documents(num_documents: int, dev_fraction: float) -> tuple[list[int], list[int]]:
    """Every k-th document (k = 1/dev_fraction) is held out for evaluation."""
    if dev_fraction <= 0:
        return list(range(num_documents)), []
    stride = max(2, round(1 / dev_fraction))
    dev = list(range(stride - 1, num_documents, stride))
    held = set(dev)
    return [i for i in range(num_documents) if i not in held], dev


def _load_model(recipe: PretrainRecipe, tokenizer: Tokenizer, resume_from: Path | None):
    sentence = any(recipe.objectives.get(n) for n in SENTENCE_OBJECTIVES)
    model_class = BertForPreTraining if sentence else BertForMaskedLM
    source = resume_from or (Path(recipe.model.init_from) if recipe.model.init_from else None)
    if source is not None:
        model = model_class.from_pretrained(source)
    else:
        config = preset(
            recipe.model.preset, vocab_size=tokenizer.vocab_size,
            pad_token_id=tokenizer.pad_token_id,
            max_position_embeddings=recipe.model.max_position_embeddings,
            hidden_dropout_prob=recipe.model.hidden_dropout_prob,
            attention_probs_dropout_prob=recipe.model.attention_probs_dropout_prob,
        )
        model = model_class(config)
    if model.config.vocab_size < tokenizer.vocab_size:
        raise ConfigError(
            f"the model has vocab_size={model.config.vocab_size} but the vocab has "
            f"{tokenizer.vocab_size} tokens; use the model's own vocab (data.vocab)"
        )
    if recipe.data.seq_length > model.config.max_position_embeddings:
        raise ConfigError(
            f"data.seq_length={recipe.data.seq_length} exceeds the model's "
            f"max_position_embeddings={model.config.max_position_embeddings}"
        )
    return model.train()


def _tokenizer(recipe: PretrainRecipe) -> Tokenizer:
    vocab = recipe.data.vocab or recipe.model.init_from
    if not vocab:
        raise ConfigError("data.vocab is required (a vocab.txt or a model directory) unless "
                          "model.init_from names a model directory with its tokenizer")
    return Tokenizer.from_pretrained(vocab)


def make_evaluator(module: PretrainingModule, collate: PretrainCollator, dev: Instances,
                   limit: int, batch_size: int):
    """Held-out MLM (and sentence) loss/accuracy on fixed masks."""
    count = min(limit, len(dev))

    def evaluate() -> dict[str, float]:
        totals: dict[str, float] = {}
        for start in range(0, count, batch_size):
            batch = collate(dev, list(range(start, min(count, start + batch_size))), DEV_EPOCH)
            _, stats = module(batch, {n: torch.tensor(1.0) for n in
                                      (o.name for o, _ in module.objectives)})
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + float(value)
        out = {}
        for objective, _ in module.objectives:
            n = totals.get(f"{objective.name}_count", 0.0)
            if n:
                out[f"{objective.name}_loss"] = totals[f"{objective.name}_loss_sum"] / n
                out[f"{objective.name}_acc"] = totals[f"{objective.name}_correct"] / n
        return out

    return evaluate


def run_pretraining(recipe: PretrainRecipe, resume: bool = False) -> dict[str, Any]:
    """Train as the recipe says; returns the final metrics. Writes `output_dir/model`."""
    env = init_distributed()
    try:
        return _run(recipe, resume, env)
    finally:
        shutdown(env)


def _run(recipe: PretrainRecipe, resume: bool, env) -> dict[str, Any]:  # noqa: ANN001
    out = Path(recipe.output_dir)
    checkpoint = latest_checkpoint(out)
    if checkpoint is not None and not resume:
        raise CheckpointError(
            f"{out} already holds checkpoints (latest {checkpoint.name}); pass --resume to "
            f"continue that run, or choose another output_dir"
        )
    if resume and checkpoint is None:
        logger.warning("--resume: no checkpoint in %s; starting from scratch", out)
    torch.manual_seed(recipe.train.seed)
    tokenizer = _tokenizer(recipe)
    if not recipe.data.dataset:
        raise ConfigError("data.dataset is required: a directory made by `zhplm preprocess`")
    dataset = TokenDataset(recipe.data.dataset)
    dataset.check_vocab(recipe.data.vocab or recipe.model.init_from,
                        source=str(recipe.data.dataset))
    model = _load_model(recipe, tokenizer, checkpoint if resume else None)
    module = PretrainingModule(model, build_objectives(recipe.objectives))
    special = SpecialIds.from_tokenizer(tokenizer)
    collate = PretrainCollator(recipe.masking, special, recipe.train.seed)
    train_docs, dev_docs = split_documents(dataset.num_documents, recipe.data.dev_fraction)
    instance_config = recipe.data.instance_config()

    def build_epoch(epoch: int) -> Instances:
        seed = int(np.random.SeedSequence((recipe.train.seed, epoch)).generate_state(1)[0])
        return build_instances(dataset.document, train_docs, instance_config, special, seed)

    stream = InstanceStream(build_epoch, collate, recipe.train.micro_batch_size(env.world_size),
                            env.rank, env.world_size, recipe.train.seed)
    evaluate = None
    if dev_docs:
        dev = build_instances(dataset.document, dev_docs, instance_config, special,
                              seed=recipe.train.seed + 1)
        if len(dev):
            evaluate = make_evaluator(module, collate, dev, recipe.data.eval_instances,
                                      recipe.train.micro_batch_size(1))
    trainer = Trainer(module, stream, recipe.train, out, env=env, evaluate=evaluate,
                      save_model=lambda d: model.save_pretrained(d, tokenizer=tokenizer))
    if resume and checkpoint is not None:
        trainer.resume(checkpoint)
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "recipe.json", json.dumps(to_dict(recipe), indent=2) + "\n")
    metrics = trainer.fit()
    if env.is_main:
        model.save_pretrained(out / "model", tokenizer=tokenizer)
        atomic_write_text(out / "final_metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics

