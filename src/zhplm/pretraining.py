"""The pre-training recipe: a dataset from `zhplm preprocess` -> a pre-trained HF model dir.

One readable function, `run_pretraining`, wires the shared pieces together: tokenizer and
dataset (checked to share a vocab), instances per epoch, dynamic masking, the objectives,
and the trainer. Run it with `zhplm pretrain --config configs/pretrain/demo.yaml`, or under
`torchrun --nproc_per_node N -m zhplm pretrain ...` for several processes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zhplm.config import (
    ELECTRA_PRESETS,
    atomic_write_text,
    electra_preset,
    preset,
    save_dir_atomically,
)
from zhplm.data.collate import PretrainCollator
from zhplm.data.epochs import Corpus, DocumentSet, build_epoch
from zhplm.data.instances import InstanceConfig, Instances, SpecialIds
from zhplm.data.masking import MaskingConfig
from zhplm.data.shards import TokenDataset
from zhplm.data.stream import InstanceStream, check_collation
from zhplm.errors import CheckpointError, ConfigError
from zhplm.modeling.bert import BertForMaskedLM, BertForPreTraining
from zhplm.modeling.electra import DISCRIMINATOR_DIR, ElectraPretrainingPair
from zhplm.objectives.electra import ElectraSection
from zhplm.objectives.lert import LertSection
from zhplm.objectives.pretraining import (
    SENTENCE_OBJECTIVES,
    PretrainingModule,
    build_objectives,
)
from zhplm.objectives.structbert import StructBertSection
from zhplm.recipe import to_dict
from zhplm.tokenization import Tokenizer
from zhplm.training.checkpoint import latest_checkpoint
from zhplm.training.distributed import init_distributed, shutdown
from zhplm.training.trainer import TrainConfig, Trainer, summarize

logger = logging.getLogger("zhplm")
DEV_EPOCH = 2**31 - 1  # masking seed of the held-out instances: fixed, unlike training epochs
MLM_BIAS_INITS = ("zero", "unigram")


@dataclass
class ModelSection:
    """The model to train: a size preset, or an existing model directory to start from
    (for ELECTRA: an `electra-*` preset, or a directory holding discriminator/ and
    generator/).

    `mlm_bias` is the MLM output bias of a new (preset) BERT model: `zero` (BERT's and
    Hugging Face's init) or `unigram`, the log-frequencies of the tokens in the training
    documents. From `unigram` the model predicts the unigram distribution at step 0 and
    spends its first steps on context instead of on token frequencies (a tiny model takes a
    few hundred steps to get there from zero; issue 12)."""

    preset: str = "tiny"
    init_from: str | None = None
    max_position_embeddings: int = 512
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    mlm_bias: str = "zero"

    def __post_init__(self) -> None:
        if self.mlm_bias not in MLM_BIAS_INITS:
            raise ConfigError(f"model.mlm_bias={self.mlm_bias!r}; use one of "
                              f"{', '.join(MLM_BIAS_INITS)}")


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
    workers: int = 0     # collation worker processes (0: in the training process)
    prefetch: int = 2    # micro-batches each worker prepares ahead

    def __post_init__(self) -> None:
        check_collation(self.workers, self.prefetch)  # with the recipe, before any work

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
    electra: ElectraSection = field(default_factory=ElectraSection)
    structbert: StructBertSection = field(default_factory=StructBertSection)
    lert: LertSection = field(default_factory=LertSection)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def is_electra(self) -> bool:
        """True when the recipe trains ELECTRA (objective `electra`)."""
        return bool(self.objectives.get("electra"))

    def masking_config(self) -> MaskingConfig:
        """The masking in force: `masking`, or ELECTRA's (from the `electra` section and
        `masking.strategy`) for the electra objective."""
        if not self.is_electra:
            return self.masking
        default = MaskingConfig()
        changed = [name for name in ("mask_prob", "max_predictions", "mask_replace",
                                     "random_replace")
                   if getattr(self.masking, name) != getattr(default, name)]
        if changed:
            raise ConfigError(
                f"masking.{changed[0]} is set, but the electra objective masks as ELECTRA "
                f"does: electra.mask_prob of the tokens (at most int((mask_prob + 0.005) x "
                f"seq_length)), 85% [MASK], 15% kept. Remove masking.{changed[0]}; set "
                f"electra.mask_prob instead (masking.strategy is kept)")
        return self.electra.masking(self.data.seq_length, self.masking.strategy)


def _load_model(recipe: PretrainRecipe, tokenizer: Tokenizer, resume_from: Path | None):
    source = resume_from or (Path(recipe.model.init_from) if recipe.model.init_from else None)
    sizes = {"vocab_size": tokenizer.vocab_size, "pad_token_id": tokenizer.pad_token_id,
             "max_position_embeddings": recipe.model.max_position_embeddings,
             "hidden_dropout_prob": recipe.model.hidden_dropout_prob,
             "attention_probs_dropout_prob": recipe.model.attention_probs_dropout_prob}
    if recipe.is_electra:
        if source is not None:
            model = ElectraPretrainingPair.from_pretrained(source)
        else:
            if recipe.model.preset not in ELECTRA_PRESETS:
                raise ConfigError(
                    f"model.preset={recipe.model.preset!r}: the electra objective needs an "
                    f"ELECTRA preset ({', '.join(ELECTRA_PRESETS)}) or model.init_from")
            model = ElectraPretrainingPair(*electra_preset(
                recipe.model.preset, recipe.electra.generator_hidden_fraction, **sizes))
            model.discriminator.init_replaced_prior(recipe.electra.mask_prob)
    else:
        sentence = any(recipe.objectives.get(n) for n in (*SENTENCE_OBJECTIVES,
                                                          "sentence_order"))
        model_class = BertForPreTraining if sentence else BertForMaskedLM
        if source is not None:
            model = model_class.from_pretrained(source)
        else:
            model = model_class(preset(recipe.model.preset, **sizes))
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


def init_unigram_bias(model: BertForMaskedLM | BertForPreTraining, dataset: TokenDataset,
                      documents: DocumentSet | Sequence[int]) -> None:
    """Set the MLM output bias to the log unigram frequencies of `documents` (add-one
    smoothed, centred): the untrained model then predicts the unigram distribution."""
    if not isinstance(documents, DocumentSet):
        documents = DocumentSet.of(documents)
    counts = 1.0 + Corpus(dataset.shards, documents).token_counts(model.config.vocab_size)
    log_freq = np.log(counts / counts.sum())
    with torch.no_grad():
        bias = model.cls.predictions.bias
        bias.copy_(torch.from_numpy(log_freq - log_freq.mean()).to(bias.dtype))


def _vocab_source(recipe: PretrainRecipe) -> str:
    """data.vocab, else the init_from model's vocab (an ELECTRA pair's discriminator's)."""
    if recipe.data.vocab:
        return recipe.data.vocab
    if not recipe.model.init_from:
        raise ConfigError("data.vocab is required (a vocab.txt or a model directory) unless "
                          "model.init_from names a model directory with its tokenizer")
    pair_member = Path(recipe.model.init_from) / DISCRIMINATOR_DIR
    return str(pair_member) if pair_member.is_dir() else recipe.model.init_from


def _tokenizer(recipe: PretrainRecipe) -> Tokenizer:
    return Tokenizer.from_pretrained(_vocab_source(recipe))


def make_evaluator(module: PretrainingModule, collate: PretrainCollator, dev: Instances,
                   limit: int, batch_size: int):
    """Held-out MLM (and sentence) loss/accuracy on fixed masks."""
    count = min(limit, len(dev))

    def evaluate() -> dict[str, float]:
        totals: dict[str, float] = {}
        for start in range(0, count, batch_size):
            batch = collate(dev, list(range(start, min(count, start + batch_size))), DEV_EPOCH)
            _, stats = module(batch, module.normalizers([batch]))
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + float(value)
        totals.pop("tokens", None)
        return summarize(totals)

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
    dataset.check_vocab(_vocab_source(recipe), source=str(recipe.data.dataset))
    model = _load_model(recipe, tokenizer, checkpoint if resume else None)
    train_docs, dev_docs = DocumentSet.split(dataset.num_documents, recipe.data.dev_fraction)
    new_model = not (resume and checkpoint is not None) and not recipe.model.init_from
    if recipe.model.mlm_bias == "unigram" and new_model and not recipe.is_electra:
        init_unigram_bias(model, dataset, train_docs)
    module = PretrainingModule(model, build_objectives(recipe.objectives, recipe.electra,
                                                       recipe.lert, dataset.annotation))
    if bool(recipe.objectives.get("sentence_order")) != (recipe.data.kind == "sentence_order"):
        raise ConfigError(
            f"objectives.sentence_order={recipe.objectives.get('sentence_order', 0)} with "
            f"data.kind={recipe.data.kind!r}: StructBERT's sentence objective and the "
            f"next/previous/random pairs go together; set both (data.kind: sentence_order) "
            f"or neither")
    if resume and checkpoint is not None:
        module.load_heads(checkpoint)
    elif recipe.model.init_from:  # heads trained before (StructBERT's, LERT's) go on training
        module.load_heads(Path(recipe.model.init_from), missing_ok=True)

    def save_model(directory: Path) -> None:
        model.save_pretrained(directory, tokenizer=tokenizer)
        module.save_heads(directory)
    special = SpecialIds.from_tokenizer(tokenizer)
    collate = PretrainCollator(recipe.masking_config(), special, recipe.train.seed,
                               word_order_ratio=recipe.structbert.wso_ratio
                               if recipe.objectives.get("word_order") else 0.0)
    instance_config = recipe.data.instance_config()
    corpus = Corpus(dataset.shards, train_docs)
    corpus.runs()  # before any worker forks: the stream's runs, once

    def epoch_index(epoch: int):  # noqa: ANN202 - an Epoch
        return build_epoch(corpus, instance_config, special, recipe.train.seed, epoch)

    stream = InstanceStream(epoch_index, collate, recipe.train.micro_batch_size(env.world_size),
                            env.rank, env.world_size, workers=recipe.data.workers,
                            prefetch=recipe.data.prefetch)
    evaluate = None
    if len(dev_docs):
        dev_index = build_epoch(Corpus(dataset.shards, dev_docs), instance_config, special,
                                recipe.train.seed + 1, 0)
        if len(dev_index):
            count = min(len(dev_index), recipe.data.eval_instances)
            dev = dev_index.instances(dev_index.ids(np.arange(count)))  # a shuffled sample
            evaluate = make_evaluator(module, collate, dev, recipe.data.eval_instances,
                                      recipe.train.micro_batch_size(1))
    trainer = Trainer(module, stream, recipe.train, out, env=env, evaluate=evaluate,
                      save_model=save_model)
    if resume and checkpoint is not None:
        trainer.resume(checkpoint)
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "recipe.json", json.dumps(to_dict(recipe), indent=2) + "\n")
    try:
        metrics = trainer.fit()
    finally:
        stream.close()
    if env.is_main:
        # the model directory (an ELECTRA pair: both towers) appears whole or not at all
        save_dir_atomically(save_model, out / "model")
        atomic_write_text(out / "final_metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics

