"""Extractive QA features and answer decoding (zhplm.tasks.mrc)."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest

from zhplm.datasets import load_pd_ner
from zhplm.errors import InputError
from zhplm.tasks.examples import QAExample
from zhplm.tasks.mrc import QAFeatures, build_qa_features, postprocess_qa, predictions_to_json
from zhplm.tokenization import Tokenizer

KIND_NAMES = {"PER": "人名", "LOC": "地名", "ORG": "机构名"}


@pytest.fixture(scope="module")
def zh_tok(zh_vocab_dir: Path) -> Tokenizer:
    return Tokenizer.from_pretrained(zh_vocab_dir)


@pytest.fixture(scope="module")
def en_tok(minilm_dir: Path) -> Tokenizer:
    return Tokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def zh_examples() -> list[QAExample]:
    """~200 questions over People's Daily contexts of 300-1500 characters; each context gets
    two questions, one about an entity in its first half and one in its second half."""
    rng = random.Random(1998)
    sentences = [s for s in load_pd_ner("dev") if s.text]
    examples: list[QAExample] = []
    i = 0
    while len(examples) < 200 and i < len(sentences):
        target = rng.randint(300, 1500)
        parts: list[str] = []
        entities: list[tuple[str, int, str]] = []
        size = 0
        while size < target and i < len(sentences):
            sentence = sentences[i]
            i += 1
            entities += [(kind, size + a, text) for kind, a, _, text in sentence.entities]
            parts.append(sentence.text)
            size += len(sentence.text)
        context = "".join(parts)
        if len(context) < 300 or len(context) > 1500:
            continue
        halves = [
            [e for e in entities if e[1] < len(context) // 2],
            [e for e in entities if e[1] >= len(context) // 2],
        ]
        for half in halves:
            if half:
                kind, start, text = rng.choice(half)
                assert context[start : start + len(text)] == text
                examples.append(
                    QAExample(
                        qid=f"pd-{len(examples)}",
                        question=f"文中提到的{KIND_NAMES[kind]}是哪个？",
                        context=context,
                        answers=(text,),
                        answer_starts=(start,),
                        source=f"pd-dev:{i}",
                    )
                )
    assert len(examples) >= 190
    return examples


EN_SENTENCES = [
    "The committee met on Tuesday to review the budget.",
    "Several members raised concerns about the schedule; others did not.",
    "Rain fell steadily over the hills, and the rivers rose.",
    "In 2019, the museum reopened after a long renovation!",
    "Prices, however, remained stable (mostly) throughout the year.",
    'She said: "We will return next spring."',
    "Engineers tested the bridge with heavy trucks.",
    "Nobody expected the results to be so clear-cut.",
]
EN_ANSWERS = [
    ("Dr. Jane O'Neil", "Who gave the speech?", "The opening speech was given by {} last night."),
    ("São Paulo", "Where did they fly?", "Afterwards the delegation flew to {} for talks."),
    ("(U.S.A.)", "Which country?", "The treaty was signed by the United States {} in Geneva."),
    ("January 5, 1998", "When did it begin?", "The project began on {}, as planned."),
    ("McDonald's", "Which company?", "A spokesman for {} declined to comment."),
    ("AT&T Inc.", "Which firm?", "The deal with {} was announced on Monday."),
    ("MacBook Pro", "What did he buy?", "He bought a new {} for the office."),
    ("E=mc²", "Which equation?", "Einstein's famous equation, {}, appears on the poster."),
]


@pytest.fixture(scope="module")
def en_examples() -> list[QAExample]:
    rng = random.Random(7)
    examples = []
    for k in range(40):
        answer, question, template = EN_ANSWERS[k % len(EN_ANSWERS)]
        before = " ".join(rng.choice(EN_SENTENCES) for _ in range(rng.randint(0, 30)))
        after = " ".join(rng.choice(EN_SENTENCES) for _ in range(rng.randint(0, 30)))
        marker = template.format(answer)
        context = f"{before} {marker} {after}".strip()
        start = context.index(marker) + template.index("{}")
        examples.append(QAExample(f"en-{k}", question, context, (answer,), (start,)))
    return examples


def _check_round_trip(examples: list[QAExample], feats: QAFeatures) -> None:
    """Every positive feature's token span cuts exactly the answer from the original context,
    and every answer is inside at least one window."""
    found = set()
    for f in range(len(feats)):
        s, e = int(feats.start_positions[f]), int(feats.end_positions[f])
        assert (s == 0) == (e == 0)
        if s == 0:
            continue
        example = examples[int(feats.example_index[f])]
        assert s <= e
        assert feats.token_type_ids[f, s] == 1 and feats.attention_mask[f, e] == 1
        offsets = feats.offsets[f]
        assert offsets[s] is not None and offsets[e] is not None
        assert example.context[offsets[s][0] : offsets[e][1]] == example.answers[0]
        assert offsets[s][0] == example.answer_starts[0]
        found.add(int(feats.example_index[f]))
    assert found == set(range(len(examples)))


@pytest.mark.parametrize("doc_stride", [32, 64])
def test_chinese_answers_round_trip_through_windows(
    zh_tok: Tokenizer, zh_examples: list[QAExample], doc_stride: int
) -> None:
    feats = build_qa_features(zh_examples, zh_tok, max_seq_length=128, doc_stride=doc_stride)
    assert feats.stats["examples"] == len(zh_examples) == feats.stats["answers"]
    for key in (
        "answers_relocated",
        "answers_not_found",
        "answers_unrecoverable",
        "answers_outside_windows",
    ):
        assert feats.stats[key] == 0, key
    assert feats.stats["features"] == len(feats) > 4 * len(zh_examples)  # long contexts
    assert feats.input_ids.shape[1] == 128  # every long context fills a window
    _check_round_trip(zh_examples, feats)


@pytest.mark.parametrize("doc_stride", [32, 64])
def test_english_mixed_case_answers_round_trip(
    en_tok: Tokenizer, en_examples: list[QAExample], doc_stride: int
) -> None:
    feats = build_qa_features(en_examples, en_tok, max_seq_length=128, doc_stride=doc_stride)
    assert feats.stats["answers"] == len(en_examples)
    assert feats.stats["answers_unrecoverable"] == feats.stats["answers_outside_windows"] == 0
    assert max(np.bincount(feats.example_index)) > 3  # several windows per long context
    _check_round_trip(en_examples, feats)


@pytest.mark.parametrize(("max_seq_length", "doc_stride"), [(128, 32), (64, 40), (48, 500)])
def test_windows_cover_context_and_step_by_doc_stride(
    zh_tok: Tokenizer, zh_examples: list[QAExample], max_seq_length: int, doc_stride: int
) -> None:
    examples = zh_examples[:30]
    feats = build_qa_features(
        examples, zh_tok, max_seq_length=max_seq_length, doc_stride=doc_stride, max_query_length=8
    )
    assert feats.input_ids.dtype == np.int64 and feats.example_index.dtype == np.int64
    assert len(feats.offsets) == len(feats)
    assert all(len(o) == feats.input_ids.shape[1] for o in feats.offsets)
    assert np.array_equal(feats.example_index, np.sort(feats.example_index))
    for i, example in enumerate(examples):
        enc = zh_tok(example.context, add_special_tokens=False, return_offsets_mapping=True)
        index = {tuple(o): k for k, o in enumerate(enc["offset_mapping"])}
        question = zh_tok(example.question, add_special_tokens=False)["input_ids"][:8]
        room = max_seq_length - len(question) - 3
        ranges = []
        for f in np.flatnonzero(feats.example_index == i):
            ids, mask = feats.input_ids[f], feats.attention_mask[f]
            n = int(mask.sum())
            assert mask[:n].all() and not mask[n:].any()
            assert (ids[n:] == zh_tok.pad_token_id).all()
            q = len(question)
            assert ids[0] == zh_tok.cls_token_id and list(ids[1 : q + 1]) == question
            assert ids[q + 1] == zh_tok.sep_token_id and ids[n - 1] == zh_tok.sep_token_id
            assert not feats.token_type_ids[f, : q + 2].any()
            assert feats.token_type_ids[f, q + 2 : n].all()
            assert not feats.token_type_ids[f, n:].any()
            offs = feats.offsets[f]
            assert all(o is None for o in offs[: q + 2]) and all(o is None for o in offs[n - 1 :])
            tokens = [index[tuple(o)] for o in offs[q + 2 : n - 1]]
            assert tokens == list(range(tokens[0], tokens[0] + len(tokens)))
            assert list(ids[q + 2 : n - 1]) == enc["input_ids"][tokens[0] : tokens[-1] + 1]
            ranges.append((tokens[0], tokens[-1] + 1))
        n_ctx = len(enc["input_ids"])
        assert ranges[0][0] == 0 and ranges[-1][1] == n_ctx
        covered = set().union(*(range(a, b) for a, b in ranges))
        assert covered == set(range(n_ctx))
        step = min(doc_stride, room)
        assert [a for a, _ in ranges] == [k * step for k in range(len(ranges))]
        assert all(b - a == room for a, b in ranges[:-1])
        assert len(ranges) == 1 or ranges[-2][1] < n_ctx  # no window after the end is reached


def test_relocated_and_missing_answers_are_counted(
    zh_tok: Tokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    context = "北京是首都。上海在东边。北京很大。"  # 北京 at 0 and 12, 上海 at 6, 东边 at 9
    examples = [
        QAExample("ok", "首都是哪里？", context, ("上海",), (6,)),
        QAExample("moved", "哪个城市很大？", context, ("北京",), (10,), source="f.json:moved"),
        QAExample("nostart", "哪个城市？", context, ("上海",), ()),
        QAExample("missing", "哪里？", context, ("广州",), (0,), source="f.json:missing"),
        QAExample("none", "哪里？", context),
        QAExample("unknown", "哪里？", context, ("北京",), (-1,)),
        QAExample("past", "哪里？", context, ("北京",), (999,)),
        QAExample("later", "在哪边？", context, ("广州东边", "东边"), (-1, 3), "f.json:later"),
    ]
    with caplog.at_level(logging.WARNING, logger="zhplm"):
        feats = build_qa_features(examples, zh_tok, max_seq_length=64, doc_stride=16)
    stats = feats.stats
    assert stats["examples"] == 8 and stats["features"] == 7  # "missing" gives no window
    assert list(feats.example_index) == [0, 1, 2, 4, 5, 6, 7]
    assert stats["answers"] == 7
    assert stats["answers_relocated"] == 5  # moved, nostart, unknown, past, later
    assert stats["answers_first_not_found"] == 1 and stats["answers_not_found"] == 1
    assert stats["answers_unrecoverable"] == stats["answers_outside_windows"] == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one summary, not one line per answer
    assert "f.json:moved" in caplog.text and "f.json:missing" in caplog.text
    assert "answer_start" in caplog.text and "dropped from training" in caplog.text

    def span(k: int) -> tuple[int, int]:
        s, e = feats.start_positions[k], feats.end_positions[k]
        return feats.offsets[k][s][0], feats.offsets[k][e][1]

    assert span(0) == (6, 8)
    assert span(1) == (12, 14)  # the occurrence nearest to the claimed start 10
    assert span(2) == (6, 8)  # no start given: the first occurrence
    assert feats.start_positions[3] == feats.end_positions[3] == 0  # no answers: no-answer
    assert span(4) == (0, 2)  # -1: the first occurrence
    assert span(5) == (12, 14)  # past the end: the nearest (last) occurrence
    assert span(6) == (9, 11)  # the first answer is not in the context: the second one

    eval_feats = build_qa_features(examples, zh_tok, max_seq_length=64, training=False)
    assert not eval_feats.start_positions.any() and not eval_feats.end_positions.any()
    assert eval_feats.stats["answers"] == 0
    assert list(eval_feats.example_index) == list(range(8))  # nothing dropped for evaluation

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="zhplm"):
        none_left = build_qa_features([examples[3]], zh_tok, max_seq_length=64)
    assert len(none_left) == 0 and none_left.stats["answers_not_found"] == 1
    assert none_left.input_ids.shape == (0, 0) and "missing" in caplog.text


def test_unaligned_and_too_long_answers_are_counted(en_tok: Tokenizer) -> None:
    context = "The meeting in January was short. " * 3
    examples = [
        QAExample("jan", "When?", context, ("Jan",), (15,)),
        QAExample("long", "What?", context, (context[:60],), (0,)),
    ]
    feats = build_qa_features(examples, en_tok, max_seq_length=16, doc_stride=4)
    assert feats.stats["answers_unrecoverable"] == 1
    assert feats.stats["answers_outside_windows"] == 1
    first = np.flatnonzero((feats.example_index == 0) & (feats.start_positions > 0))
    assert len(first) > 0
    for f in first:  # trained on the covering token
        s, e = feats.start_positions[f], feats.end_positions[f]
        assert context[feats.offsets[f][s][0] : feats.offsets[f][e][1]] == "January"
    assert not feats.start_positions[feats.example_index == 1].any()


def _peaked_logits(feats: QAFeatures, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, length = feats.input_ids.shape
    start = rng.normal(0.0, 0.1, (n, length))
    end = rng.normal(0.0, 0.1, (n, length))
    start[np.arange(n), feats.start_positions] += 10.0
    end[np.arange(n), feats.end_positions] += 10.0
    return start, end


def test_postprocess_recovers_gold_answers(zh_tok: Tokenizer, zh_examples: list[QAExample]) -> None:
    feats = build_qa_features(zh_examples, zh_tok, max_seq_length=128, doc_stride=64)
    start, end = _peaked_logits(feats)
    results = postprocess_qa(zh_examples, feats, start, end)
    assert set(results) == {e.qid for e in zh_examples}
    for example in zh_examples:
        r = results[example.qid]
        assert r["answer"] == example.answers[0]
        assert (r["start"], r["end"]) == (
            example.answer_starts[0],
            example.answer_starts[0] + len(example.answers[0]),
        )
        assert 0.99 < r["score"] <= 1.0
    assert predictions_to_json(results) == {e.qid: e.answers[0] for e in zh_examples}

    # logits wider than the features (re-padded batches) and torch tensors are accepted
    torch = pytest.importorskip("torch")
    wide = np.pad(start, ((0, 0), (0, 5)), constant_values=-50.0)
    wide_end = np.pad(end, ((0, 0), (0, 5)), constant_values=-50.0)
    again = postprocess_qa(zh_examples, feats, torch.from_numpy(wide), torch.from_numpy(wide_end))
    assert predictions_to_json(again) == predictions_to_json(results)


def test_postprocess_english_keeps_original_casing(
    en_tok: Tokenizer, en_examples: list[QAExample]
) -> None:
    feats = build_qa_features(en_examples, en_tok, max_seq_length=128, doc_stride=32)
    results = postprocess_qa(en_examples, feats, *_peaked_logits(feats, seed=1))
    assert predictions_to_json(results) == {e.qid: e.answers[0] for e in en_examples}


@pytest.fixture()
def border_case(zh_tok: Tokenizer) -> tuple[QAExample, QAFeatures]:
    """A 200-character CJK context (one token per character) whose answer, tokens 55..62,
    crosses the end of window 0 (tokens 0..58) and lies whole in windows 1 and 2."""
    chars = [c for s in load_pd_ner("dev")[:20] for c in s.text if "\u4e00" <= c <= "\u9fff"]
    context = "".join(chars[:200])
    answer = context[55:63]
    example = QAExample("b", "谁？", context, (answer,), (55,))
    feats = build_qa_features([example], zh_tok, max_seq_length=64, doc_stride=16)
    assert feats.offsets[0][4] == (0, 1) and feats.offsets[0][62] == (58, 59)  # 1 char/token
    assert list(feats.start_positions[:3]) == [0, 4 + 55 - 16, 4 + 55 - 32]
    return example, feats


def test_postprocess_answer_across_window_border(
    border_case: tuple[QAExample, QAFeatures],
) -> None:
    example, feats = border_case
    start = np.zeros(feats.input_ids.shape)
    end = np.zeros(feats.input_ids.shape)
    # window 0 sees only the answer's head: a confident start, a weaker end at its last token
    start[0, 4 + 55] = 10.0
    end[0, 4 + 58] = 6.0
    # windows 1 and 2 see all of it
    for f, shift in ((1, 16), (2, 32)):
        start[f, 4 + 55 - shift] = 10.0 - f / 10
        end[f, 4 + 62 - shift] = 10.0 - f / 10
    result = postprocess_qa([example], feats, start, end)["b"]
    assert result["answer"] == example.answers[0] == example.context[55:63]
    assert (result["start"], result["end"]) == (55, 63)
    assert 0.5 < result["score"] < 1.0

    # the best-scoring span wins even when it comes from the window that cuts the answer
    end[0, 4 + 58] = 12.0
    result = postprocess_qa([example], feats, start, end)["b"]
    assert result["answer"] == example.context[55:59]


def test_postprocess_max_answer_length_and_no_answer(
    border_case: tuple[QAExample, QAFeatures],
) -> None:
    example, feats = border_case
    start, end = _peaked_logits(feats, seed=2)  # gold span: 8 tokens
    assert (
        postprocess_qa([example], feats, start, end, max_answer_length=8)["b"]["answer"]
        == (example.answers[0])
    )
    short = postprocess_qa([example], feats, start, end, max_answer_length=5)["b"]
    assert short["answer"] and len(short["answer"]) <= 5  # one token per character
    assert short["answer"] != example.answers[0]
    assert short["answer"] == example.context[short["start"] : short["end"]]

    # nothing valid: the only start/end considered are [CLS], or end < start
    cls = np.zeros(feats.input_ids.shape)
    cls[:, 0] = 5.0
    empty = postprocess_qa([example], feats, cls, cls, n_best=1)["b"]
    assert empty == {"answer": "", "score": 0.0, "start": 0, "end": 0}
    start = np.zeros(feats.input_ids.shape)
    end = np.zeros(feats.input_ids.shape)
    start[:, 30] = 5.0
    end[:, 20] = 5.0
    assert postprocess_qa([example], feats, start, end, n_best=1)["b"]["answer"] == ""
    assert predictions_to_json(postprocess_qa([example], feats, start, end, n_best=1)) == {"b": ""}


def test_bad_arguments_raise_input_error(
    zh_tok: Tokenizer, border_case: tuple[QAExample, QAFeatures]
) -> None:
    example, feats = border_case
    long_question = QAExample("q", "这是一个非常非常长的问题吗？", "答案在这里。", ("答案",), (0,))
    for kwargs in (
        {"doc_stride": 0},
        {"doc_stride": -5},
        {"max_query_length": 0},
        {"max_seq_length": 3},
        {"max_seq_length": 12},  # 14-token question cut to 64 leaves no room in 12
    ):
        with pytest.raises(InputError):
            build_qa_features([long_question], zh_tok, **kwargs)
    # the same length works once the question is cut shorter
    ok = build_qa_features([long_question], zh_tok, max_seq_length=12, max_query_length=5)
    assert ok.input_ids.shape[1] <= 12
    assert build_qa_features([], zh_tok).stats["features"] == 0

    logits = np.zeros(feats.input_ids.shape)
    for kwargs in ({"n_best": 0}, {"max_answer_length": 0}):
        with pytest.raises(InputError):
            postprocess_qa([example], feats, logits, logits, **kwargs)
    with pytest.raises(InputError):
        postprocess_qa([example], feats, logits[:1], logits[:1])
    with pytest.raises(InputError):
        postprocess_qa([example], feats, logits[:, :10], logits[:, :10])
    with pytest.raises(InputError):
        postprocess_qa([], feats, logits, logits)
    with pytest.raises(InputError):
        postprocess_qa([example, example], feats, logits, logits)
