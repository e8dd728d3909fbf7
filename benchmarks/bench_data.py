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
