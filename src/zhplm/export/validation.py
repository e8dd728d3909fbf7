"""Check an exported graph against the PyTorch model on real text.

`validation_batches` builds batches from a built-in list of Chinese and English sentences
(English only when the vocabulary has no CJK characters): batch sizes 1, 3, 8 x sequence
lengths 5, 37, 128 (capped at the model's positions). Row 0 of a batch fills the length;
the other rows are shorter and padded, so the attention mask has real padding wherever the
batch has more than one row (batch size 1 checks the unpadded path). Token ids are real
tokenizations, cut to the row length and closed with `[SEP]`; the first sentence is
segment 0 and what follows it segment 1.

`compare` runs both and returns the largest |onnx - torch| per output per shape, over the
real tokens of per-token outputs (padded positions are meaningless, and there float noise
alone reached 6e-5 on MiniLM-L6 where real tokens stayed under 4e-6) and over everything
of per-sequence outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from zhplm.errors import ZhplmError

BATCH_SIZES = (1, 3, 8)
SEQUENCE_LENGTHS = (5, 37, 128)
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")

CHINESE_SENTENCES = (
    "今天天气很好，我们一起去公园散步吧。",
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "这家餐厅的菜味道不错，但是服务员的态度实在太差了。",
    "科学家们发现了一种新的方法，可以更快地分析大量的数据。",
    "他昨天晚上看了一部电影，觉得故事情节非常感人。",
    "人民日报报道，全国各地的经济建设取得了新的成就。",
    "这本书我已经读了三遍，每一遍都有新的收获。",
    "机器学习模型需要大量的训练数据和计算资源。",
    "春节期间，很多人回到家乡和家人团聚。",
    "请问去火车站怎么走？大概需要多长时间？",
)
ENGLISH_SENTENCES = (
    "The weather is lovely today, so let us take a walk in the park.",
    "Beijing is the capital of the People's Republic of China.",
    "The food at this restaurant was good, but the service was slow and rude.",
    "Scientists have found a new method to analyse large amounts of data quickly.",
    "He watched a film last night and found the story very moving.",
    "This book has been read three times, and each reading taught me something new.",
    "Machine learning models need a lot of training data and computing power.",
    "During the spring festival many people travel home to see their families.",
    "Could you tell me how to get to the railway station, please?",
    "The committee will publish its final report at the end of next month.",
)

Runner = Callable[[dict[str, np.ndarray]], Sequence[np.ndarray]]


class ExportValidationError(ZhplmError):
    """An exported graph whose outputs differ from PyTorch's beyond the tolerance (or that
    does not run). `table` holds the max abs diffs per output per shape."""

    def __init__(self, message: str, table: dict[str, dict[str, float]] | None = None) -> None:
        super().__init__(message)
        self.table = table or {}


def has_cjk(tokenizer: Any) -> bool:
    """Whether the vocabulary covers Chinese text (most characters are not `[UNK]`)."""
    ids = tokenizer(list(CHINESE_SENTENCES[:3]), add_special_tokens=False)["input_ids"]
    tokens = [t for row in ids for t in row]
    return bool(tokens) and sum(t == tokenizer.unk_token_id for t in tokens) < 0.2 * len(tokens)


def sentences_for(tokenizer: Any) -> tuple[str, ...]:
    """Chinese and English sentences (interleaved), or English only for a non-CJK vocab."""
    if not has_cjk(tokenizer):
        return ENGLISH_SENTENCES
    return tuple(s for pair in zip(CHINESE_SENTENCES, ENGLISH_SENTENCES, strict=True)
                 for s in pair)


def _row(streams: list[list[int]], start: int, length: int, cls: int, sep: int
         ) -> tuple[list[int], list[int]]:
    """[CLS] s_start [SEP] s_start+1 [SEP] ... cut to `length` tokens, ending in [SEP]."""
    ids, types = [cls], [0]
    k = start
    while len(ids) < length:
        tokens = streams[k % len(streams)] + [sep]
        segment = 0 if k == start else 1
        ids += tokens
        types += [segment] * len(tokens)
        k += 1
    ids, types = ids[:length], types[:length]
    if length >= 2:
        ids[-1] = sep
    return ids, types


def validation_batches(tokenizer: Any, max_positions: int,
                       batch_sizes: Sequence[int] = BATCH_SIZES,
                       lengths: Sequence[int] = SEQUENCE_LENGTHS
                       ) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(`"BxS"`, int64 inputs) for each batch size x length, from real text."""
    texts = sentences_for(tokenizer)
    streams = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    batches = []
    for length in dict.fromkeys(min(n, max_positions) for n in lengths):
        for batch in batch_sizes:
            shape = (batch, length)
            arrays = {name: np.zeros(shape, dtype=np.int64) for name in INPUT_NAMES}
            arrays["input_ids"][:] = pad
            for i in range(batch):
                # row 0 is full; the others shrink towards ~1/4 of the length
                n = length if i == 0 else max(2, length - (3 * length * i) // (4 * batch))
                ids, types = _row(streams, 3 * i + length, n, cls, sep)
                arrays["input_ids"][i, :n] = ids
                arrays["token_type_ids"][i, :n] = types
                arrays["attention_mask"][i, :n] = 1
            batches.append((f"{batch}x{length}", arrays))
    return batches


def compare(torch_run: Runner, onnx_run: Runner, output_names: Sequence[str],
            batches: list[tuple[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, float]]:
    """Max |onnx - torch| per output name per shape label."""
    table: dict[str, dict[str, float]] = {name: {} for name in output_names}
    for label, inputs in batches:
        expected = torch_run(inputs)
        got = onnx_run(inputs)
        for name, a, b in zip(output_names, expected, got, strict=True):
            if a.shape != b.shape:
                raise ExportValidationError(
                    f"output {name!r} at shape {label}: onnxruntime gives {b.shape}, PyTorch "
                    f"{a.shape}; the graph's dynamic axes are wrong")
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            mask = inputs["attention_mask"].astype(bool)
            if diff.ndim >= 2 and diff.shape[:2] == mask.shape:
                diff, b = diff[mask], b[mask]
            table[name][label] = float(diff.max()) if diff.size else 0.0
            if not np.isfinite(b).all():
                table[name][label] = float("inf")
    return table


def format_table(table: dict[str, dict[str, float]], atol: float | None = None) -> str:
    """The diffs as an aligned text table (one row per output, one column per shape);
    entries above `atol` are marked with `!`."""
    labels = list(dict.fromkeys(label for row in table.values() for label in row))
    width = max([len("output")] + [len(name) for name in table])
    lines = ["  ".join([f"{'output':<{width}}"] + [f"{label:>9}" for label in labels])]
    for name, row in table.items():
        cells = []
        for label in labels:
            value = row.get(label)
            mark = "!" if atol is not None and value is not None and not value <= atol else " "
            cells.append(" " * 9 if value is None else f"{value:>8.1e}{mark}")
        lines.append("  ".join([f"{name:<{width}}"] + cells))
    return "\n".join(lines)


def worst(table: dict[str, dict[str, float]]) -> float:
    """The largest diff in a table."""
    return max((v for row in table.values() for v in row.values()), default=0.0)
