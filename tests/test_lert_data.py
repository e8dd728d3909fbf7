"""LERT's per-token linguistic labels: preprocess --annotate -> shards -> instances -> batch."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from zhplm import datasets
from zhplm.data.annotate import TASKS, ConllAnnotator, JiebaAnnotator, lert_labels
from zhplm.data.collate import PretrainCollator
from zhplm.data.corpus import TokenDataset, preprocess, split_sentences
from zhplm.data.instances import InstanceConfig, Instances, SpecialIds, build_instances
from zhplm.data.masking import MaskingConfig
from zhplm.errors import DataError
from zhplm.tokenization import Tokenizer

pytest.importorskip("jieba.posseg")

UNKNOWN = 255


@pytest.fixture(scope="module")
def lines() -> list[str]:
    """120 reviews and 120 People's Daily sentences (names, places, organisations)."""
    every = list(datasets.corpus_lines())
    return every[:120] + every[-120:]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, lines: list[str]) -> Path:
    path = tmp_path_factory.mktemp("lert_corpus") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer(zh_vocab_dir: Path) -> Tokenizer:
    return Tokenizer.from_pretrained(zh_vocab_dir)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, corpus: Path,
          zh_vocab_dir: Path) -> dict[str, Path]:
    """The corpus preprocessed with the jieba annotator (1 and 2 processes) and without."""
    root = tmp_path_factory.mktemp("lert_data")
    kwargs = {"chunk_documents": 30, "shard_tokens": 8000}
    preprocess([corpus], zh_vocab_dir, root / "one", annotate="jieba", **kwargs)
    preprocess([corpus], zh_vocab_dir, root / "two", annotate="jieba", workers=2, **kwargs)
    preprocess([corpus], zh_vocab_dir, root / "plain", **kwargs)
    return {"one": root / "one", "two": root / "two", "plain": root / "plain"}


def bies_well_formed(names: list[str]) -> None:
    """Asserts a BIES sequence opens and closes its entities properly."""
    open_entity = None
    for name in names:
        if name == "O":
            assert open_entity is None, names
            continue
        tag, entity = name.split("-")
        if tag in "SB":
            assert open_entity is None, names
            open_entity = entity if tag == "B" else None
        else:
            assert open_entity == entity, names
            open_entity = None if tag == "E" else entity
    assert open_entity is None, names


# --------------------------------------------------------------------------- preprocess


def test_jieba_labels_are_the_first_characters(built, lines, tokenizer):
    dataset = TokenDataset(built["one"])
    assert dataset.annotation is not None
    annotator = JiebaAnnotator()
    ner_names = lert_labels()["ner"]
    rng = random.Random(0)
    checked = entities = 0
    for i in sorted(rng.sample(range(len(lines)), 60)) + [len(lines) - 1]:
        for sentence, (ids, starts, labels) in zip(split_sentences(lines[i]),
                                                   dataset.document(i), strict=True):
            enc = tokenizer.backend.encode(sentence, add_special_tokens=False)
            assert enc.ids == ids.tolist()
            assert labels.shape == (len(ids), 3) and labels.dtype == np.uint8
            ann = annotator.annotate(sentence)
            begins = [begin for begin, _ in enc.offsets]
            for t, task in enumerate(TASKS):
                want = ann.labels(task)[begins]
                assert labels[:, t].tolist() == np.where(want < 0, UNKNOWN, want).tolist()
            assert (labels[:, TASKS.index("dep")] == UNKNOWN).all()  # jieba has no parse
            bies_well_formed([ner_names[k] for k in labels[:, TASKS.index("ner")]])
            # word starts: the annotator's words (not ## pieces; a sentence starts a word)
            want_starts = [j == 0 or (not token.startswith("##") and bool(ann.word_starts[b]))
                           for j, (token, b) in enumerate(zip(enc.tokens, begins, strict=True))]
            assert starts.astype(bool).tolist() == want_starts, sentence
            checked += len(ids)
            entities += int((labels[:, 1] > 0).sum())
    assert checked > 3000 and entities > 20


def test_meta_counts_and_unannotated_dataset(built):
    one, plain = TokenDataset(built["one"]), TokenDataset(built["plain"])
    annotation = one.meta["annotation"]
    labels = np.concatenate([np.load(p) for p in sorted(built["one"].glob("*.linguistic.npy"))])
    assert labels.shape == (one.num_tokens, 3) and labels.dtype == np.uint8
    assert len(one.meta["shards"]) > 1
    assert annotation == {
        "annotator": "jieba",
        "tasks": ["pos", "ner", "dep"],
        "labels": lert_labels(),
        "labelled_tokens": {t: int((labels[:, k] != UNKNOWN).sum()) for k, t in
                            enumerate(TASKS)},
        "unannotated_sentences": 0,
    }
    assert annotation["labelled_tokens"]["dep"] == 0
    assert annotation["labelled_tokens"]["ner"] == one.num_tokens  # O or an entity everywhere
    assert annotation["labelled_tokens"]["pos"] > 0.95 * one.num_tokens
    # without --annotate: no linguistic files, the meta of before, pairs per sentence
    assert not list(built["plain"].glob("*.linguistic*"))
    assert plain.annotation is None and "annotation" not in plain.meta
    strip = {"annotation", "seconds"}
    assert {k: v for k, v in one.meta.items() if k not in strip} == {
        k: v for k, v in plain.meta.items() if k != "seconds"}
    assert all(len(s) == 2 for s in plain.document(0))
    for i in range(0, len(plain), 17):
        for (ids, _), (ids1, _, _) in zip(plain.document(i), one.document(i), strict=True):
            assert np.array_equal(ids, ids1)


def test_two_workers_give_the_same_arrays(built):
    files = sorted(p.name for p in built["one"].glob("*.npy"))
    assert files == sorted(p.name for p in built["two"].glob("*.npy"))
    assert any(name.endswith(".linguistic.npy") for name in files)
    for name in files:
        assert np.array_equal(np.load(built["one"] / name), np.load(built["two"] / name)), name
    meta = [json.loads((built[k] / "meta.json").read_text()) for k in ("one", "two")]
    assert meta[0]["annotation"] == meta[1]["annotation"]


CONLL = """\
# text = 江泽民会见克林顿。
1\t江泽民\t_\tPROPN\tnh\t_\t2\tSBV\t_\tNE=S-Nh
2\t会见\t_\tVERB\tv\t_\t0\tHED\t_\tNE=O
3\t克林顿\t_\tPROPN\tnh\t_\t2\tVOB\t_\tNE=S-Nh
4\t。\t_\tPUNCT\twp\t_\t2\tWP\t_\tNE=O

1\t北京\t_\tPROPN\tns\t_\t2\tATT\t_\tNE=S-Ns
2\t大学\t_\tNOUN\tn\t_\t3\tSBV\t_\tNE=O
3\t成立\t_\tVERB\tv\t_\t0\tHED\t_\tNE=O
4\t一百\t_\tNUM\tm\t_\t5\tATT\t_\tNE=O
5\t周年\t_\tNOUN\tq\t_\t3\tVOB\t_\tNE=O
6\t。\t_\tPUNCT\twp\t_\t3\tWP\t_\tNE=O
"""


def test_conll_labels_every_character_of_a_word(tmp_path, zh_vocab_dir, tokenizer, caplog):
    conll = tmp_path / "parsed.conllu"
    conll.write_text(CONLL, encoding="utf-8")
    annotator = ConllAnnotator(conll)
    sentences = list(annotator)
    other = ["这个酒店的服务很好。", "房间太小了。"]  # not in the file
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join([sentences[0].text, other[0], sentences[1].text, other[1]])
                      + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="zhplm.data.corpus"):
        meta = preprocess([corpus], zh_vocab_dir, tmp_path / "ds", annotate=f"conll:{conll}")
    assert meta["annotation"]["unannotated_sentences"] == 2
    assert meta["annotation"]["annotator"] == f"conll:{conll}"
    assert "2 of 4 sentences" in caplog.text and "CoNLL" in caplog.text
    dataset = TokenDataset(tmp_path / "ds")
    labelled = 0
    for doc, sentence in ((0, sentences[0]), (2, sentences[1])):
        [(ids, starts, labels)] = dataset.document(doc)
        enc = tokenizer.backend.encode(sentence.text, add_special_tokens=False)
        assert ids.tolist() == enc.ids
        begins = [b for b, _ in enc.offsets]
        assert labels[:, 2].tolist() == sentence.dep[begins].tolist()
        assert labels[:, 0].tolist() == sentence.pos[begins].tolist()
        assert starts.astype(bool).tolist() == sentence.word_starts[begins].tolist()
        labelled += len(ids)
    # by hand: DEP on every character of each word, NER S-Nh spread to B I E
    [(_, starts, labels)] = dataset.document(0)
    dep = lert_labels()["dep"]
    assert [dep[k] for k in labels[:, 2]] == ["SBV"] * 3 + ["HED"] * 2 + ["VOB"] * 3 + ["WP"]
    assert [lert_labels()["ner"][k] for k in labels[:3, 1]] == ["B-Nh", "I-Nh", "E-Nh"]
    assert starts.tolist() == [1, 0, 0, 1, 0, 1, 0, 0, 1]
    [(_, _, labels)] = dataset.document(2)
    assert [dep[k] for k in labels[:, 2]][:4] == ["ATT", "ATT", "SBV", "SBV"]
    for doc in (1, 3):  # not in the file: unknown, word starts from jieba
        [(ids, starts, labels)] = dataset.document(doc)
        assert (labels == UNKNOWN).all() and starts[0] == 1
    assert meta["annotation"]["labelled_tokens"]["dep"] == labelled


def test_corrupt_linguistic_array(tmp_path, built):
    copy = tmp_path / "copy"
    shutil.copytree(built["one"], copy)
    target = copy / "shard-00001.linguistic.npy"
    labels = np.load(target)
    np.save(target, labels[:, :2])
    with pytest.raises(DataError, match=r"shard-00001\.linguistic\.npy.*re-run zhplm preprocess"):
        TokenDataset(copy)
    np.save(target, labels.astype(np.int16))
    with pytest.raises(DataError, match=r"shard-00001\.linguistic\.npy.*dtype int16"):
        TokenDataset(copy)
    target.unlink()
    with pytest.raises(DataError, match=r"shard-00001\.linguistic\.npy.*re-run zhplm preprocess"):
        TokenDataset(copy)


# --------------------------------------------------------------------------- instances, batches


def indexed_documents(dataset: TokenDataset, offset: int):
    """``dataset.document`` with each token id replaced by ``offset`` + the token's position
    in the dataset (so an instance says where each of its tokens came from); also the
    dataset's ids and labels, flat."""
    flat_ids, flat_labels, firsts = [], [], []
    position = 0
    for i in range(len(dataset)):
        firsts.append(position)
        for ids, _, labels in dataset.document(i):
            flat_ids.append(np.asarray(ids, np.int64))
            flat_labels.append(labels)
            position += len(ids)

    def document(i: int):
        at = firsts[i]
        out = []
        for ids, starts, labels in dataset.document(i):
            out.append((np.arange(at, at + len(ids)) + offset, starts, labels))
            at += len(ids)
        return out

    return document, np.concatenate(flat_ids), np.concatenate(flat_labels)


@pytest.mark.parametrize("kind", ["full_sentences", "sentence_order"])
def test_instances_carry_the_tokens_labels(built, tokenizer, kind):
    dataset = TokenDataset(built["one"])
    special = SpecialIds.from_tokenizer(tokenizer)
    config = InstanceConfig(kind=kind, seq_length=64)
    docs = range(len(dataset))
    real = build_instances(dataset.document, docs, config, special, seed=3)
    plain = build_instances(TokenDataset(built["plain"]).document, docs, config, special, 3)
    offset = 1000
    document, flat_ids, flat_labels = indexed_documents(dataset, offset)
    where = build_instances(document, docs, config, special, seed=3)
    assert real.linguistic is not None and plain.linguistic is None
    assert real.linguistic.shape == (len(real), 64, 3) and real.linguistic.dtype == np.uint8
    # without labels, the same instances as before (word starts differ: the annotator's words)
    for field in ("input_ids", "token_type_ids", "lengths", "sentence_labels"):
        a, b = getattr(real, field), getattr(plain, field)
        assert (a is None and b is None) or np.array_equal(a, b), field
    assert np.array_equal(where.lengths, real.lengths)
    specials = (real.input_ids == special.cls) | (real.input_ids == special.sep)
    for i in range(len(real)):
        n = int(real.lengths[i])
        tokens = ~specials[i, :n]
        source = where.input_ids[i, :n][tokens] - offset  # the dataset position of each token
        assert np.array_equal(flat_ids[source], real.input_ids[i, :n][tokens])
        assert np.array_equal(flat_labels[source], real.linguistic[i, :n][tokens])
        assert (real.linguistic[i, :n][~tokens] == UNKNOWN).all()
        assert (real.linguistic[i, n:] == UNKNOWN).all()
    if kind == "sentence_order":
        assert set(real.sentence_labels.tolist()) == {0, 1, 2}


def test_collate_gives_the_masked_tokens_labels(built, tokenizer):
    dataset = TokenDataset(built["one"])
    special = SpecialIds.from_tokenizer(tokenizer)
    instances = build_instances(dataset.document, range(len(dataset)),
                                InstanceConfig(kind="sentence_order", seq_length=64), special, 1)
    without = dataclasses.replace(instances, linguistic=None)
    masking = MaskingConfig(strategy="wwm")
    collate = PretrainCollator(masking, special, seed=7, word_order_ratio=0.05)
    width = None
    for start in range(0, len(instances), 16):
        index = list(range(start, min(start + 16, len(instances))))
        batch = collate(instances, index, epoch=2)
        other = collate(without, index, epoch=2)
        assert other.linguistic_labels is None
        labels = batch.linguistic_labels
        assert labels.dtype == torch.int64 and labels.shape == (len(batch.mlm_positions), 3)
        width = batch.input_ids.shape[1]
        rows, columns = batch.mlm_positions // width, batch.mlm_positions % width
        stored = torch.from_numpy(instances.linguistic[np.asarray(index)][rows, columns]
                                  .astype(np.int64))
        assert torch.equal(labels, torch.where(stored == UNKNOWN, -1, stored))
        for field in dataclasses.fields(batch):
            if field.name != "linguistic_labels":
                a, b = getattr(batch, field.name), getattr(other, field.name)
                assert (a == b) if not isinstance(a, torch.Tensor) else torch.equal(a, b), \
                    field.name
    assert width is not None


def test_instances_without_labels_are_unchanged(tokenizer):
    """A 3-array segment gives the same ids, types and word starts as a 2-array one."""
    rng = np.random.default_rng(0)
    docs = [[(rng.integers(10, 90, n), rng.integers(0, 2, n).astype(np.uint8),
              rng.integers(0, 30, (n, 3)).astype(np.uint8))
             for n in rng.integers(1, 40, rng.integers(1, 6))] for _ in range(60)]
    pairs = [[s[:2] for s in doc] for doc in docs]
    special = SpecialIds(cls=1, sep=2, pad=0, mask=3, vocab_size=100, first_normal=5)
    for kind in ("full_sentences", "nsp", "sop", "sentence_order"):
        config = InstanceConfig(kind=kind, seq_length=32, short_seq_prob=0.3)
        with_labels = build_instances(docs.__getitem__, range(60), config, special, 4)
        plain: Instances = build_instances(pairs.__getitem__, range(60), config, special, 4)
        assert plain.linguistic is None and with_labels.linguistic is not None
        for field in ("input_ids", "token_type_ids", "word_starts", "lengths"):
            assert np.array_equal(getattr(plain, field), getattr(with_labels, field))


def test_label_lines(tmp_path, lines):
    sample = lines[:5] + ["", lines[-1]]
    text = "\n".join(sample)
    labelled = JiebaAnnotator().label_lines(sample)
    jieba_labels, missed = labelled.labels, labelled.unannotated
    assert missed == 0 and jieba_labels.shape == (3, len(text)) and jieba_labels.dtype == np.int16
    offset = 0
    for line in sample:
        ann = JiebaAnnotator().annotate(line)
        expected = np.stack([ann.labels(task) for task in TASKS])
        assert np.array_equal(jieba_labels[:, offset:offset + len(line)], expected)
        if offset + len(line) < len(text):
            assert (jieba_labels[:, offset + len(line)] == -1).all()  # the newline
        offset += len(line) + 1
    conll = tmp_path / "parsed.conllu"
    conll.write_text(CONLL, encoding="utf-8")
    annotator = ConllAnnotator(conll)
    first = next(iter(annotator))
    labelled = annotator.label_lines([lines[0], first.text])
    labels, missed = labelled.labels, labelled.unannotated
    assert missed == 1 and labels.shape == (3, len(lines[0]) + 1 + len(first.text))
    assert (labels[:, : len(lines[0]) + 1] == -1).all()
    assert np.array_equal(labels[2, len(lines[0]) + 1:], first.dep)


PARSED_LINE = """\
1\t张三\t_\tPROPN\tnh\t_\t2\tSBV\t_\tNE=S-Nh
2\t喜欢\t_\tVERB\tv\t_\t0\tHED\t_\tNE=O
3\t北京\t_\tPROPN\tns\t_\t2\tVOB\t_\tNE=S-Ns
4\t。\t_\tPUNCT\twp\t_\t2\tWP\t_\tNE=O
5\t他\t_\tPRON\tr\t_\t6\tSBV\t_\tNE=O
6\t买\t_\tVERB\tv\t_\t2\tCOO\t_\tNE=O
7\tiPhone\t_\tNOUN\tnz\t_\t6\tVOB\t_\tNE=O
8\t了\t_\tPART\tu\t_\t6\tRAD\t_\tNE=O
9\t。\t_\tPUNCT\twp\t_\t6\tWP\t_\tNE=O
"""


def test_conll_parse_of_a_whole_line_labels_each_of_its_sentences(tmp_path, zh_vocab_dir):
    """A parser run over corpus *lines* gives one CoNLL sentence per line; preprocess splits
    the line into sentences, and each must still find its labels (whitespace aside)."""
    conll = tmp_path / "lines.conllu"
    conll.write_text(PARSED_LINE, encoding="utf-8")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("张三喜欢北京。他买 iPhone 了。\n", encoding="utf-8")
    meta = preprocess([corpus], zh_vocab_dir, tmp_path / "ds", annotate=f"conll:{conll}")
    assert meta["annotation"]["unannotated_sentences"] == 0
    dataset = TokenDataset(tmp_path / "ds")
    sentences = dataset.document(0)
    assert len(sentences) == 2
    dep = lert_labels()["dep"]
    first = [dep[k] for k in sentences[0][2][:, 2]]
    assert first == ["SBV", "SBV", "HED", "HED", "VOB", "VOB", "WP"]
    second = [dep[k] if k != UNKNOWN else None for k in sentences[1][2][:, 2]]
    assert second[0] == "SBV" and second[1] == "COO" and second[-1] == "WP"
    assert "VOB" in second and "RAD" in second  # the English word and 了 across the spaces
    assert meta["annotation"]["labelled_tokens"]["dep"] == sum(len(s[0]) for s in sentences)
