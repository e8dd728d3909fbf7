"""The built-in corpus and a vocab padded to a real vocab's size, cached for the benchmarks
(a module the benchmark scripts import, not a script)."""

from __future__ import annotations

import tempfile
from pathlib import Path

CACHE = Path(tempfile.gettempdir()) / "zhplm-bench"


def corpus_and_vocab(vocab_size: int) -> tuple[Path, Path]:
    """The built-in corpus as text and a WordPiece vocab of `vocab_size` entries on it, both
    cached in CACHE. The corpus supports ~8.3k WordPiece tokens; the vocab is padded to the
    requested size (as Google's 21128-token Chinese vocab, which UER-py and HFL use) so the
    vocabulary projection costs what it costs in the reference set-up. The padding tokens
    never occur in text."""
    from zhplm import datasets
    from zhplm.tokenization import build_vocab

    CACHE.mkdir(parents=True, exist_ok=True)
    corpus = CACHE / "corpus.txt"
    if not corpus.is_file():
        datasets.write_corpus(corpus)
    vocab = CACHE / f"vocab{vocab_size}.txt"
    if not vocab.is_file():
        build_vocab([corpus], vocab_size=vocab_size, out=vocab)
        tokens = vocab.read_text(encoding="utf-8").splitlines()
        tokens += [f"[pad{i}]" for i in range(vocab_size - len(tokens))]
        vocab.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return corpus, vocab


def builtin_dataset(vocab: Path, documents: int | None = None,
                    annotate: str | None = None) -> Path:
    """The built-in corpus (its first `documents` documents; with `annotate`, LERT's labels)
    preprocessed with `vocab` by `zhplm preprocess` (2 workers), cached in CACHE."""
    from zhplm.data.corpus import preprocess

    corpus, _ = corpus_and_vocab(8000)
    name = f"dataset-{vocab.stem}-{documents or 'all'}-{annotate or 'plain'}"
    dataset = CACHE / name
    if not (dataset / "meta.json").is_file():
        source = corpus
        if documents is not None:
            source = CACHE / f"corpus-{documents}.txt"
            lines = corpus.read_text(encoding="utf-8").splitlines()[:documents]
            source.write_text("\n".join(lines) + "\n", encoding="utf-8")
        preprocess([source], vocab, dataset, workers=2, annotate=annotate, overwrite=True)
    return dataset
