"""Corpus preprocessing on the built-in corpus: counts, round trips, parallel runs, bad input."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from zhplm import datasets
from zhplm.data.corpus import (
    TokenDataset,
    iter_documents,
    new_stats,
    preprocess,
    split_sentences,
)
from zhplm.errors import ConfigError, DataError, InputError
from zhplm.tokenization import Tokenizer, vocab_hash

ARRAYS = ("tokens", "word_starts", "sentences", "documents")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tokenizer(zh_vocab_dir: Path) -> Tokenizer:
    return Tokenizer.from_pretrained(zh_vocab_dir)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    path = datasets.write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")
    return path, path.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def built(tmp_path_factory, corpus, zh_vocab_dir) -> tuple[Path, dict]:
    """The whole built-in corpus, preprocessed once with jieba word starts."""
    out = tmp_path_factory.mktemp("built") / "dataset"
    meta = preprocess([corpus[0]], zh_vocab_dir, out)
    return out, meta


@pytest.fixture(scope="module")
def subset(tmp_path_factory, corpus) -> tuple[Path, list[str]]:
    """2000 documents: the first 1000 lines (reviews) and the last 1000 (People's Daily)."""
    lines = corpus[1][:1000] + corpus[1][-1000:]
    path = tmp_path_factory.mktemp("subset") / "subset.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, lines


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory, zh_vocab_dir) -> Path:
    root = tmp_path_factory.mktemp("small")
    text = root / "small.txt"
    text.write_text("今天天气很好。我们去公园散步吧！\n他说：“明天见。”然后走了。\n",
                    encoding="utf-8")
    preprocess([text], zh_vocab_dir, root / "dataset", segmenter="none")
    return root / "dataset"


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def load_arrays(directory: Path, meta: dict) -> dict[str, np.ndarray]:
    """Concatenated token / word-start arrays and per-shard offsets, read without TokenDataset."""
    shards = [{k: np.load(directory / f"{s['name']}.{k}.npy") for k in ARRAYS}
              for s in meta["shards"]]
    return {
        "tokens": np.concatenate([s["tokens"] for s in shards]),
        "word_starts": np.concatenate([s["word_starts"] for s in shards]),
        "shards": shards,
    }


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def segment_ids(document) -> list[int]:
    return [int(i) for ids, _ in document for i in ids]


# --------------------------------------------------------------------------- built-in corpus


def test_meta_matches_arrays(built, corpus, zh_vocab_dir):
    out, meta = built
    arrays = load_arrays(out, meta)
    assert meta == json.loads((out / "meta.json").read_text(encoding="utf-8"))
    assert meta["format"] == "zhplm-tokens-v1"
    assert meta["dtype"] == "uint16" and arrays["tokens"].dtype == np.uint16
    assert meta["vocab_hash"] == vocab_hash(zh_vocab_dir / "vocab.txt")
    assert meta["vocab_size"] == 8000 and meta["lowercase"] is True
    assert meta["segmenter"] == "jieba"
    assert meta["sources"] == [str(corpus[0])]
    assert meta["num_tokens"] == len(arrays["tokens"]) == len(arrays["word_starts"])
    assert meta["num_documents"] == len(corpus[1])  # no line of the corpus is empty
    assert sum(meta["skipped"].values()) == 0
    assert meta["num_characters"] > 2_500_000 and meta["seconds"] > 0
    sentences = documents = 0
    for info, shard in zip(meta["shards"], arrays["shards"], strict=True):
        s, d = shard["sentences"], shard["documents"]
        assert s.dtype == d.dtype == np.int64 and shard["word_starts"].dtype == np.uint8
        assert s[0] == 0 and s[-1] == info["num_tokens"] == len(shard["tokens"])
        assert d[0] == 0 and d[-1] == info["num_sentences"] == len(s) - 1
        assert len(d) - 1 == info["num_documents"]
        assert np.all(np.diff(s) > 0) and np.all(np.diff(d) > 0)  # nothing empty is stored
        assert np.all(shard["word_starts"][s[:-1]] == 1)  # a sentence starts a word
        sentences += info["num_sentences"]
        documents += info["num_documents"]
    assert (sentences, documents) == (meta["num_sentences"], meta["num_documents"])
    assert meta["num_sentences"] > 2 * meta["num_documents"]  # the reviews were split
    assert set(np.unique(arrays["word_starts"])) == {0, 1}
    dataset = TokenDataset(out)
    assert (dataset.num_tokens, dataset.num_documents, dataset.vocab_hash) == (
        meta["num_tokens"], meta["num_documents"], meta["vocab_hash"])
    assert sum(1 for _ in dataset.documents()) == meta["num_documents"]


def test_tokens_match_independent_encoding(built, corpus, tokenizer):
    """Sentences are cut at punctuation, where WordPiece splits anyway, so a document's tokens
    are exactly those of its whole line, encoded on its own."""
    out, meta = built
    lines = corpus[1]
    dataset = TokenDataset(out)
    rng = random.Random(0)
    sample = [0, 1, len(lines) - 1, *rng.sample(range(2, len(lines) - 1), 6000)]
    expected = tokenizer([lines[i] for i in sample], add_special_tokens=False)["input_ids"]
    stored = [segment_ids(dataset.document(i)) for i in sample]
    assert sum(map(len, stored)) == sum(map(len, expected)) > 400_000
    for i, ids, want in zip(sample, stored, expected, strict=True):
        assert ids == want, lines[i]
    for i in sample[:300]:
        assert [len(ids) for ids, _ in dataset.document(i)] == [
            len(tokenizer.tokenize(s)) for s in split_sentences(lines[i])]
    assert segment_ids(dataset.document(-1)) == segment_ids(dataset.document(len(lines) - 1))
    with pytest.raises(IndexError):
        dataset.document(len(lines))


def test_decode_round_trip(built, corpus, tokenizer):
    dataset = TokenDataset(built[0])
    normalize = tokenizer.backend.normalizer.normalize_str
    for i in (0, 5, len(corpus[1]) - 1):
        ids = np.concatenate([ids for ids, _ in dataset.document(i)])
        assert tokenizer.unk_token_id not in ids
        decoded = tokenizer.decode(ids)
        assert "".join(decoded.split()) == "".join(normalize(corpus[1][i]).split())
    assert "".join(tokenizer.decode(dataset.document(0)[0][0]).split()) == (
        "我正在写这本书的心得，勘误和疑点，有兴趣的朋友可以访问我的网站，交流切磋。")


def test_word_starts_follow_jieba(built, corpus, tokenizer):
    import jieba

    dataset = TokenDataset(built[0])
    lines = corpus[1]
    rng = random.Random(1)
    checked = starts = 0
    for i in rng.sample(range(len(lines)), 150):
        for sentence, (ids, word_starts) in zip(
            split_sentences(lines[i]), dataset.document(i), strict=True
        ):
            enc = tokenizer.backend.encode(sentence, add_special_tokens=False)
            assert enc.ids == ids.tolist()
            boundaries = {start for _, start, _ in jieba.tokenize(sentence)}
            for j, (token, (begin, _)) in enumerate(zip(enc.tokens, enc.offsets, strict=True)):
                at_boundary = not token.startswith("##") and begin in boundaries
                assert word_starts[j] == (1 if j == 0 else int(at_boundary)), (sentence, token)
            checked += len(ids)
            starts += int(word_starts.sum())
    assert checked > 3000
    assert 0.4 < starts / checked < 0.85  # Chinese words are ~1.6 characters long


def test_known_segmentation(tmp_path, zh_vocab_dir, tokenizer):
    text = write_bytes(tmp_path / "a.txt", "我爱北京天安门。\n".encode())
    preprocess([text], zh_vocab_dir, tmp_path / "jieba")
    preprocess([text], zh_vocab_dir, tmp_path / "none", segmenter="none")
    [(ids, jieba_starts)] = TokenDataset(tmp_path / "jieba").document(0)
    [(_, plain_starts)] = TokenDataset(tmp_path / "none").document(0)
    assert tokenizer.convert_ids_to_tokens(ids) == list("我爱北京天安门。")
    assert jieba_starts.tolist() == [1, 1, 1, 0, 1, 0, 0, 1]  # 我/爱/北京/天安门/。
    assert plain_starts.tolist() == [1] * 8
    assert TokenDataset(tmp_path / "none").meta["segmenter"] == "none"


# --------------------------------------------------------------------------- parallel, shards


def test_workers_and_shards_are_deterministic(tmp_path, subset, zh_vocab_dir):
    path, lines = subset
    one = preprocess([path], zh_vocab_dir, tmp_path / "one")
    kwargs = {"shard_tokens": 30_000, "chunk_documents": 150}
    serial = preprocess([path], zh_vocab_dir, tmp_path / "serial", **kwargs)
    parallel = preprocess([path], zh_vocab_dir, tmp_path / "parallel", workers=2, **kwargs)
    assert len(one["shards"]) == 1 and len(serial["shards"]) > 3
    assert serial["shards"] == parallel["shards"]
    for info in serial["shards"]:
        for kind in ARRAYS:
            name = f"{info['name']}.{kind}.npy"
            assert (tmp_path / "serial" / name).read_bytes() == (
                tmp_path / "parallel" / name).read_bytes(), name
    keys = ("num_tokens", "num_sentences", "num_documents", "num_characters", "skipped")
    assert [serial[k] for k in keys] == [parallel[k] for k in keys] == [one[k] for k in keys]

    sharded, whole = TokenDataset(tmp_path / "serial"), TokenDataset(tmp_path / "one")
    assert sharded.num_documents == whole.num_documents == len(lines)
    for i in range(whole.num_documents):
        a, b = sharded.document(i), whole.document(i)
        assert [x.tolist() for x, _ in a] == [x.tolist() for x, _ in b]
        assert [w.tolist() for _, w in a] == [w.tolist() for _, w in b]
    # every shard but the last is cut at the first document boundary past shard_tokens
    for info in serial["shards"][:-1]:
        documents = np.load(tmp_path / "serial" / f"{info['name']}.documents.npy")
        sentences = np.load(tmp_path / "serial" / f"{info['name']}.sentences.npy")
        assert info["num_tokens"] >= 30_000 > sentences[documents[-2]]
    assert siblings(tmp_path / "one") == ["one", "parallel", "serial"]  # no temp dirs


def test_min_sentence_tokens(tmp_path, zh_vocab_dir):
    text = write_bytes(tmp_path / "a.txt", "好。今天天气很好。\n嗯。\n".encode())
    meta = preprocess([text], zh_vocab_dir, tmp_path / "ds", min_sentence_tokens=3)
    assert meta["num_documents"] == 1 and meta["num_sentences"] == 1
    assert meta["skipped"]["short_sentences"] == 2  # 好。 and 嗯。
    assert meta["skipped"]["empty_documents"] == 1


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("他说：“你好。”然后走了。", ["他说：“你好。”", "然后走了。"]),
        ("『走吧！』他喊道。（完）", ["『走吧！』", "他喊道。", "（完）"]),
        ("我想……算了吧。真的？！好", ["我想……", "算了吧。", "真的？！", "好"]),
        ("价格是3.14元。不贵!下次再来", ["价格是3.14元。", "不贵!", "下次再来"]),
        ("Mr. Smith paid 3.14 dollars, e.g. for tea. Then he left! OK?",
         ["Mr. Smith paid 3.14 dollars, e.g. for tea.", "Then he left!", "OK?"]),
        ('He said "stop." Dr. J. Lee agreed... Fine', ['He said "stop."',
                                                    "Dr. J. Lee agreed...", "Fine"]),
        ("  no terminator  ", ["no terminator"]),
        ("", []),
        ("。。。", ["。。。"]),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_blank_line_layout(tmp_path, zh_vocab_dir):
    path = write_bytes(tmp_path / "blank.txt",
                       "\n第一句。\n第二句！\n\n第三句\n\n\n \nHello world.\n".encode())
    stats = new_stats()
    assert list(iter_documents(path, stats=stats)) == [
        ["第一句。", "第二句！"], ["第三句"], ["Hello world."]]
    assert stats["empty_lines"] == 3  # the leading one and two repeats; separators are free
    stats = new_stats()
    assert len(list(iter_documents(path, stats=stats, layout="line"))) == 4
    assert stats["empty_lines"] == 5
    meta = preprocess([path], zh_vocab_dir, tmp_path / "ds")
    assert (meta["num_documents"], meta["num_sentences"]) == (3, 4)
    document = TokenDataset(tmp_path / "ds").document(0)
    assert len(document) == 2
    # a trailing blank line alone does not make a file blank-line separated
    lines = write_bytes(tmp_path / "lines.txt", "一。二。\n三。\n\n".encode())
    assert list(iter_documents(lines)) == [["一。", "二。"], ["三。"]]


def test_jsonl(tmp_path, zh_vocab_dir):
    rows = [json.dumps({"text": "第一句。第二句！\n第三句"}, ensure_ascii=False),
            json.dumps({"text": " "}), json.dumps({"id": 1}), "{not json",
            "", json.dumps({"text": "Hello world. Bye."}), json.dumps(["text"])]
    path = write_bytes(tmp_path / "c.jsonl", ("\n".join(rows) + "\n").encode())
    stats = new_stats()
    assert list(iter_documents(path, stats=stats)) == [
        ["第一句。", "第二句！", "第三句"], ["Hello world.", "Bye."]]
    assert (stats["malformed_json"], stats["empty_documents"], stats["empty_lines"]) == (3, 1, 1)
    with pytest.raises(DataError, match=r"c\.jsonl:3: .*\"text\".*--strict"):
        list(iter_documents(path, strict=True))
    meta = preprocess([path], zh_vocab_dir, tmp_path / "ds")
    assert (meta["num_documents"], meta["num_sentences"]) == (2, 5)
    assert meta["skipped"]["malformed_json"] == 3
    with pytest.raises(DataError, match=r"c\.jsonl:3"):  # raised while workers run
        preprocess([path], zh_vocab_dir, tmp_path / "strict", strict=True, workers=2)
    assert siblings(path) == ["c.jsonl", "ds"]


# --------------------------------------------------------------------------- bad input


def test_empty_files(tmp_path, zh_vocab_dir):
    empty = write_bytes(tmp_path / "empty.txt", b"")
    blank = write_bytes(tmp_path / "blank.txt", b"\n\n  \n")
    good = write_bytes(tmp_path / "good.txt", "你好。\n".encode())
    meta = preprocess([empty, blank, good], zh_vocab_dir, tmp_path / "ds")
    assert meta["num_documents"] == 1
    assert meta["skipped"]["empty_files"] == 2 and meta["skipped"]["empty_lines"] == 3
    with pytest.raises(DataError, match=r"no tokens in .*empty\.txt, .*blank\.txt \(skipped: "
                                        r"empty_lines=3, empty_files=2\)"):
        preprocess([empty, blank], zh_vocab_dir, tmp_path / "none")
    assert siblings(empty) == ["blank.txt", "ds", "empty.txt", "good.txt"]


def test_invalid_utf8(tmp_path, zh_vocab_dir):
    first = "第一行。\n".encode()
    path = write_bytes(tmp_path / "bad.txt", first + b"ab\xffcd\n" + "第三行。\n".encode())
    stats = new_stats()
    assert list(iter_documents(path, stats=stats)) == [["第一行。"], ["第三行。"]]
    assert stats["invalid_utf8"] == 1
    offset = len(first) + 2
    with pytest.raises(DataError, match=rf"bad\.txt: line 2: invalid UTF-8 at byte offset "
                                        rf"{offset}\b.*iconv"):
        list(iter_documents(path, strict=True))
    meta = preprocess([path], zh_vocab_dir, tmp_path / "ds")
    assert meta["skipped"]["invalid_utf8"] == 1 and meta["num_documents"] == 2
    with pytest.raises(DataError, match=rf"bad\.txt: line 2: .* byte offset {offset}\b"):
        preprocess([path], zh_vocab_dir, tmp_path / "strict", strict=True)
    assert siblings(path) == ["bad.txt", "ds"]  # the failed run left nothing behind
    bom = write_bytes(tmp_path / "bom.txt", b"\xef\xbb\xbf" + "你好。\r\n再见。\r\n".encode())
    assert list(iter_documents(bom)) == [["你好。"], ["再见。"]]


def test_missing_file(tmp_path, zh_vocab_dir):
    good = write_bytes(tmp_path / "good.txt", "你好。\n".encode())
    with pytest.raises(DataError, match=r"nope\.txt does not exist"):
        preprocess([good, tmp_path / "nope.txt"], zh_vocab_dir, tmp_path / "ds")
    with pytest.raises(DataError, match=r"nope\.txt"):
        list(iter_documents(tmp_path / "nope.txt"))
    assert siblings(good) == ["good.txt"]
    with pytest.raises(InputError, match="segmenter"):
        preprocess([good], zh_vocab_dir, tmp_path / "ds", segmenter="ltp")  # type: ignore


def test_refuses_to_overwrite(tmp_path, zh_vocab_dir):
    first = write_bytes(tmp_path / "first.txt", "第一个。\n".encode())
    second = write_bytes(tmp_path / "second.txt", "第二个。\n第三个。\n".encode())
    out = tmp_path / "ds"
    preprocess([first], zh_vocab_dir, out)
    with pytest.raises(DataError, match=r"ds already holds a dataset.*overwrite"):
        preprocess([second], zh_vocab_dir, out)
    assert TokenDataset(out).num_documents == 1
    meta = preprocess([second], zh_vocab_dir, out, overwrite=True)
    assert meta["num_documents"] == TokenDataset(out).num_documents == 2
    assert siblings(out) == ["ds", "first.txt", "second.txt"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(DataError, match=r"other exists, is not empty"):
        preprocess([first], zh_vocab_dir, other, overwrite=True)
    assert (other / "keep.txt").exists()
    empty_dir = tmp_path / "empty_dir"
    empty_dir.mkdir()
    preprocess([first], zh_vocab_dir, empty_dir)
    assert TokenDataset(empty_dir).num_documents == 1


def test_corrupt_datasets(tmp_path, small_dataset):
    def broken(name: str) -> Path:
        copy = tmp_path / name
        shutil.copytree(small_dataset, copy)
        return copy

    assert TokenDataset(small_dataset).num_documents == 2
    with pytest.raises(DataError, match=r"nothing does not exist.*zhplm preprocess"):
        TokenDataset(tmp_path / "nothing")
    no_meta = broken("no_meta")
    (no_meta / "meta.json").unlink()
    with pytest.raises(DataError, match=r"no_meta has no meta\.json.*zhplm preprocess"):
        TokenDataset(no_meta)
    corrupt = broken("corrupt")
    (corrupt / "meta.json").write_text('{"format": "zhplm-tokens-v1", ', encoding="utf-8")
    with pytest.raises(DataError, match=r"meta\.json is corrupt.*re-run `zhplm preprocess`"):
        TokenDataset(corrupt)
    wrong = broken("wrong")
    meta = json.loads((wrong / "meta.json").read_text(encoding="utf-8"))
    meta["num_tokens"] = "many"
    (wrong / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(DataError, match=r"'num_tokens' missing or not int"):
        TokenDataset(wrong)
    mismatch = broken("mismatch")
    meta["num_tokens"] = 1
    meta["shards"][0]["num_tokens"] += 1
    (mismatch / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(DataError, match=r"shard-00000: tokens \d+, meta\.json says"):
        TokenDataset(mismatch)
    missing = broken("missing")
    (missing / "shard-00000.word_starts.npy").unlink()
    with pytest.raises(DataError, match=r"cannot read .*word_starts\.npy.*zhplm preprocess"):
        TokenDataset(missing)
    truncated = broken("truncated")
    data = (truncated / "shard-00000.tokens.npy").read_bytes()
    (truncated / "shard-00000.tokens.npy").write_bytes(data[:-4])
    with pytest.raises(DataError, match=r"tokens\.npy"):
        TokenDataset(truncated)


def test_check_vocab(tmp_path, small_dataset, zh_vocab_dir):
    dataset = TokenDataset(small_dataset)
    dataset.check_vocab(zh_vocab_dir)
    dataset.check_vocab(zh_vocab_dir / "vocab.txt", source="the run")
    dataset.check_vocab(vocab_hash(zh_vocab_dir))
    other = tmp_path / "model"
    other.mkdir()
    vocab = (zh_vocab_dir / "vocab.txt").read_text(encoding="utf-8")
    (other / "vocab.txt").write_text(vocab + "新词\n", encoding="utf-8")
    expected = (f"dataset corpus-x was built with vocab {dataset.vocab_hash} but the model "
                f"uses {vocab_hash(other)}; re-run zhplm preprocess --vocab "
                f"{other / 'vocab.txt'}")
    with pytest.raises(ConfigError) as info:
        dataset.check_vocab(other, source="corpus-x")
    assert str(info.value) == expected
    with pytest.raises(ConfigError, match=r"MODEL_DIR/vocab\.txt"):
        dataset.check_vocab("0123456789abcdef")
    with pytest.raises(ConfigError, match=r"does not exist"):
        dataset.check_vocab(tmp_path / "missing_model")


# --------------------------------------------------------------------------- fast paths

ODD_TEXT = [
    "[MASK]中文[UNK]文[CLS]", "café Ünïcödé 中文 e\u0301 İstanbul中", "\x00控制\x07字符\ufffd好",
    "豈更車中", "㐀𠀀中文䶵鿖", "a" * 150 + "中" + "b" * 99, "ＡＢＣ１２３中文abc中文",
    "😀中\u200b文", "中文\u3000全角\t空格 ", "中文中文", "\x07\x00", "1.5M的2-0和www.a-b.com",
    "[MASK]，[UNK]。“引号”（括号）【书名】《书》", "，，，", "a，b。c", "\u037e\u0387;·",
    "，\u0301。\u0903",
    "—— ……！？", "¿Qué? ¡Sí!", "x" * 99 + "，" + "y" * 101, "中文［ＭＡＳＫ］", "１，２。３",
]


def test_chinese_fast_path_is_exact(corpus, zh_vocab_dir, tokenizer):
    """Chinese characters and punctuation looked up in a table + the rest through the
    tokenizer = the tokenizer on each sentence alone, ids and word starts."""
    from zhplm.data.encoding import ChunkEncoder, single_token_table

    fast = ChunkEncoder(str(zh_vocab_dir), "jieba", 1, "uint16")
    plain = ChunkEncoder(str(zh_vocab_dir), "jieba", 1, "uint16")
    plain.single_tokens = None
    table = fast.single_tokens
    assert table is not None and np.all(table[0x4E00:0xA000] >= 0)
    assert np.all(table[[ord(c) for c in "，。、“”（）《》！？"]] >= 0)
    assert np.all(table[:0x80] == -1) and table[0x037E] == -1  # ASCII; NFD makes ";"
    lines = corpus[1][:400] + corpus[1][-400:]
    documents = [split_sentences(line) for line in lines] + [[t] for t in ODD_TEXT]
    a, b = fast(documents), plain(documents)
    for field in ("ids", "word_starts", "sentence_lengths", "document_sizes"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert (a.characters, a.short_sentences, a.empty_documents) == (
        b.characters, b.short_sentences, b.empty_documents) == (b.characters, 1, 1)
    sentences = [s for d in documents for s in d]
    encoded = tokenizer.backend.encode_batch(sentences, add_special_tokens=False)
    assert a.ids.tolist() == [i for e in encoded for i in e.ids]
    # a tokenizer that does not split Chinese characters gets no table
    words = Tokenizer.from_pretrained(zh_vocab_dir).get_vocab()
    assert single_token_table(Tokenizer(sorted(words, key=words.__getitem__),
                                        tokenize_chinese_chars=False).backend) is None


def test_segmenter_none_and_python_jieba_agree(tmp_path, subset, zh_vocab_dir, monkeypatch):
    """rjieba and jieba itself build the same dataset; "none" only changes word starts."""
    from zhplm.data import segment

    path, _ = subset
    fast = preprocess([path], zh_vocab_dir, tmp_path / "fast", workers=2)
    none = preprocess([path], zh_vocab_dir, tmp_path / "none", segmenter="none")
    monkeypatch.setenv("ZHPLM_JIEBA", "python")  # also reaches the spawned worker
    segment._rjieba.cache_clear()
    try:
        python = preprocess([path], zh_vocab_dir, tmp_path / "python", workers=2)
    finally:
        monkeypatch.delenv("ZHPLM_JIEBA")
        segment._rjieba.cache_clear()
    for info in fast["shards"]:
        for kind in ARRAYS:
            name = f"{info['name']}.{kind}.npy"
            assert (tmp_path / "fast" / name).read_bytes() == (
                tmp_path / "python" / name).read_bytes(), name
            if kind != "word_starts":
                assert (tmp_path / "fast" / name).read_bytes() == (
                    tmp_path / "none" / name).read_bytes(), name
    assert fast["num_tokens"] == python["num_tokens"] == none["num_tokens"]


# --------------------------------------------------------------------------- killed runs

KILLED_RUN = """
import sys, time
from zhplm.data import corpus, shards

flush = shards.ShardWriter.flush

def flush_then_hang(self):
    flush(self)
    if len(self.shards) == 1:
        print("one shard written", flush=True)
        time.sleep(600)

shards.ShardWriter.flush = flush_then_hang
corpus.preprocess([sys.argv[1]], sys.argv[2], sys.argv[3], shard_tokens=2000, workers=2)
"""


def start_hanging_run(corpus_file: Path, vocab: Path, out: Path):
    """A preprocess run in a subprocess, stopped mid-way with one shard in its temp dir."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(corpus_file), str(vocab),
                              str(out)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline() == "one shard written\n"
    return child


def temp_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_sigkilled_run_leaves_temp_dir_that_the_next_run_removes(tmp_path, subset,
                                                                    zh_vocab_dir):
    """A killed run's directory is removed by the next run when that run has other
    arguments (here shard_tokens); one with the same inputs and arguments resumes it
    (tests/test_preprocess_inputs.py)."""
    import os
    import signal

    path, lines = subset
    out = tmp_path / "ds"
    child = start_hanging_run(path, zh_vocab_dir, out)
    try:
        [live] = temp_dirs(out)
        assert live.name.startswith(f".ds.tmp-{child.pid}-")
        assert (live / "shard-00000.tokens.npy").is_file() and not out.exists()
        # a concurrent run into the same OUT leaves the live run's directory alone
        meta = preprocess([path], zh_vocab_dir, out)
        assert temp_dirs(out) == [live] and TokenDataset(out).num_documents == len(lines)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert temp_dirs(out) == [live]  # what a killed run leaves behind
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = preprocess([path], zh_vocab_dir, out, overwrite=True)
    assert temp_dirs(out) == []
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after.keys() == before.keys()
    assert all(after[k] == before[k] for k in after if k != "meta.json")
    assert {k: v for k, v in again.items() if k != "seconds"} == {
        k: v for k, v in meta.items() if k != "seconds"}


def test_only_stale_temp_dirs_of_this_out_are_removed(tmp_path, zh_vocab_dir):
    import fcntl
    import os

    text = write_bytes(tmp_path / "a.txt", "我爱北京天安门。\n".encode())
    out = tmp_path / "ds"
    dead = dead_pid()

    def make(name: str, file: bool = False) -> Path:
        target = tmp_path / name
        if file:
            target.write_text("x")
        else:
            target.mkdir()
            (target / "shard-00000.tokens.npy").write_bytes(b"partial")
        return target

    stale = make(f".ds.tmp-{dead}-0123abcd")
    stale_old = make(f".ds.old-{dead}-0123abcd")  # holds the dataset being replaced
    locked = make(f".ds.tmp-{dead}-4567abcd")  # e.g. a live run in another PID namespace
    mine = make(f".ds.tmp-{os.getpid()}-89abcdef")  # a live process
    keep = [locked, mine,
            make(f".ds.tmp-{dead}-0123abcd.keep"), make(f".ds.tmp-{dead}-XYZ"),
            make(f".ds2.tmp-{dead}-0123abcd"), make(f".ds.tmp-{dead}-fedcba98", file=True),
            make("ds.tmp-1-0123abcd")]
    link = tmp_path / f".ds.tmp-{dead}-76543210"
    link.symlink_to(stale_old, target_is_directory=True)
    keep.append(link)
    fd = os.open(locked, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        preprocess([text], zh_vocab_dir, out)
        assert not stale.exists()
        # out held no dataset when the run started: the .old- directory may hold the only copy
        assert stale_old.exists()
        assert all(p.exists() or p.is_symlink() for p in keep)
        preprocess([text], zh_vocab_dir, out, overwrite=True)
        assert not stale_old.exists() and stale_old not in temp_dirs(out)
        assert locked.exists()
    finally:
        os.close(fd)
    preprocess([text], zh_vocab_dir, out, overwrite=True)
    assert not locked.exists() and mine.exists()
    assert TokenDataset(out).num_documents == 1


def test_failing_run_never_touches_finished_out(tmp_path, zh_vocab_dir):
    good = write_bytes(tmp_path / "good.txt", "第一个。\n第二个。\n".encode())
    empty = write_bytes(tmp_path / "empty.txt", b"\n")
    out = tmp_path / "ds"
    preprocess([good], zh_vocab_dir, out)
    stale = tmp_path / f".ds.tmp-{dead_pid()}-0123abcd"
    stale.mkdir()
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    with pytest.raises(DataError, match="no tokens"):
        preprocess([empty], zh_vocab_dir, out, overwrite=True, workers=2)
    with pytest.raises(DataError, match="already holds a dataset"):
        preprocess([good], zh_vocab_dir, out)
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    assert after == before and TokenDataset(out).num_documents == 2
    assert temp_dirs(out) == []  # the stale one went, the failed run's own too


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_worker_start_methods_agree(tmp_path, subset, zh_vocab_dir, monkeypatch, method):
    from zhplm.data import encoding

    path, _ = subset
    serial = preprocess([path], zh_vocab_dir, tmp_path / "serial", chunk_documents=50)
    monkeypatch.setattr(encoding, "_START_METHOD", method)
    parallel = preprocess([path], zh_vocab_dir, tmp_path / "parallel", workers=3,
                          chunk_documents=50)
    assert parallel["shards"] == serial["shards"]
    for info in serial["shards"]:
        for kind in ARRAYS:
            name = f"{info['name']}.{kind}.npy"
            assert (tmp_path / "serial" / name).read_bytes() == (
                tmp_path / "parallel" / name).read_bytes(), name
