"""Corpus files -> a memory-mapped token dataset (UER-py's ``preprocess.py``, faster and safer).

:func:`preprocess` wires the steps, each in its own module:

* :mod:`zhplm.data.documents` reads UTF-8 ``.txt`` / ``.jsonl`` corpus files into documents
  of sentences (:func:`iter_documents`, :func:`split_sentences`);
* :mod:`zhplm.data.encoding` tokenizes every sentence without special tokens and marks the
  tokens that start a word (jieba words for whole-word masking, see
  :mod:`zhplm.data.segment`), chunk by chunk, in parallel with ``workers > 1``;
* with ``annotate``, :mod:`zhplm.data.annotate` labels every token with LERT's POS / NER /
  DEP labels (``shard-NNNNN.linguistic.npy``) and the word starts are the annotator's words;
* :mod:`zhplm.data.shards` writes the shards and ``meta.json`` (the format is described
  there) and reads them back (:class:`TokenDataset`, ``np.load(mmap_mode="r")``);
* :mod:`zhplm.data.output_dir` builds the directory under a temporary name beside
  ``out_dir`` and renames it into place at the end: a crash never leaves a half dataset.

Documents are read, encoded and written shard by shard, so memory stays bounded by one shard.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import numpy as np

from zhplm.data.annotate import TASKS, build_annotator
from zhplm.data.documents import (
    LAYOUTS,
    Layout,
    check_corpus_file,
    iter_documents,
    new_stats,
    split_sentences,
)
from zhplm.data.encoding import UNKNOWN_LABEL, EncodedChunk, encoded_chunks
from zhplm.data.output_dir import check_out_dir, remove_stale_siblings, staged_dir
from zhplm.data.segment import SEGMENTERS
from zhplm.data.shards import (
    FORMAT,
    Document,
    Sentence,
    ShardWriter,
    TokenDataset,
    annotation_meta,
    dataset_meta,
    write_meta,
)
from zhplm.errors import DataError, InputError
from zhplm.tokenization import Tokenizer

__all__ = [
    "FORMAT",
    "LAYOUTS",
    "Document",
    "Sentence",
    "TokenDataset",
    "iter_documents",
    "new_stats",
    "preprocess",
    "split_sentences",
]

logger = logging.getLogger(__name__)

Segmenter = Literal["jieba", "none"]
PathLike = str | os.PathLike[str]


def preprocess(
    inputs: PathLike | Sequence[PathLike],
    vocab: PathLike,
    out_dir: PathLike,
    *,
    workers: int = 1,
    strict: bool = False,
    segmenter: Segmenter = "jieba",
    layout: Layout = "auto",
    shard_tokens: int = 1 << 25,
    chunk_documents: int = 1000,
    min_sentence_tokens: int = 1,
    progress: bool = False,
    overwrite: bool = False,
    annotate: str | None = None,
) -> dict[str, Any]:
    """Tokenize corpus files into a dataset directory and return its ``meta.json`` content.

    Args:
        inputs: corpus files (``.txt`` or ``.jsonl``, see :func:`iter_documents`), in order.
        vocab: a ``vocab.txt`` or a tokenizer/model directory (:meth:`Tokenizer.from_pretrained`).
        out_dir: the dataset directory to create. It must not exist, be empty, or (with
            ``overwrite=True``) hold a dataset; it is replaced only once the new one is done.
        workers: processes encoding in parallel, this one included (1 = only this one).
        strict: raise :class:`DataError` at the first invalid line instead of skipping it.
        segmenter: ``"jieba"`` word starts (whole-word masking) or ``"none"`` (WordPiece words).
        layout: text file layout: ``"auto"``, ``"line"`` or ``"blank"`` (see iter_documents).
        shard_tokens: start a new shard, at a document boundary, once a shard holds this many.
        chunk_documents: documents read and encoded per task (at most; a task also ends at
            about 64k characters).
        min_sentence_tokens: drop (and count) sentences with fewer tokens.
        progress: show a progress bar on stderr.
        overwrite: replace an existing dataset in ``out_dir``.
        annotate: LERT's linguistic labels from an annotator (:mod:`zhplm.data.annotate`):
            ``"jieba"`` (jieba.posseg: POS and NER, no DEP) or ``"conll:PATH"`` (a CoNLL-U /
            CoNLL-X file that parsed the corpus: each sentence zhplm splits a corpus line
            into is looked up among the file's sentences, or pieces of them, by its text
            without whitespace; sentences not found are counted as unannotated, with one
            warning at the end). Each shard then also gets
            ``shard-NNNNN.linguistic.npy`` (uint8 ``[num_tokens, 3]``: the pos, ner, dep
            label ids of each token's first character, 255 = unknown), ``meta.json`` an
            ``"annotation"`` entry, and the word starts (whole-word masking) are the
            annotator's words, so that a masked whole word is one labelled word.

    With ``workers > 1`` the workers are forked where that is safe (Linux, no other thread,
    torch not imported) and else started with the "spawn" method, so a script that calls this
    must guard its entry point with ``if __name__ == "__main__":``.

    Returns:
        The meta dict (``format``, ``vocab_hash``, counts, ``shards``, ``sources``,
        ``skipped`` counters, ``seconds``), also written to ``out_dir/meta.json``.

    Raises:
        DataError: a missing or invalid input (under ``strict``), no tokens at all, or an
            ``out_dir`` that would be clobbered.
        InputError: an invalid argument value.
    """
    started = time.perf_counter()
    _check_arguments(workers, segmenter, layout, shard_tokens, chunk_documents,
                     min_sentence_tokens)
    if annotate is not None:
        build_annotator(annotate)  # an unknown spec or a missing file fails here, at once
    paths = [Path(inputs)] if isinstance(inputs, str | os.PathLike) else [Path(p) for p in inputs]
    if not paths:
        raise InputError("no corpus files given; pass one or more .txt or .jsonl files")
    for path in paths:
        check_corpus_file(path)
    tokenizer = Tokenizer.from_pretrained(vocab)
    dtype = np.dtype(np.uint16 if len(tokenizer) <= 65535 else np.int32)
    out = Path(out_dir)
    check_out_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)

    stats = new_stats()
    documents = (doc for path in paths
                 for doc in iter_documents(path, strict=strict, stats=stats, layout=layout))
    for stale in remove_stale_siblings(out):
        logger.info("removed %s, left behind by a killed run", stale)
    with staged_dir(out, overwrite) as (tmp, lock):
        chunks = encoded_chunks(documents, (str(vocab), segmenter, min_sentence_tokens,
                                            dtype.name, annotate), workers, chunk_documents,
                                inherited_fds=() if lock is None else (lock,))
        writer = ShardWriter(tmp, shard_tokens, dtype)
        labelled = _Labelled()
        characters = _write_chunks(chunks, writer, stats, progress, labelled)
        if not writer.shards:
            skipped = ", ".join(f"{k}={v}" for k, v in stats.items() if v) or "nothing"
            raise DataError(f"no tokens in {', '.join(map(str, paths))} (skipped: {skipped}); "
                            "pass non-empty UTF-8 corpus files")
        annotation = None
        if annotate is not None:
            annotation = annotation_meta(annotate, labelled.tokens, labelled.unannotated)
            _warn_unannotated(annotate, labelled.unannotated, labelled.sentences)
        meta = dataset_meta(writer.shards, tokenizer, vocab, segmenter, dtype, characters,
                            paths, stats, annotation)
        meta["seconds"] = round(time.perf_counter() - started, 3)
        write_meta(tmp, meta)
    return meta


def _check_arguments(workers: int, segmenter: str, layout: str, shard_tokens: int,
                     chunk_documents: int, min_sentence_tokens: int) -> None:
    checks = [
        (segmenter in SEGMENTERS, f"segmenter={segmenter!r}; use one of {', '.join(SEGMENTERS)}"),
        (layout in LAYOUTS, f"layout={layout!r}; use one of {', '.join(LAYOUTS)}"),
        (workers >= 1, f"workers={workers}; use 1 or more processes"),
        (shard_tokens >= 1, f"shard_tokens={shard_tokens}; use a positive number"),
        (chunk_documents >= 1, f"chunk_documents={chunk_documents}; use a positive number"),
        (min_sentence_tokens >= 1,
         f"min_sentence_tokens={min_sentence_tokens}; use 1 or more"),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(message)


class _Labelled:
    """Counts of an annotated run: tokens with a known label per task, sentences kept and
    sentences the annotator could not label."""

    def __init__(self) -> None:
        self.tokens = np.zeros(len(TASKS), dtype=np.int64)
        self.sentences = 0
        self.unannotated = 0

    def add(self, chunk: EncodedChunk) -> None:
        if chunk.linguistic is not None:
            self.tokens += (chunk.linguistic != UNKNOWN_LABEL).sum(axis=0)
            self.sentences += len(chunk.sentence_lengths)
            self.unannotated += chunk.unannotated_sentences


def _warn_unannotated(spec: str, unannotated: int, sentences: int) -> None:
    """One warning for the whole run when the annotator could not label some sentences."""
    if not unannotated:
        return
    if spec.startswith("conll:"):
        hint = ("parse the corpus itself, one CoNLL sentence per corpus line or per "
                "sentence: a sentence is found when the FORMs of a CoNLL sentence (or of a "
                "piece of one split at 。！？) join to its text without whitespace")
    else:
        hint = "jieba's words did not join back to those sentences"
    logger.warning("annotator %s could not label %d of %d sentences; their labels are unknown "
                   "(255) and their word starts come from the segmenter; %s", spec, unannotated,
                   sentences, hint)


def _write_chunks(chunks: Iterator[EncodedChunk], writer: ShardWriter, stats: dict[str, int],
                  progress: bool, labelled: _Labelled | None = None) -> int:
    """Write every chunk into shards; count skips into ``stats`` (and labels into
    ``labelled``); return the characters."""
    characters = 0
    first = next(chunks, None)  # starts the workers before tqdm starts its thread
    bar = _Progress(progress)
    with contextlib.closing(chunks), contextlib.closing(bar):  # stops the pool on errors
        for chunk in chain([first] if first is not None else [], chunks):
            writer.add(chunk)
            if labelled is not None:
                labelled.add(chunk)
            characters += chunk.characters
            stats["short_sentences"] += chunk.short_sentences
            stats["empty_documents"] += chunk.empty_documents
            bar.update(len(chunk.document_sizes), len(chunk.ids))
    writer.flush()
    return characters


class _Progress:
    """A tqdm bar of documents and tokens on stderr, or nothing."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        self.tokens = 0
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(unit=" docs", file=sys.stderr, dynamic_ncols=True)

    def update(self, documents: int, tokens: int) -> None:
        if self.bar is not None:
            self.tokens += tokens
            self.bar.update(documents)
            self.bar.set_postfix(tokens=self.tokens, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
