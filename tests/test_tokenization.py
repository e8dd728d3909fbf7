"""zhplm.tokenization against transformers.BertTokenizer on real vocabularies and corpora."""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from zhplm.errors import CheckpointError, ConfigError, DataError, InputError
from zhplm.tokenization import SPECIAL_TOKENS, Tokenizer, build_vocab, vocab_hash

TRICKY = [
    "",
    " ",
    "Hello, world!",
    "HELLO   World\t\tagain\n",
    "Crème brûlée à la carte, naïve café.",
    "Ångström, Øresund, Straße, ﬁancé, ŒUVRE",
    "e\u0301 combining accent vs é precomposed",
    "don't can't won't I'm you're they've it's",
    "Mr. O'Neill's \"quoted\" (parens) [brackets]",
    "3.14159 1,000,000 -42 +7 1e-9 0xFF 2024-01-31 12:30:45",
    "$19.99 €5 ¥300 £7 50% #tag @user",
    "a" * 99,
    "b" * 100,
    "c" * 101,
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "antidisestablishmentarianism supercalifragilisticexpialidocious",
    "https://example.com/path?query=1&x=y#frag user@example.org",
    "I love 北京 and 東京, 你好世界！ Ünïcödé mixed with 漢字 and かな and 한국어.",
    "emoji 😀👍🏽 and symbols ™ © ® ° ± × ÷ → ∞ ≠",
    "tabs\tand\u00a0nbsp\u2003em-space\u200bzero-width\ufeffbom",
    "control\x00chars\x07here\x1f",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    "Ελληνικά Русский текст עברית العربية हिन्दी",
    "[MASK] is special, [mask] is not; [CLS] [SEP] [PAD] [UNK] inside text",
    "...!!!???,,,;;;:::---___",
    "Well -- that's that ; isn ' t it ?",
    "x" * 600,
    " ".join(["token"] * 400),
]


@pytest.fixture(scope="module")
def en_lines(minilm_dir: Path) -> list[str]:
    """~330 lines of real English text (model card, stdlib docs) plus tricky cases."""
    readme = (minilm_dir / "README.md").read_text(encoding="utf-8").splitlines()
    docs = (argparse.__doc__ or "").splitlines() + (json.__doc__ or "").splitlines()
    lines = [line for line in readme + docs if line.strip()] + TRICKY
    assert len(lines) > 250
    return lines


@pytest.fixture(scope="module")
def ours(minilm_dir: Path) -> Tokenizer:
    return Tokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def hf(minilm_dir: Path) -> transformers.BertTokenizer:
    return transformers.BertTokenizer.from_pretrained(minilm_dir)


def _same(a: dict, b: dict) -> None:
    """Every field of ``b`` (transformers) equals that of ``a`` (zhplm), and vice versa."""
    assert set(a) == set(b)
    for key in b:
        assert a[key] == b[key], key


# ------------------------------------------------------------------ English (MiniLM) parity
def test_minilm_properties(ours: Tokenizer, hf: transformers.BertTokenizer) -> None:
    assert ours.vocab_size == hf.vocab_size == 30522
    assert len(ours) == len(hf)
    assert ours.get_vocab() == hf.get_vocab()
    for name in ("pad", "unk", "cls", "sep", "mask"):
        assert getattr(ours, f"{name}_token_id") == getattr(hf, f"{name}_token_id")
    assert (ours.pad_token_id, ours.cls_token_id, ours.mask_token_id) == (0, 101, 103)
    assert ours.mask_token == hf.mask_token == "[MASK]"
    assert ours.model_max_length == hf.model_max_length == 512
    assert ours.lowercase is True
    assert ours.convert_tokens_to_ids(["hello", "[MASK]", "qqqzzz"]) == [7592, 103, 100]
    assert ours.convert_tokens_to_ids("world") == hf.convert_tokens_to_ids("world")
    assert ours.convert_ids_to_tokens([7592, 2088, 102]) == hf.convert_ids_to_tokens(
        [7592, 2088, 102]
    )
    assert ours.convert_ids_to_tokens(np.int64(101)) == "[CLS]"
    with pytest.raises(InputError, match="outside the vocabulary"):
        ours.convert_ids_to_tokens(10**6)
    with pytest.raises(InputError, match="outside the vocabulary"):
        ours.convert_ids_to_tokens([5, -1])


def test_minilm_single_parity(ours, hf, en_lines) -> None:
    for line in en_lines:
        kw = dict(return_offsets_mapping=True, return_special_tokens_mask=True)
        _same(ours(line, **kw), hf(line, **kw))
        assert ours.tokenize(line) == hf.tokenize(line), line
    assert ours("")["input_ids"] == [101, 102]
    assert ours("Crème brûlée")["input_ids"] == hf("creme brulee")["input_ids"]  # accents gone
    assert ours("[MASK] x")["input_ids"][1] == ours.mask_token_id
    assert ours("b" * 101)["input_ids"][1] == ours.unk_token_id  # > max_input_chars_per_word


def test_minilm_batch_and_pair_parity(ours, hf, en_lines) -> None:
    firsts, seconds = en_lines[:-1], en_lines[1:]
    kw = dict(return_offsets_mapping=True)
    _same(ours(en_lines, **kw), hf(en_lines, **kw))
    _same(ours(firsts, seconds, **kw), hf(firsts, seconds, **kw))
    for a, b in list(zip(firsts, seconds, strict=True))[::7]:
        _same(ours(a, b, **kw), hf(a, b, **kw))
    enc = ours("first part", "second part")
    assert enc["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]
    assert (
        ours("a b", add_special_tokens=False)["input_ids"]
        == hf("a b", add_special_tokens=False)["input_ids"]
    )


@pytest.mark.parametrize(
    "padding,max_length",
    [(True, None), ("longest", None), ("max_length", 40), ("max_length", None)],
)
def test_minilm_padding_parity(ours, hf, en_lines, padding, max_length) -> None:
    batch = [line for line in en_lines if len(ours.tokenize(line)) <= 38][:64]
    kw = dict(
        padding=padding,
        max_length=max_length,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    got, want = ours(batch, **kw), hf(batch, **kw)
    _same(got, want)
    lengths = {len(ids) for ids in got["input_ids"]}
    assert len(lengths) == 1
    if padding == "max_length":
        assert lengths == {max_length or 512}
    pt = ours(batch, padding=padding, max_length=max_length, return_tensors="pt")
    ref = hf(batch, padding=padding, max_length=max_length, return_tensors="pt")
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert pt[key].dtype == torch.long
        assert torch.equal(pt[key], ref[key])
    arr = ours(batch, padding=padding, max_length=max_length, return_tensors="np")
    assert np.array_equal(arr["input_ids"], ref["input_ids"].numpy())


@pytest.mark.parametrize("truncation", [True, "longest_first", "only_first", "only_second"])
@pytest.mark.parametrize("max_length", [12, 33])
def test_minilm_truncation_parity(ours, hf, en_lines, truncation, max_length) -> None:
    pairs = list(zip(en_lines[:-1], en_lines[1:], strict=True))
    if truncation in ("only_first", "only_second"):  # the other text must fit untouched
        keep = 1 if truncation == "only_first" else 0
        pairs = [p for p in pairs if len(ours.tokenize(p[keep])) + 4 <= max_length]
    assert len(pairs) > 20
    firsts, seconds = [p[0] for p in pairs], [p[1] for p in pairs]
    kw = dict(truncation=truncation, max_length=max_length, return_offsets_mapping=True)
    got = ours(firsts, seconds, **kw)
    _same(got, hf(firsts, seconds, **kw))
    assert max(len(ids) for ids in got["input_ids"]) == max_length
    for a, b in pairs[::5]:
        _same(ours(a, b, **kw), hf(a, b, **kw))
    if truncation == "only_second":  # a single text has no second sequence to cut
        with pytest.raises(InputError, match="Second sequence not provided"):
            ours(en_lines, **kw)
        with pytest.raises(Exception, match="Second sequence not provided"):
            hf(en_lines, **kw)
    else:
        _same(ours(en_lines, **kw), hf(en_lines, **kw))
    # padding + truncation together
    kw["padding"] = "max_length"
    _same(ours(firsts, seconds, **kw), hf(firsts, seconds, **kw))


def test_truncation_defaults_and_no_state_leak(ours, hf) -> None:
    long_text = " ".join(["token"] * 700)
    assert len(ours(long_text, truncation=True)["input_ids"]) == 512  # model_max_length
    assert ours(long_text, truncation=True) == hf(long_text, truncation=True)
    assert len(ours(long_text)["input_ids"]) == 702  # the previous call left no truncation
    ours(["a", "b c d"], padding="max_length", max_length=9)
    assert ours(["a", "b c d"])["input_ids"] == [[101, 1037, 102], [101, 1038, 1039, 1040, 102]]
    with pytest.raises(InputError, match="max_length"):
        ours("short", " ".join(["word"] * 50), truncation="only_first", max_length=10)
    assert len(ours(long_text)["input_ids"]) == 702


def test_single_text_padding_and_pickle(ours, hf) -> None:
    kw = dict(padding="max_length", max_length=8, return_special_tokens_mask=True)
    _same(ours("hello world", **kw), hf("hello world", **kw))
    assert ours("hello world", **kw)["attention_mask"] == [1, 1, 1, 1, 0, 0, 0, 0]
    assert ours("hello world", padding=True)["input_ids"] == [101, 7592, 2088, 102]
    clone = pickle.loads(pickle.dumps(ours))
    assert clone(["a b", "c"], padding=True) == ours(["a b", "c"], padding=True)


def test_return_tensors(ours) -> None:
    single = ours("hello world", return_tensors="pt", return_offsets_mapping=True)
    assert single["input_ids"].tolist() == [[101, 7592, 2088, 102]]
    assert single["offset_mapping"].shape == (1, 4, 2)
    same_len = ours(["hello world", "good day"], return_tensors="np")
    assert same_len["attention_mask"].shape == (2, 4)
    assert same_len["input_ids"].dtype == np.int64
    with pytest.raises(InputError, match="padding=True"):
        ours(["hello world", "a much longer sentence than that"], return_tensors="pt")


def test_bad_arguments(ours) -> None:
    with pytest.raises(InputError, match="text_pair"):
        ours(["a", "b"], ["c"])
    with pytest.raises(InputError, match="text_pair"):
        ours("a", ["c"])
    with pytest.raises(InputError, match="truncation"):
        ours("a", truncation="sideways")
    with pytest.raises(InputError, match="padding"):
        ours("a", padding="left")
    with pytest.raises(InputError, match="return_tensors"):
        ours("a", return_tensors="tf")
    with pytest.raises(InputError, match="list of str"):
        ours(["a", 3])


@pytest.mark.parametrize("skip", [False, True])
def test_decode_parity(ours, hf, en_lines, skip) -> None:
    id_lists = [hf(line)["input_ids"] for line in en_lines[::9]]
    id_lists += [
        hf(a, b)["input_ids"] for a, b in zip(en_lines[:40:4], en_lines[1:41:4], strict=True)
    ]
    id_lists += [
        [101, 7592, 1010, 2088, 1012, 2003, 2078, 1005, 1056, 103, 102, 0, 0],
        [],
        [100, 100],
        [0, 101, 102, 103],
        [2023, 2003, 1037, 3231, 999],
    ]
    for ids in id_lists:
        assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(
            ids, skip_special_tokens=skip
        )
        assert ours.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=True) == (
            hf.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=True)
        )
    assert ours.decode(torch.tensor([101, 7592, 102]), skip_special_tokens=True) == "hello"
    assert ours.decode([101, 7592, 102]) == "[CLS] hello [SEP]"


# ------------------------------------------------------------------ Chinese vocab and corpus
def _is_cjk(ch: str) -> bool:
    """BERT's definition of a "Chinese character" (CJK Unified/Compatibility Ideographs)."""
    cp = ord(ch)
    return any(
        lo <= cp <= hi
        for lo, hi in (
            (0x4E00, 0x9FFF),
            (0x3400, 0x4DBF),
            (0x20000, 0x2A6DF),
            (0x2A700, 0x2B73F),
            (0x2B740, 0x2B81F),
            (0x2B820, 0x2CEAF),
            (0xF900, 0xFAFF),
            (0x2F800, 0x2FA1F),
        )
    )


def test_build_vocab_layout(zh_vocab_dir: Path, zh_corpus_lines: list[str]) -> None:
    tokens = (zh_vocab_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert tokens[-1] == ""  # newline-terminated
    tokens = tokens[:-1]
    assert len(tokens) == 8000
    assert len(set(tokens)) == len(tokens)
    assert tokens[:104] == SPECIAL_TOKENS
    assert (tokens[0], tokens[1], tokens[99]) == ("[PAD]", "[unused1]", "[unused99]")
    assert tokens[100:104] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert not any(t.startswith("[") and t.endswith("]") and len(t) > 1 for t in tokens[104:])
    vocab = set(tokens)
    assert {"的", "是", "不", "了", "人", "中", "国", "书", "好", "，", "。"} <= vocab
    assert {"a", "##s", "1", "##0"} <= vocab
    assert any(len(t) > 1 and not t.startswith("##") for t in tokens[104:])  # merged pieces
    # every CJK character of the corpus made it (after the BERT normalizer, as the model sees it)
    tok = Tokenizer.from_pretrained(zh_vocab_dir)
    seen = {ch for ch in set("".join(zh_corpus_lines)) if _is_cjk(ch)}
    assert len(seen) > 4000
    missing = [ch for ch in seen if tok.backend.normalizer.normalize_str(ch).strip() not in vocab]
    assert missing == []


def test_chinese_corpus_parity(zh_vocab_dir: Path, zh_corpus_lines: list[str]) -> None:
    ours = Tokenizer.from_pretrained(zh_vocab_dir)
    hf = transformers.BertTokenizer.from_pretrained(zh_vocab_dir)
    assert ours.get_vocab() == hf.get_vocab()
    unk = 0
    for start in range(0, len(zh_corpus_lines), 2000):  # chunks keep memory small
        chunk = zh_corpus_lines[start : start + 2000]
        got = ours(chunk, return_offsets_mapping=True)
        _same(got, hf(chunk, return_offsets_mapping=True))
        unk += sum(ids.count(ours.unk_token_id) for ids in got["input_ids"])
    assert len(zh_corpus_lines) > 50_000
    assert unk < 100  # every character is in the vocab; only >100-char "words" become [UNK]
    pairs = zh_corpus_lines[:2000]
    kw = dict(truncation=True, max_length=64, padding=True, return_offsets_mapping=True)
    _same(ours(pairs[::2], pairs[1::2], **kw), hf(pairs[::2], pairs[1::2], **kw))


def test_build_vocab_from_files(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "今天天气很好。\nThe weather is nice today!\n天气预报说明天下雨。\n" * 3, encoding="utf-8"
    )
    out = build_vocab([corpus], vocab_size=200, out=tmp_path, min_frequency=1)
    assert out == tmp_path / "vocab.txt"
    tokens = out.read_text(encoding="utf-8").splitlines()
    assert tokens[:104] == SPECIAL_TOKENS
    assert set("今天气很好预报说明下雨。the") <= set(tokens)
    assert "##e" in tokens
    assert not list(tmp_path.glob(".vocab-*"))  # no temp file left behind
    tok = Tokenizer.from_vocab(out)
    assert tok.tokenize("今天下雨") == ["今", "天", "下", "雨"]
    assert vocab_hash(out) == hashlib.sha256(out.read_bytes()).hexdigest()[:16]
    assert vocab_hash(tmp_path) == vocab_hash(out)
    # a single path works too, and strings are accepted through an iterator
    assert build_vocab(corpus, 200, tmp_path / "v2.txt", min_frequency=1).is_file()
    gen = (line for line in ["中文 文本", "中文"])
    assert "文" in build_vocab(gen, 150, tmp_path / "v3.txt").read_text(encoding="utf-8")


def test_build_vocab_errors(tmp_path: Path) -> None:
    bad = tmp_path / "gbk.txt"
    bad.write_bytes("好的\n".encode() + "中文".encode("gbk") + b"\n")
    with pytest.raises(DataError, match=r"gbk\.txt: invalid UTF-8 at byte offset 7 \(line 2\)"):
        build_vocab([bad], 500, tmp_path / "vocab.txt")
    assert not (tmp_path / "vocab.txt").exists()
    with pytest.raises(DataError, match="does not exist"):
        build_vocab(["no text, but a list of strings"], 500, tmp_path / "vocab.txt")
    with pytest.raises(ConfigError, match="at least 105"):
        build_vocab(iter(["中文"]), 104, tmp_path / "vocab.txt")
    with pytest.raises(ConfigError, match="too small.*limit_alphabet <= 6"):
        build_vocab(iter(["一二三四五六七八九十"] * 3), 110, tmp_path / "vocab.txt")
    with pytest.raises(DataError, match="no text"):
        build_vocab(iter([""]), 500, tmp_path / "vocab.txt")


# ------------------------------------------------------------------ save / load
def test_save_load_round_trip(tmp_path: Path, minilm_dir: Path, ours, hf, en_lines) -> None:
    saved = ours.save_pretrained(tmp_path / "tok")
    assert (saved / "vocab.txt").read_bytes() == (minilm_dir / "vocab.txt").read_bytes()
    config = json.loads((saved / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "BertTokenizer"
    assert config["do_lower_case"] is True and config["model_max_length"] == 512
    assert json.loads((saved / "special_tokens_map.json").read_text())["mask_token"] == "[MASK]"
    again = Tokenizer.from_pretrained(saved)
    assert again.get_vocab() == ours.get_vocab()
    hf_again = transformers.BertTokenizer.from_pretrained(saved)
    kw = dict(return_offsets_mapping=True, truncation=True, max_length=48, padding=True)
    _same(again(en_lines, **kw), hf(en_lines, **kw))
    _same(again(en_lines, **kw), hf_again(en_lines, **kw))
    # non-default settings survive the round trip, in zhplm and in transformers
    cased = Tokenizer.from_vocab(saved / "vocab.txt", lowercase=False, model_max_length=128)
    cased.save_pretrained(tmp_path / "cased")
    reloaded = Tokenizer.from_pretrained(tmp_path / "cased")
    assert (reloaded.lowercase, reloaded.model_max_length) == (False, 128)
    hf_cased = transformers.BertTokenizer.from_pretrained(tmp_path / "cased")
    assert hf_cased.model_max_length == 128
    _same(reloaded(en_lines[:50]), hf_cased(en_lines[:50]))
    assert reloaded.tokenize("Hello") != ours.tokenize("Hello")


def test_load_variants(tmp_path: Path, minilm_dir: Path, ours: Tokenizer, en_lines) -> None:
    from_file = Tokenizer.from_pretrained(minilm_dir / "vocab.txt")
    assert from_file.get_vocab() == ours.get_vocab()
    only_json = tmp_path / "json_only"
    only_json.mkdir()
    shutil.copy(minilm_dir / "tokenizer.json", only_json)
    from_json = Tokenizer.from_pretrained(only_json)
    assert from_json.get_vocab() == ours.get_vocab()
    assert from_json(en_lines, return_offsets_mapping=True) == ours(
        en_lines, return_offsets_mapping=True
    )


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        Tokenizer.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="has no vocab.txt or tokenizer.json"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("a\nb\n[UNK]\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"lacks the special tokens \['\[PAD\]'"):
        Tokenizer.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        Tokenizer.from_vocab(tmp_path / "missing.txt")
    with pytest.raises(CheckpointError, match="does not exist"):
        vocab_hash(tmp_path / "missing.txt")
    (tmp_path / "vocab.txt").write_text("\n".join(SPECIAL_TOKENS), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="tokenizer_config.json"):
        Tokenizer.from_pretrained(tmp_path)
