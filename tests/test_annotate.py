"""LERT label annotators: jieba.posseg mapped onto LTP's labels, CoNLL-U / CoNLL-X files."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest

from zhplm import datasets
from zhplm.data.annotate import (
    DEP_IDS,
    DEP_LABELS,
    JIEBA_TO_LTP_NER,
    JIEBA_TO_LTP_POS,
    NER_IDS,
    NER_LABELS,
    POS_IDS,
    POS_LABELS,
    Annotation,
    ConllAnnotator,
    JiebaAnnotator,
    bies_ids,
    build_annotator,
    lert_labels,
)
from zhplm.errors import DataError, InputError

jieba_posseg = pytest.importorskip("jieba.posseg")


@pytest.fixture(scope="module")
def corpus_sample() -> list[str]:
    """400 real lines: reviews and People's Daily sentences (persons, places, organisations)."""
    lines = list(datasets.corpus_lines("all"))
    rng = random.Random(0)
    return lines[:100] + rng.sample(lines[100:-100], 200) + lines[-100:]


@pytest.fixture(scope="module")
def annotated(corpus_sample: list[str]) -> list[tuple[str, Annotation]]:
    annotator = JiebaAnnotator()
    return [(text, annotator.annotate(text)) for text in corpus_sample]


def test_label_inventories():
    labels = lert_labels()
    assert [len(labels[t]) for t in ("pos", "ner", "dep")] == [28, 13, 14]
    for names in labels.values():
        assert len(set(names)) == len(names)
    assert labels["pos"][:3] == ["n", "v", "wp"] and labels["pos"][-1] == "%"
    assert labels["ner"][0] == "O" and labels["dep"][7] == "HED"
    assert set(JIEBA_TO_LTP_POS.values()) <= set(POS_LABELS)
    assert tuple(labels["pos"]) == POS_LABELS and tuple(labels["dep"]) == DEP_LABELS
    assert tuple(labels["ner"]) == NER_LABELS


def expected_pos(word: str, flag: str) -> int:
    """The mapping spelled out independently of jieba_pos_id."""
    if flag == "x":
        return -1 if any(c.isalnum() for c in word) else POS_IDS["wp"]
    return POS_IDS[JIEBA_TO_LTP_POS[flag]] if flag in JIEBA_TO_LTP_POS else -1


def test_jieba_agrees_with_posseg_word_by_word(annotated):
    entity_words = 0
    flags: set[str] = set()
    for text, ann in annotated:
        pairs = [(p.word, p.flag) for p in jieba_posseg.cut(text)]
        assert ann.text == text and ann.words == [w for w, _ in pairs]
        assert (ann.dep == -1).all()
        offset = 0
        spans = set()
        for word, flag in pairs:
            flags.add(flag)
            chunk = slice(offset, offset + len(word))
            assert (ann.pos[chunk] == expected_pos(word, flag)).all(), (text, word, flag)
            assert ann.word_starts[offset] and not ann.word_starts[offset + 1:chunk.stop].any()
            if flag in ("nr", "nrfg", "nrt", "ns", "nt"):
                spans.add((offset, chunk.stop, JIEBA_TO_LTP_NER[flag]))
                entity_words += 1
            offset += len(word)
        assert bies_spans(ann.label_names("ner")) == spans, text
    assert entity_words > 100  # People's Daily: many names, places, organisations
    assert {"nr", "ns", "nt", "x", "eng", "m"} <= flags


def bies_spans(tags: list[str | None]) -> set[tuple[int, int, str]]:
    """Entity spans of a character BIES sequence; asserts it is well formed."""
    spans = set()
    start = None
    for i, tag in enumerate(tags):
        assert tag is not None
        if tag == "O":
            assert start is None, tags
            continue
        kind, entity = tag.split("-")
        if kind == "S":
            assert start is None
            spans.add((i, i + 1, entity))
        elif kind == "B":
            assert start is None
            start = (i, entity)
        else:  # I or E must continue a B of the same entity
            assert start is not None and start[1] == entity, tags
            if kind == "E":
                spans.add((start[0], i + 1, entity))
                start = None
    assert start is None, tags  # a B ... never left open
    return spans


def test_jieba_bies_well_formed(annotated):
    kinds = set()
    for _, ann in annotated:
        names = ann.label_names("ner")
        bies_spans(names)  # asserts
        kinds |= {n.split("-")[0] for n in names if n != "O"}
    assert kinds == {"S", "B", "I", "E"}


def test_bies_ids_spreads_word_tags():
    def names(ids):
        return [NER_LABELS[i] for i in ids]

    assert names(bies_ids("Nh", 3)) == ["B-Nh", "I-Nh", "E-Nh"]
    assert names(bies_ids("Ns", 1)) == ["S-Ns"]
    assert names(bies_ids("Ni", 2, "B")) == ["B-Ni", "I-Ni"]
    assert names(bies_ids("Ni", 2, "I")) == ["I-Ni", "I-Ni"]
    assert names(bies_ids("Ni", 1, "E")) == ["E-Ni"]
    assert names(bies_ids(None, 2)) == ["O", "O"]


CONLLU = """\
# sent_id = 1
# text = 江泽民会见克林顿。
1\t江泽民\t江泽民\tPROPN\tnh\t_\t2\tSBV\t_\tNE=S-Nh
2\t会见\t会见\tVERB\tv\t_\t0\tHED\t_\tNE=O
3-4\t克林顿。\t_\t_\t_\t_\t_\t_\t_\t_
3\t克林顿\t克林顿\tPROPN\tnh\t_\t2\tvob\t_\tNE=S-Nh
4\t。\t。\tPUNCT\twp\t_\t2\tWP\t_\t_

1\t北京\t北京\tPROPN\tns\t_\t2\tATT\t_\tNE=B-Ni
1.1\t_\t_\t_\t_\t_\t_\t_\t_\t_
2\t大学\t大学\tNOUN\tNN\t_\t0\tHED\t_\tNE=E-Ni|SpaceAfter=No
3\t好\t好\tADJ\tJJ\t_\t2\tamod\t_\t_
"""

CONLLX = """\
1\t我们\t我们\tr\tr\t_\t2\tSBV\t_\t_
2\t喜欢\t喜欢\tv\tv\t_\t0\tHED\t_\t_
3\t长城\t长城\tns\tns\t_\t2\tVOB\t_\t_
"""


def write(tmp_path: Path, text: str | bytes, name: str = "x.conllu") -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def test_conllu_characters_get_their_words_labels(tmp_path, caplog):
    path = write(tmp_path, CONLLU)
    with caplog.at_level(logging.WARNING, logger="zhplm.data.annotate"):
        first, second = list(ConllAnnotator(path))
    assert first.text == "江泽民会见克林顿。"
    assert first.words == ["江泽民", "会见", "克林顿", "。"]
    assert first.label_names("dep") == ["SBV"] * 3 + ["HED"] * 2 + ["VOB"] * 3 + ["WP"]
    assert first.label_names("pos") == ["nh"] * 3 + ["v"] * 2 + ["nh"] * 3 + ["wp"]
    assert first.label_names("ner") == ["B-Nh", "I-Nh", "E-Nh", "O", "O",
                                        "B-Nh", "I-Nh", "E-Nh", None]
    assert second.text == "北京大学好"
    # XPOS NN is not an LTP tag and UPOS NOUN is not either -> unknown; amod unknown
    assert second.label_names("pos") == ["ns", "ns", None, None, None]
    assert second.label_names("dep") == ["ATT", "ATT", "HED", "HED", None]
    assert second.label_names("ner") == ["B-Ni", "I-Ni", "I-Ni", "E-Ni", None]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "amod (1)" in warnings[0]


def test_conllx_and_registry(tmp_path):
    path = write(tmp_path, CONLLX, "x.conll")
    annotator = build_annotator(f"conll:{path}")
    assert isinstance(annotator, ConllAnnotator)
    (ann,) = list(annotator)
    assert ann.text == "我们喜欢长城"
    assert ann.dep.tolist() == [DEP_IDS["SBV"]] * 2 + [DEP_IDS["HED"]] * 2 + [DEP_IDS["VOB"]] * 2
    assert ann.pos.tolist() == [POS_IDS["r"]] * 2 + [POS_IDS["v"]] * 2 + [POS_IDS["ns"]] * 2
    assert (ann.ner == -1).all()  # no NE= in MISC: unknown, not O
    assert annotator.annotate("我们喜欢长城") is not None
    with pytest.raises(InputError):
        annotator.annotate("不在文件里")
    assert isinstance(build_annotator("jieba"), JiebaAnnotator)
    for bad in ("ltp", "conll:", "hanlp:x"):
        with pytest.raises(InputError, match="jieba"):
            build_annotator(bad)
    with pytest.raises(DataError, match="does not exist"):
        build_annotator(f"conll:{tmp_path / 'missing.conllu'}")


@pytest.mark.parametrize(
    ("content", "line", "match"),
    [
        (CONLLX.replace("\t_\t_\n", "\n", 1).replace("\t_\t2\tSBV", "\t2\tSBV", 1), 1,
         "columns"),
        (CONLLX.replace("\t0\tHED", "\tx\tHED"), 2, "HEAD 'x'"),
        (CONLLX.replace("3\t长城", "a\t长城"), 3, "ID 'a'"),
        (CONLLX.replace("3\t长城", "5\t长城"), 3, "expected"),
        (CONLLX.encode("utf-8").replace("长城".encode(), "长城".encode("gbk")), 3, "UTF-8"),
    ],
)
def test_malformed_conll_names_file_and_line(tmp_path, content, line, match):
    path = write(tmp_path, content)
    with pytest.raises(DataError, match=match) as err:
        list(ConllAnnotator(path))
    assert f"{path}:{line}:" in str(err.value)


def test_seven_columns_message(tmp_path):
    path = write(tmp_path, "# c\n1\t好\t好\ta\ta\t_\t0\n")
    with pytest.raises(DataError) as err:
        list(ConllAnnotator(path))
    assert f"{path}:2:" in str(err.value) and "7 columns" in str(err.value)


def test_annotation_checks_lengths():
    with pytest.raises(ValueError, match="concatenate"):
        Annotation("ab", ["a"], np.zeros(2), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="shape"):
        Annotation("ab", ["ab"], np.zeros(1), np.zeros(2), np.zeros(2))
    assert NER_IDS["O"] == 0
