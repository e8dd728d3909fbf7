"""Token classification: NER (BIO / BIOES, entity F1) and POS tagging.

Each example is a sequence of tokens (for Chinese one character each) with one tag per
token. The tokenizer runs on the pre-split tokens (a CJK character is one WordPiece token; an
English word may become several): the label goes on the first sub-token, the others are
ignored. A token that yields no sub-token (a space) is predicted "O". Sentences longer than
`max_seq_length` are cut into consecutive windows and their predictions joined again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

from zhplm.config import atomic_write_text
from zhplm.errors import DataError
from zhplm.modeling.auto import TOKEN_CLASSIFICATION
from zhplm.tasks.base import classification_stats
from zhplm.tasks.batching import IGNORE_INDEX, Batch, Features, eval_batches
from zhplm.tasks.examples import TaggingExample
from zhplm.tasks.metrics import accuracy, entity_scores
from zhplm.tokenization import Tokenizer

OUTSIDE = "O"


def _windows(word_ids: list[int], budget: int) -> list[tuple[int, int]]:
    """Split a sentence's sub-tokens into windows (first, end) of at most `budget` tokens,
    cutting between words where it can."""
    windows = []
    start = last_word_start = 0
    for i, word in enumerate(word_ids):
        if i == 0 or word != word_ids[i - 1]:
            last_word_start = i
        if i - start + 1 > budget:
            cut = last_word_start if last_word_start > start else i
            windows.append((start, cut))
            start = cut
    windows.append((start, len(word_ids)))
    return windows


class TaggingTask:
    """NER (`kind="ner"`, entity F1 with `scheme`) or POS tagging (`kind="pos"`)."""

    head = TOKEN_CLASSIFICATION

    def __init__(self, kind: str, labels: Sequence[str], scheme: str = "BIO") -> None:
        self.kind = kind
        self.labels = list(labels)
        self.label_ids = {label: i for i, label in enumerate(self.labels)}
        self.scheme = scheme
        # Entity-style tags (B-X/I-X/E-X/S-X/O) are scored by entity F1; plain tags (POS
        # tagging with "n", "v", ...) by token accuracy.
        self.entity_tags = all(t == OUTSIDE or t[:2] in ("B-", "I-", "E-", "S-")
                               for t in self.labels)
        self.main_metric = "f1" if self.entity_tags else "token_accuracy"
        self._layout: list[tuple[int, int]] = []

    def encode(self, examples: Sequence[TaggingExample], tokenizer: Tokenizer,
               max_seq_length: int) -> Features:
        """Sub-tokens of every example (windows for long ones) with first-sub-token labels."""
        if not examples:
            raise DataError("no examples to encode")
        encodings = tokenizer.backend.encode_batch([list(e.tokens) for e in examples],
                                                   is_pretokenized=True,
                                                   add_special_tokens=False)
        cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        input_ids, token_types, labels, origin, first_token = [], [], [], [], []
        for index, (example, enc) in enumerate(zip(examples, encodings, strict=True)):
            word_ids = list(enc.word_ids)
            tags = None
            if example.tags is not None:
                tags = [self.label_ids[t] for t in example.tags]
            for tok_start, tok_end in _windows(word_ids, max_seq_length - 2):
                ids = [cls, *enc.ids[tok_start:tok_end], sep]
                row = np.full(len(ids), IGNORE_INDEX, dtype=np.int64)
                for j in range(tok_start, tok_end):
                    word = word_ids[j]
                    if tags is not None and (j == 0 or word_ids[j - 1] != word):
                        row[j - tok_start + 1] = tags[word]
                input_ids.append(np.asarray(ids, dtype=np.int32))
                token_types.append(np.zeros(len(ids), dtype=np.int8))
                labels.append(row)
                origin.append(index)
                first_token.append(tok_start)
        features = Features(input_ids=input_ids, token_type_ids=token_types,
                            example_index=np.asarray(origin, dtype=np.int64),
                            labels=labels if all(e.tags is not None for e in examples) else None,
                            extra={"first_token": np.asarray(first_token, dtype=np.int64)},
                            task_data=[list(enc.word_ids) for enc in encodings])
        return features

    def count(self, batch: Batch) -> float:
        """Labelled tokens in the batch."""
        return float((batch.labels != IGNORE_INDEX).sum())

    def loss(self, model: nn.Module, batch: Batch, normalizer: Tensor
             ) -> tuple[Tensor, dict[str, Tensor]]:
        """Cross-entropy over labelled tokens only."""
        logits = model(batch.input_ids, batch.attention_mask, batch.token_type_ids).logits
        logits = logits.float()
        keep = batch.labels != IGNORE_INDEX
        loss_sum = F.cross_entropy(logits[keep], batch.labels[keep], reduction="sum")
        return loss_sum / normalizer, classification_stats(logits, batch.labels, loss_sum)

    def predict(self, model: nn.Module, examples: Sequence[TaggingExample], features: Features,
                batch_size: int, pad_id: int) -> list[list[str]]:
        """One tag per token of each example (windows joined; tokens without sub-tokens "O")."""
        tags = [[OUTSIDE] * len(e.tokens) for e in examples]
        starts = self._token_starts(features, features.task_data)
        for index, batch in eval_batches(features, batch_size, pad_id):
            logits = model(batch.input_ids, batch.attention_mask, batch.token_type_ids).logits
            best = logits.argmax(-1).numpy()
            for row, feature in enumerate(index):
                example = int(features.example_index[feature])
                for position, word in starts[feature]:
                    tags[example][word] = self.labels[int(best[row, position])]
        return tags

    @staticmethod
    def _token_starts(features: Features, word_ids: list[list[int]]
                      ) -> list[list[tuple[int, int]]]:
        """For each feature, (position in the feature, word index) of each word's first
        sub-token."""
        out: list[list[tuple[int, int]]] = []
        for feature in range(len(features)):
            ids = word_ids[int(features.example_index[feature])]
            start = int(features.extra["first_token"][feature])
            pairs = []
            for j in range(start, start + len(features.input_ids[feature]) - 2):
                if j == 0 or ids[j - 1] != ids[j]:
                    pairs.append((j - start + 1, ids[j]))
            out.append(pairs)
        return out

    def score(self, examples: Sequence[TaggingExample], predictions: list[list[str]]
              ) -> dict[str, float]:
        """Token accuracy, and for entity-style tags entity precision/recall/F1 (strict)."""
        gold = [list(e.tags) for e in examples]  # type: ignore[arg-type]
        flat_gold = [t for seq in gold for t in seq]
        flat_pred = [t for seq in predictions for t in seq]
        out = {"token_accuracy": accuracy(flat_pred, flat_gold)}
        if self.entity_tags:
            scores = entity_scores(gold, predictions, scheme=self.scheme)
            out.update(precision=scores["precision"], recall=scores["recall"], f1=scores["f1"])
        return out

    def write_predictions(self, path: Path, examples: Sequence[TaggingExample],
                          predictions: list[list[str]]) -> None:
        """"token TAG" per line, a blank line after each sentence (the NER reader's format)."""
        lines = []
        for example, tags in zip(examples, predictions, strict=True):
            lines += [f"{token if token.strip() else '_'} {tag}\n"
                      for token, tag in zip(example.tokens, tags, strict=True)]
            lines.append("\n")
        atomic_write_text(path, "".join(lines))
