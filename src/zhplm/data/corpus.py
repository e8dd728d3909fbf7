"""Corpus files -> a memory-mapped token dataset (UER-py's ``preprocess.py``, faster and safer).

:func:`preprocess` wires the steps, each in its own module:

* :mod:`zhplm.data.documents` expands the inputs (files, directories, glob patterns) into
  corpus files and reads UTF-8 ``.txt`` / ``.jsonl`` files into documents of sentences
  (:func:`expand_inputs`, :func:`iter_documents`, :func:`split_sentences`);
* :mod:`zhplm.data.encoding` tokenizes every sentence without special tokens and marks the
  tokens that start a word (jieba words for whole-word masking, see
  :mod:`zhplm.data.segment`), chunk by chunk, in parallel with ``workers > 1``;
* with ``annotate``, :mod:`zhplm.data.annotate` labels every token with LERT's POS / NER /
  DEP labels (``shard-NNNNN.linguistic.npy``) and the word starts are the annotator's words;
* :mod:`zhplm.data.shards` writes the shards and ``meta.json`` (the format is described
  there) and reads them back (:class:`TokenDataset`, ``np.load(mmap_mode="r")``);
* :mod:`zhplm.data.output_dir` builds the directory under a temporary name beside
  ``out_dir`` and renames it into place at the end: a crash never leaves a half dataset.

Documents are read, encoded and written shard by shard, so memory stays bounded by one shard
(plus a few chunks per worker), whatever the size of the corpus.

Resuming. After each shard the temporary directory gets a ``progress.json`` (written
atomically): the run's fingerprint (the expanded input files with their sizes and
modification times, the vocab's hash and size, ``lowercase``, the segmenter, layout,
``shard_tokens``, ``chunk_documents``, ``min_sentence_tokens``, ``annotate`` (and a CoNLL
file's size and time), ``strict``, the id dtype), the finished shards, and where the next
shard starts: the index of the chunk in which the last shard was cut, how many of that chunk's
kept documents it already holds, and the encoding-side counters (characters, short
sentences, empty documents, label counts) of the chunks before it. A run killed after some
shards (SIGKILL, Ctrl-C) is continued by the next run with the same fingerprint into the same
``out_dir``: it keeps the listed shards as they are and deletes any other file there (a shard
cut off mid-write), reads and groups the documents up to that chunk without encoding them (so
the read-side ``skipped`` counters are counted again), encodes from that chunk on, leaves out
the documents already written and numbers its shards on from there. The dataset is the one an
uninterrupted run writes, byte for byte (``meta.json`` too, but for ``seconds``); the number
of ``workers`` may differ. A killed run's directory with another fingerprint is removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import numpy as np

from zhplm.data.annotate import TASKS, build_annotator
from zhplm.data.documents import (
    LAYOUTS,
    Layout,
    ReadBytes,
    expand_inputs,
    iter_documents,
    new_stats,
    split_sentences,
)
from zhplm.data.encoding import UNKNOWN_LABEL, EncodedChunk, encoded_chunks
from zhplm.data.output_dir import check_out_dir, staged_dir, write_text_atomically
from zhplm.data.segment import SEGMENTERS
from zhplm.data.shards import (
    FORMAT,
    Document,
    Sentence,
    ShardWriter,
    TokenDataset,
    annotation_meta,
    dataset_meta,
    vocab_fingerprint,
    write_meta,
)
from zhplm.errors import DataError, InputError
from zhplm.tokenization import Tokenizer

__all__ = [
    "FORMAT",
    "LAYOUTS",
    "PROGRESS_FILE",
    "Document",
    "Sentence",
    "TokenDataset",
    "expand_inputs",
    "iter_documents",
    "new_stats",
    "preprocess",
    "split_sentences",
]

logger = logging.getLogger(__name__)

Segmenter = Literal["jieba", "none"]
PathLike = str | os.PathLike[str]

PROGRESS_FILE = "progress.json"
"""The file in a run's temporary directory that lets a killed run be resumed."""
_PROGRESS_FORMAT = "zhplm-preprocess-progress-v1"


def preprocess(
    inputs: PathLike | Sequence[PathLike],
    vocab: PathLike,
    out_dir: PathLike,
    *,
    workers: int = 1,
    strict: bool = False,
    segmenter: Segmenter = "jieba",
    layout: Layout = "auto",
    shard_tokens: int = 1 << 23,
    chunk_documents: int = 1000,
    min_sentence_tokens: int = 1,
    progress: bool = False,
    overwrite: bool = False,
    annotate: str | None = None,
) -> dict[str, Any]:
    """Tokenize corpus files into a dataset directory and return its ``meta.json`` content.

    Args:
        inputs: corpus files (``.txt`` or ``.jsonl``, see :func:`iter_documents`),
            directories (their ``.txt`` / ``.jsonl`` files, recursively, sorted by path) and
            glob patterns (``data/*.txt``, ``corpus/**/*.txt``; sorted), in order (see
            :func:`expand_inputs`); ``meta["sources"]`` lists the files.
        vocab: a ``vocab.txt`` or a tokenizer/model directory (:meth:`Tokenizer.from_pretrained`).
        out_dir: the dataset directory to create. It must not exist, be empty, or (with
            ``overwrite=True``) hold a dataset; it is replaced only once the new one is done.
            A run into it that was killed with the same inputs and arguments is resumed from
            its last finished shard (see the module docstring).
        workers: processes encoding in parallel, this one included (1 = only this one).
        strict: raise :class:`DataError` at the first invalid line instead of skipping it.
        segmenter: ``"jieba"`` word starts (whole-word masking) or ``"none"`` (WordPiece words).
        layout: text file layout: ``"auto"``, ``"line"`` or ``"blank"`` (see iter_documents).
        shard_tokens: start a new shard, at a document boundary, once a shard holds this many
            (default 8M tokens: about 25 MB of Chinese text; memory holds one shard, and a
            killed run resumes from its last finished shard).
        chunk_documents: documents read and encoded per task (at most; a task also ends at
            about 64k characters).
        min_sentence_tokens: drop (and count) sentences with fewer tokens.
        progress: show a progress bar on stderr: bytes of the input files read, against
            their total size (throughput and time left), with documents and tokens written.
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
        DataError: a missing or invalid input (under ``strict``), a directory without corpus
            files or a pattern that matches none, no tokens at all, or an ``out_dir`` that
            would be clobbered.
        InputError: an invalid argument value.
    """
    started = time.perf_counter()
    _check_arguments(workers, segmenter, layout, shard_tokens, chunk_documents,
                     min_sentence_tokens)
    if annotate is not None:
        build_annotator(annotate)  # an unknown spec or a missing file fails here, at once
    paths = expand_inputs(inputs)
    tokenizer = Tokenizer.from_pretrained(vocab)
    dtype = np.dtype(np.uint16 if len(tokenizer) <= 65535 else np.int32)
    out = Path(out_dir)
    check_out_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(
        paths, vocab=vocab_fingerprint(vocab, tokenizer), vocab_size=len(tokenizer),
        lowercase=tokenizer.lowercase, segmenter=segmenter, layout=layout,
        shard_tokens=shard_tokens, chunk_documents=chunk_documents,
        min_sentence_tokens=min_sentence_tokens, annotate=annotate, strict=strict,
        dtype=dtype.name)

    stats = new_stats()
    read = ReadBytes()
    documents = (doc for path in paths for doc in iter_documents(
        path, strict=strict, stats=stats, layout=layout, read=read))
    with staged_dir(out, overwrite, lambda d: _read_progress(d, fingerprint) is not None) as st:
        start = _ResumePoint()
        if st.resumed:
            start = _resume(st.path, fingerprint)
        writer = ShardWriter(st.path, shard_tokens, dtype, shards=start.shards)
        chunks = encoded_chunks(documents, (str(vocab), segmenter, min_sentence_tokens,
                                            dtype.name, annotate), workers, chunk_documents,
                                inherited_fds=() if st.lock is None else (st.lock,),
                                start_chunk=start.chunk)
        bar = _ProgressBar(progress, sum(p.stat().st_size for p in paths), read)
        counters = _write_chunks(chunks, writer, start, bar,
                                 lambda point: _save_progress(st.path, fingerprint, point))
        stats["short_sentences"] += counters.short_sentences
        stats["empty_documents"] += counters.empty_documents
        if not writer.shards:
            skipped = ", ".join(f"{k}={v}" for k, v in stats.items() if v) or "nothing"
            raise DataError(f"no tokens in {', '.join(map(str, paths))} (skipped: {skipped}); "
                            "pass non-empty UTF-8 corpus files")
        annotation = None
        if annotate is not None:
            annotation = annotation_meta(annotate, counters.labelled_tokens,
                                         counters.unannotated_sentences)
            _warn_unannotated(annotate, counters.unannotated_sentences,
                              counters.labelled_sentences)
        meta = dataset_meta(writer.shards, tokenizer, vocab, segmenter, dtype,
                            counters.characters, paths, stats, annotation)
        meta["seconds"] = round(time.perf_counter() - started, 3)
        write_meta(st.path, meta)
        (st.path / PROGRESS_FILE).unlink(missing_ok=True)  # not part of the dataset
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


# --------------------------------------------------------------------------- resuming


@dataclass
class _Counters:
    """What the encoding side counts, summed over chunks (saved in ``progress.json``)."""

    characters: int = 0
    short_sentences: int = 0
    empty_documents: int = 0
    labelled_tokens: list[int] = field(default_factory=lambda: [0] * len(TASKS))
    labelled_sentences: int = 0  # kept sentences of an annotated run
    unannotated_sentences: int = 0

    def add(self, chunk: EncodedChunk) -> None:
        self.characters += chunk.characters
        self.short_sentences += chunk.short_sentences
        self.empty_documents += chunk.empty_documents
        if chunk.linguistic is not None:
            known = (chunk.linguistic != UNKNOWN_LABEL).sum(axis=0)
            self.labelled_tokens = [a + int(b) for a, b in zip(self.labelled_tokens, known,
                                                               strict=True)]
            self.labelled_sentences += len(chunk.sentence_lengths)
            self.unannotated_sentences += chunk.unannotated_sentences


@dataclass
class _ResumePoint:
    """Where a run stands after a shard: the shards written, the chunk in which the last one
    was cut, how many of that chunk's kept documents are written, and the counters of the
    chunks before it. The default is the start of a fresh run."""

    shards: list[dict[str, Any]] = field(default_factory=list)
    chunk: int = 0
    written: int = 0
    counters: _Counters = field(default_factory=_Counters)


def _fingerprint(paths: list[Path], **arguments: Any) -> dict[str, Any]:
    """What must not change for a run to continue another: the input files (absolute path,
    size, modification time) and every argument that changes the output."""
    def stat(path: Path) -> dict[str, Any]:
        info = path.stat()
        return {"path": str(path.absolute()), "size": info.st_size,
                "mtime_ns": info.st_mtime_ns}

    spec = arguments.get("annotate")
    if spec is not None and spec.startswith("conll:"):
        arguments["annotate_file"] = stat(Path(spec[len("conll:"):]))
    return {"format": FORMAT, "inputs": [stat(p) for p in paths], **arguments}


def _shard_files(shard: dict[str, Any], directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{shard['name']}.*.npy"))


def _read_progress(directory: Path, fingerprint: dict[str, Any]) -> _ResumePoint | None:
    """The resume point in ``directory``'s ``progress.json`` if it was written by a run with
    ``fingerprint`` and its shards are all there; else None."""
    try:
        record = json.loads((directory / PROGRESS_FILE).read_text(encoding="utf-8"))
        if record.get("format") != _PROGRESS_FORMAT:
            return None
        if record["fingerprint"] != fingerprint:
            logger.info("%s was left by a killed run with other inputs or arguments; it is "
                        "not resumed", directory)
            return None
        point = _ResumePoint(record["shards"], int(record["chunk"]), int(record["written"]),
                             _Counters(**record["counters"]))
        kinds = 5 if fingerprint.get("annotate") is not None else 4  # + linguistic
        if any(len(_shard_files(shard, directory)) != kinds for shard in point.shards):
            return None  # a listed shard is missing a file: start afresh
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # no progress.json (killed before its first shard) or not one of ours
    return point


def _resume(directory: Path, fingerprint: dict[str, Any]) -> _ResumePoint:
    """Prepare a killed run's ``directory`` to be continued: keep ``progress.json`` and the
    shards it lists, delete everything else (a shard cut off mid-write, a ``meta.json``)."""
    point = _read_progress(directory, fingerprint)
    if point is None:  # checked when the directory was taken over
        raise DataError(f"{directory}/{PROGRESS_FILE} changed under this run; run it again")
    keep = {PROGRESS_FILE} | {f.name for s in point.shards for f in _shard_files(s, directory)}
    for entry in directory.iterdir():
        if entry.name not in keep:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    logger.info("resuming the killed run in %s: %d finished shard(s) kept, writing on from "
                "shard-%05d", directory, len(point.shards), len(point.shards))
    return point


def _save_progress(directory: Path, fingerprint: dict[str, Any], point: _ResumePoint) -> None:
    record = {"format": _PROGRESS_FORMAT, "fingerprint": fingerprint, "shards": point.shards,
              "chunk": point.chunk, "written": point.written,
              "counters": asdict(point.counters)}
    write_text_atomically(directory / PROGRESS_FILE, json.dumps(record, indent=1) + "\n")


# --------------------------------------------------------------------------- writing


def _write_chunks(chunks: Iterator[EncodedChunk], writer: ShardWriter, start: _ResumePoint,
                  bar: _ProgressBar,
                  save: Callable[[_ResumePoint], None]) -> _Counters:
    """Write every chunk into shards, chunk number ``start.chunk`` first (less its first
    ``start.written`` kept documents), and return the counters; after each shard, ``save``
    the point a resumed run starts from."""
    counters = _Counters(**asdict(start.counters))
    index = start.chunk
    # kept documents of the chunks before chunk `index`
    before = sum(s["num_documents"] for s in writer.shards) - start.written

    def flushed() -> None:
        written = sum(s["num_documents"] for s in writer.shards) - before
        save(_ResumePoint(writer.shards, index, written, counters))

    writer.on_flush = flushed
    first = next(chunks, None)  # starts the workers before tqdm starts its thread
    bar.start()
    with contextlib.closing(chunks), contextlib.closing(bar):  # stops the pool on errors
        for chunk in chain([first] if first is not None else [], chunks):
            skip = start.written if index == start.chunk else 0
            part = chunk.without_documents(skip) if skip else chunk
            writer.add(part)
            counters.add(chunk)  # the whole chunk's: the saved ones are those before it
            before += len(chunk.document_sizes)
            index += 1
            bar.update(len(part.document_sizes), len(part.ids))
        writer.flush()
    return counters


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


class _ProgressBar:
    """A tqdm bar on stderr, or nothing: the bytes of the input files read (``read``) against
    their ``total`` size, so tqdm shows the throughput and the time left; documents and
    tokens written as its postfix."""

    def __init__(self, enabled: bool, total: int, read: ReadBytes) -> None:
        self.enabled, self.total, self.read = enabled, total, read
        self.bar: Any = None
        self.documents = self.tokens = 0

    def start(self) -> None:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="B", unit_scale=True, file=sys.stderr,
                            dynamic_ncols=True)

    def update(self, documents: int, tokens: int) -> None:
        self.documents += documents
        self.tokens += tokens
        if self.bar is not None:
            self.bar.update(self.read.total - self.bar.n)
            self.bar.set_postfix(docs=self.documents, tokens=self.tokens, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(self.read.total - self.bar.n)
            self.bar.close()
