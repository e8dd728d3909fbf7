"""Tiny models for every task head, shared by the pipeline, ONNX and server tests."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import torch

from zhplm.config import electra_preset, preset
from zhplm.modeling import BertForMaskedLM, BertModel
from zhplm.modeling.electra import ElectraForPreTraining, ElectraForSequenceClassification
from zhplm.modeling.heads import (
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    with_labels,
)
from zhplm.modeling.pretrained import PreTrainedModel

SENTIMENT = ["负面", "正面", "中性"]
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def spread_weights(module: torch.nn.Module, seed: int, std: float = 0.5) -> None:
    """Re-draw a head's weights wider, so its outputs are far apart (no near-ties between
    runs that differ only in float rounding)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)


def tiny_task_models(vocab_size: int, pad_token_id: int) -> dict[str, PreTrainedModel]:
    """task -> a randomly initialised tiny model with that task's head (BERT, and ELECTRA
    for replaced-token detection and `electra-text-classification`), heads spread."""
    config = preset("tiny", vocab_size=vocab_size)
    disc, _ = electra_preset("electra-tiny", vocab_size=vocab_size, pad_token_id=pad_token_id,
                             embedding_size=64)
    torch.manual_seed(0)
    models = {
        "fill-mask": BertForMaskedLM(config),
        "feature-extraction": BertModel(config),
        "text-classification": BertForSequenceClassification(with_labels(config, SENTIMENT)),
        "token-classification": BertForTokenClassification(with_labels(config, NER_LABELS)),
        "question-answering": BertForQuestionAnswering(config),
        "replaced-token-detection": ElectraForPreTraining(disc),
        "electra-text-classification": ElectraForSequenceClassification(
            with_labels(disc, SENTIMENT)),
    }
    heads = {"fill-mask": lambda m: m.cls.predictions, "question-answering": lambda m:
             m.qa_outputs, "replaced-token-detection": lambda m:
             m.discriminator_predictions.dense_prediction}
    for seed, (task, model) in enumerate(models.items(), 1):
        if task != "feature-extraction":
            spread_weights(heads.get(task, lambda m: m.classifier)(model), seed)
    return models


def wait_until_healthy(url: str, process: subprocess.Popen, seconds: float,
                       output: Callable[[], str]) -> None:
    """Poll `url`/health until the server in `process` answers 200; fail with its `output()`
    if it exits, or after `seconds`."""
    import time

    import httpx

    deadline = time.time() + seconds
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert process.poll() is None, output()
        assert time.time() < deadline, "server did not start"
        time.sleep(0.2)
