"""Corpus files -> a memory-mapped token dataset (UER-py's ``preprocess.py``, faster and safer).

:func:`preprocess` reads UTF-8 ``.txt`` / ``.jsonl`` corpus files (:func:`iter_documents`),
splits documents into sentences (:func:`split_sentences`), tokenizes every sentence without
special tokens, marks the tokens that start a word (jieba words for whole-word masking, see
:mod:`zhplm.data.segment`) and writes a dataset directory::

    meta.json
    shard-00000.tokens.npy       1-D token ids (uint16 when the vocab fits, else int32)
    shard-00000.word_starts.npy  1-D uint8, 1 where a token starts a word
    shard-00000.sentences.npy    int64 [num_sentences + 1], cumulative token offsets
    shard-00000.documents.npy    int64 [num_documents + 1], cumulative sentence offsets

Documents are read and encoded in chunks, in parallel with ``workers > 1``, and written shard
by shard, so memory stays bounded by one shard. The directory is built under a temporary name
beside ``out_dir`` and renamed into place at the end: a crash never leaves a half dataset.
A run killed outright (SIGKILL, power loss) leaves that ``.OUT.tmp-PID-RANDOM`` directory
behind; the next run into the same ``out_dir`` removes it once its process is gone and nobody
holds its lock (see :func:`_remove_stale_siblings`).
:class:`TokenDataset` opens it again with ``np.load(mmap_mode="r")``.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import numpy as np

from zhplm.data.segment import SEGMENTERS, jieba_words, word_start_mask
from zhplm.errors import ConfigError, DataError, InputError
from zhplm.tokenization import Tokenizer, vocab_hash

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None  # type: ignore[assignment]

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

FORMAT = "zhplm-tokens-v1"
"""The ``format`` field of ``meta.json``."""
LAYOUTS = ("auto", "line", "blank")
"""Values of ``layout``: auto-detect, one document per line, blank-line separated documents."""
SKIP_KEYS = (
    "invalid_utf8",
    "empty_lines",
    "malformed_json",
    "empty_documents",
    "empty_files",
    "short_sentences",
)
"""Counters of ``meta["skipped"]``."""

Layout = Literal["auto", "line", "blank"]
Segmenter = Literal["jieba", "none"]
PathLike = str | os.PathLike[str]
Sentence = tuple[np.ndarray, np.ndarray]
"""A stored sentence: (token ids, word starts), both 1-D and of equal length."""
Document = list[Sentence]

_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_BOM = b"\xef\xbb\xbf"
_RERUN = "re-run `zhplm preprocess` to rebuild it"
_REENCODE = "re-encode the file as UTF-8 (e.g. `iconv -f GB18030 -t UTF-8`)"


def new_stats() -> dict[str, int]:
    """A zeroed ``skipped`` counter dict, as filled by :func:`iter_documents`."""
    return dict.fromkeys(SKIP_KEYS, 0)


# --------------------------------------------------------------------------- sentences

_CLOSERS = "”’\"'」』）)]】》〉"
# A run of terminators, then any closing quotes/brackets (kept with the sentence).
_TERMINATOR = re.compile(rf"[。！？!?….]+[{re.escape(_CLOSERS)}]*")
_CJK_STOPS = frozenset("。！？…")
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z.]*)$")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt vs etc e.g i.e cf al inc ltd co corp no fig dept "
    "jan feb mar apr jun jul aug sep sept oct nov dec u.s u.k a.m p.m".split()
)


def _is_cjk(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff"


def _ends_sentence(text: str, start: int, end: int) -> bool:
    """Whether the terminator run ``text[start:end]`` ends a sentence."""
    run = text[start:end]
    if any(ch in _CJK_STOPS for ch in run):
        return True  # 。！？… always end a sentence (closers already included)
    nxt = text[end] if end < len(text) else " "
    if nxt.isspace():
        if run[0] != "." or len(run.rstrip(_CLOSERS)) > 1:
            return True  # ! ? or an ellipsis "..."
        word = _WORD_BEFORE.search(text, 0, start)
        if word is None:
            return True
        word = word.group(1)
        return not (word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper()))
    return run[0] in "!?" and _is_cjk(nxt)  # 好!下次 -- ASCII !/? in Chinese text


def split_sentences(text: str) -> list[str]:
    """Split a paragraph into sentences (stripped, non-empty), for Chinese and English text.

    A sentence ends after 。！？ or an ellipsis (``……`` is one terminator), including any
    closing quotes or brackets that follow (”」』）...). ASCII ``. ! ?`` end a sentence when
    whitespace follows (``!``/``?`` also before a Chinese character); a period does not end
    one inside a number (``3.14``), after a common abbreviation (``Mr.``, ``e.g.``, ``etc.``)
    or after a single capital initial (``J. Smith``).
    """
    sentences: list[str] = []
    begin = 0
    for match in _TERMINATOR.finditer(text):
        if _ends_sentence(text, match.start(), match.end()):
            piece = text[begin : match.end()].strip()
            if piece:
                sentences.append(piece)
            begin = match.end()
    rest = text[begin:].strip()
    if rest:
        sentences.append(rest)
    return sentences


# --------------------------------------------------------------------------- reading files


def _check_file(path: Path) -> None:
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise DataError(f"corpus file {path} {what}; pass existing UTF-8 .txt or .jsonl files")


def _lines(path: Path, strict: bool, stats: dict[str, int]) -> Iterator[tuple[int, str]]:
    """(line number, text without the line break) of each validly encoded line of ``path``.

    A line that is not UTF-8 is counted in ``stats["invalid_utf8"]`` and skipped, or under
    ``strict`` raises :class:`DataError` with the line number and the file byte offset.
    """
    offset = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            start = offset
            offset += len(raw)
            if lineno == 1 and raw.startswith(_BOM):
                raw, start = raw[len(_BOM) :], start + len(_BOM)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                if strict:
                    raise DataError(
                        f"{path}: line {lineno}: invalid UTF-8 at byte offset "
                        f"{start + err.start} ({err.reason}); {_REENCODE}, or drop --strict "
                        "to skip and count such lines"
                    ) from err
                stats["invalid_utf8"] += 1
                continue
            yield lineno, text.rstrip("\r\n")


def _detect_layout(path: Path) -> str:
    """"blank" if an empty line separates two non-empty lines of ``path``, else "line"."""
    seen_text = seen_gap = False
    with open(path, "rb") as f:
        for raw in f:
            empty = not raw.decode("utf-8", errors="replace").strip()
            if not empty and seen_gap:
                return "blank"
            if empty:
                seen_gap = seen_text
            else:
                seen_text = True
    return "line"


def _line_documents(lines: Iterable[tuple[int, str]], stats: dict[str, int]) -> Iterator[list[str]]:
    for _, line in lines:
        sentences = split_sentences(line)
        if sentences:
            yield sentences
        else:
            stats["empty_lines"] += 1


def _blank_documents(
    lines: Iterable[tuple[int, str]], stats: dict[str, int]
) -> Iterator[list[str]]:
    document: list[str] = []
    for _, line in lines:
        sentence = line.strip()
        if sentence:
            document.append(sentence)
        elif document:  # a separator
            yield document
            document = []
        else:  # a leading or repeated blank line
            stats["empty_lines"] += 1
    if document:
        yield document


def _jsonl_documents(
    path: Path, lines: Iterable[tuple[int, str]], strict: bool, stats: dict[str, int]
) -> Iterator[list[str]]:
    for lineno, line in lines:
        if not line.strip():
            stats["empty_lines"] += 1
            continue
        try:
            record = json.loads(line)
            problem = None
        except ValueError as err:
            record, problem = None, f"invalid JSON ({err})"
        if problem is None and not (isinstance(record, dict) and isinstance(record.get("text"),
                                                                             str)):
            problem = 'not a JSON object with a string "text" field'
        if problem is not None:
            if strict:
                raise DataError(
                    f"{path}:{lineno}: {problem}; write one object per line like "
                    '{"text": "..."}, or drop --strict to skip and count such lines'
                )
            stats["malformed_json"] += 1
            continue
        sentences = [s for paragraph in record["text"].splitlines()
                     for s in split_sentences(paragraph)]
        if sentences:
            yield sentences
        else:
            stats["empty_documents"] += 1


def iter_documents(
    path: PathLike,
    strict: bool = False,
    stats: dict[str, int] | None = None,
    layout: Layout = "auto",
) -> Iterator[list[str]]:
    """Yield the documents of a corpus file, each a list of sentences (non-empty strings).

    * ``.jsonl`` / ``.ndjson``: one JSON object per line; its ``"text"`` is a document, split
      into sentences by line and :func:`split_sentences`.
    * any other file is UTF-8 text: with ``layout="line"`` each line is a document split by
      :func:`split_sentences`; with ``"blank"`` documents are separated by empty lines and each
      line is a sentence; ``"auto"`` picks "blank" if an empty line separates two non-empty
      lines anywhere in the file, else "line".

    Bad input is skipped and counted in ``stats`` (see :func:`new_stats`): lines that are not
    UTF-8, empty lines, malformed JSON lines, documents without text, files without any
    document. With ``strict=True`` an invalid line (UTF-8 or JSON) raises :class:`DataError`
    naming the file, the line and, for UTF-8, the byte offset. A missing file raises
    :class:`DataError` when the iterator starts.
    """
    if layout not in LAYOUTS:
        raise InputError(f"layout={layout!r}; use one of {', '.join(LAYOUTS)}")
    path = Path(path)
    stats = new_stats() if stats is None else stats
    for key in SKIP_KEYS:
        stats.setdefault(key, 0)
    _check_file(path)
    lines = _lines(path, strict, stats)
    if path.suffix.lower() in _JSONL_SUFFIXES:
        documents = _jsonl_documents(path, lines, strict, stats)
    else:
        if layout == "auto":
            layout = _detect_layout(path)  # type: ignore[assignment]
        reader = _blank_documents if layout == "blank" else _line_documents
        documents = reader(lines, stats)
    count = 0
    for document in documents:
        count += 1
        yield document
    if count == 0:
        stats["empty_files"] += 1


# --------------------------------------------------------------------------- encoding


@dataclass
class _Chunk:
    """The encoded form of a chunk of documents."""

    ids: np.ndarray  # token ids, all sentences concatenated
    word_starts: np.ndarray  # uint8, same length
    sentence_lengths: np.ndarray  # int64, tokens per kept sentence
    document_sizes: np.ndarray  # int64, kept sentences per kept document
    characters: int
    short_sentences: int
    empty_documents: int


_HAN_FIRST, _HAN_LAST = 0x4E00, 0x9FFF
_BMP = 0x10000


def _single_token_table(backend: Any) -> np.ndarray | None:
    """For a BERT WordPiece pipeline: a table over the Basic Multilingual Plane giving the
    token id of each character that is always a token of its own, -1 for the others; None
    for other pipelines (then every character goes through the tokenizer).

    Those characters are the CJK Unified Ideographs (U+4E00..U+9FFF; the normalizer puts
    spaces around them; the token is the character if the vocab has it, else [UNK]) and the
    vocab's non-ASCII punctuation (``，。、“”（）《》`` ...; the pre-tokenizer splits there),
    each only if the normalizer leaves it unchanged and no added token contains it. The table
    is checked against the tokenizer's own normalizer and pre-tokenizer.
    """
    import unicodedata

    from tokenizers import models, normalizers, pre_tokenizers

    normalizer, pre_tokenizer, model = backend.normalizer, backend.pre_tokenizer, backend.model
    if not (isinstance(normalizer, normalizers.BertNormalizer) and normalizer.handle_chinese_chars
            and isinstance(pre_tokenizer, pre_tokenizers.BertPreTokenizer)
            and isinstance(model, models.WordPiece)):
        return None
    vocab = backend.get_vocab(with_added_tokens=False)
    unk = vocab.get(model.unk_token)
    if unk is None:
        return None
    added = list(backend.get_added_tokens_decoder().values())
    if any(t.lstrip or t.rstrip or t.single_word or t.normalized
           or any(c.isspace() for c in t.content) for t in added):
        return None  # matched differently around characters replaced by spaces
    in_added = {c for token in added for c in token.content}
    table = np.full(_BMP, -1, dtype=np.int64)
    table[_HAN_FIRST : _HAN_LAST + 1] = unk  # [UNK] unless the vocab has the character
    han = "".join(map(chr, range(_HAN_FIRST, _HAN_LAST + 1)))
    if normalizer.normalize_str(han).split() != list(han):
        return None  # not the BERT normalizer this relies on
    # non-ASCII punctuation of the vocab (others go through the tokenizer: also right)
    punctuation = [t for t in vocab if len(t) == 1 and 0x80 <= ord(t) < _BMP
                   and unicodedata.category(t).startswith("P")]

    def split_off(chars: list[str]) -> bool:
        """Normalized as is, and a word of its own between two letters."""
        probe = "a" + "a".join(chars) + "a"
        words = [w for w, _ in pre_tokenizer.pre_tokenize_str(probe)]
        return normalizer.normalize_str(probe) == probe and words == [
            "a", *[w for c in chars for w in (c, "a")]]

    if not split_off(punctuation):
        punctuation = [c for c in punctuation if split_off([c])]
    table[[ord(c) for c in punctuation]] = unk
    for c in in_added:
        if ord(c) < _BMP:
            table[ord(c)] = -1
    for token, i in vocab.items():
        if len(token) == 1 and ord(token) < _BMP and table[ord(token)] >= 0:
            table[ord(token)] = i
    return table


class _ChunkEncoder:
    """Tokenizes documents and marks word starts; one per process.

    Vectorized over the chunk, and the output is the same as encoding each sentence alone:

    * the sentences are joined by newlines (a word boundary for WordPiece and for jieba);
    * with a BERT tokenizer, the characters that are always a token of their own (Chinese
      characters, Chinese punctuation: ~90% of Chinese text, see
      :func:`_single_token_table`) are looked up in a table; each run of them becomes one
      space in what goes through ``encode_batch``, which then has ~10x less to do and yields
      the same other tokens (a space separates words just as they did);
    * continuation pieces (``##``) are looked up by token id;
    * the jieba word starts come from one segmentation of the joined text.
    """

    def __init__(self, vocab: str, segmenter: str, min_sentence_tokens: int, dtype: str) -> None:
        self.tokenizer = Tokenizer.from_pretrained(vocab)
        self.segmenter = segmenter
        self.min_tokens = min_sentence_tokens
        self.dtype = np.dtype(dtype)
        backend = self.tokenizer.backend
        pieces = backend.get_vocab(with_added_tokens=True)
        self.continuation = np.zeros(max(pieces.values(), default=0) + 1, dtype=bool)
        self.continuation[[i for t, i in pieces.items() if t.startswith("##")]] = True
        self.single_tokens = _single_token_table(backend)

    def load(self) -> None:
        """Load the segmenter's dictionary now (else at the first chunk)."""
        if self.segmenter == "jieba":
            jieba_words("")

    def _tokenize(self, flat: list[str], bases: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and their character offsets in ``"\\n".join(flat)`` (``bases`` are the
        offsets of the sentences there), in order."""
        backend = self.tokenizer.backend
        single = None
        if self.single_tokens is not None:
            text = "\n".join(flat)
            codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
            looked_up = self.single_tokens[np.minimum(codes, _BMP - 1)]
            is_single = (looked_up >= 0) & (codes < _BMP)
            single = np.flatnonzero(is_single)
            if len(single):
                # each run of such characters -> one space; the rest stays
                keep = ~is_single
                keep[0] = True
                keep[1:] |= ~is_single[:-1]
                rest = codes.copy()
                rest[is_single] = 32
                kept = np.flatnonzero(keep)  # position in the join of each kept character
                text = rest[kept].tobytes().decode("utf-32-le", "surrogatepass")
                starts = np.searchsorted(kept, bases)  # every sentence's 1st character is kept
                ends = np.append(starts[1:] - 1, len(text))
                flat = [text[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
                bases = starts
        encodings = backend.encode_batch(flat, add_special_tokens=False)
        counts = np.fromiter(map(len, encodings), dtype=np.int64, count=len(flat))
        total = int(counts.sum())
        ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int64,
                          count=total)
        begins = np.fromiter(chain.from_iterable(chain.from_iterable(
            e.offsets for e in encodings)), dtype=np.int64, count=2 * total)[::2]
        begins += np.repeat(bases, counts)
        if single is not None and len(single):
            begins = np.concatenate([single, kept[begins]])
            ids = np.concatenate([looked_up[single], ids])
            order = np.argsort(begins, kind="stable")
            begins, ids = begins[order], ids[order]
        return ids, begins

    def __call__(self, documents: list[list[str]]) -> _Chunk:
        flat = [sentence for document in documents for sentence in document]
        chars = np.fromiter(map(len, flat), dtype=np.int64, count=len(flat))
        bases = np.cumsum(chars + 1) - (chars + 1)  # where each sentence starts in the join
        ids, begins = self._tokenize(flat, bases)
        sentence_of = np.searchsorted(bases, begins, side="right") - 1
        lengths = np.bincount(sentence_of, minlength=len(flat)).astype(np.int64)
        starts = ~self.continuation[ids]
        if self.segmenter == "jieba" and len(ids):
            starts &= word_start_mask("\n".join(flat))[begins]
        firsts = np.cumsum(lengths) - lengths
        starts[firsts[lengths > 0]] = True  # a sentence starts a word
        keep = lengths >= self.min_tokens
        kept_tokens = np.repeat(keep, lengths)
        document_of = np.repeat(np.arange(len(documents)), [len(d) for d in documents])
        kept_per_document = np.bincount(document_of[keep], minlength=len(documents))
        return _Chunk(
            ids=ids[kept_tokens].astype(self.dtype),
            word_starts=starts[kept_tokens].astype(np.uint8),
            sentence_lengths=lengths[keep],
            document_sizes=kept_per_document[kept_per_document > 0].astype(np.int64),
            characters=int(chars[keep].sum()),
            short_sentences=int((~keep).sum()),
            empty_documents=int((kept_per_document == 0).sum()),
        )


_WORKER_ENCODER: _ChunkEncoder | None = None


def _init_worker(vocab: str, segmenter: str, min_sentence_tokens: int, dtype: str) -> None:
    global _WORKER_ENCODER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    _WORKER_ENCODER = _ChunkEncoder(vocab, segmenter, min_sentence_tokens, dtype)


def _adopt_worker(encoder: _ChunkEncoder, inherited_fds: tuple[int, ...]) -> None:
    """Initializer of a forked worker: it uses the encoder (tokenizer, tables, dictionary)
    it inherited, and closes the descriptors that are the parent's business (its lock)."""
    global _WORKER_ENCODER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    for fd in inherited_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    _WORKER_ENCODER = encoder


_START_METHOD: str | None = None
"""Force "fork" or "spawn" for the workers (tests); None chooses with :func:`_start_method`."""


def _start_method() -> str:
    """The start method of the workers: "fork" where it is safe (Linux, no other Python
    thread, torch not loaded: its thread pools and CUDA state do not survive a fork); the
    workers then start at once with this process's tokenizer and dictionary. Else "spawn":
    each worker starts a fresh interpreter and loads them itself (~0.5 s of CPU)."""
    import threading

    if (sys.platform.startswith("linux") and threading.active_count() == 1
            and "torch" not in sys.modules):
        return "fork"
    return "spawn"


def _encode_in_worker(documents: list[list[str]]) -> _Chunk:
    assert _WORKER_ENCODER is not None, "worker not initialised"
    return _WORKER_ENCODER(documents)


@contextlib.contextmanager
def _serial_tokenizers() -> Iterator[None]:
    """Keep the Rust tokenizer to one thread here (the other cores run the workers)."""
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


def _ordered_map(pool: Any, items: Iterable[Any], window: int,
                 local: _ChunkEncoder | None = None) -> Iterator[_Chunk]:
    """``pool.imap`` that keeps at most ``window`` chunks in the pool.

    ``Pool.imap`` feeds its whole input to the workers as fast as it can be read, which would
    hold the entire corpus in memory; this keeps reading in step with writing. With ``local``
    (an encoder), this process encodes a chunk itself whenever ``window`` chunks already wait
    in the pool, instead of waiting for them: no core idles, and one process fewer starts.
    """
    pending: deque[Any] = deque()  # AsyncResults and chunks encoded here, in input order
    in_pool = 0
    most = window if local is None else 4 * window + 4  # chunks held at most
    for item in items:
        if local is not None and in_pool >= window:
            with _serial_tokenizers():
                pending.append(local(item))
        else:
            pending.append(pool.apply_async(_encode_in_worker, (item,)))
            in_pool += 1
        while pending and (len(pending) >= most or isinstance(pending[0], _Chunk)
                           or pending[0].ready()):
            head = pending.popleft()
            if not isinstance(head, _Chunk):
                in_pool -= 1
                head = head.get()
            yield head
    while pending:
        head = pending.popleft()
        yield head if isinstance(head, _Chunk) else head.get()


_CHUNK_CHARACTERS = 1 << 16
"""A chunk also ends once it holds this many characters: small enough tasks keep the workers
evenly busy to the end of the corpus (the output does not depend on chunk boundaries)."""


def _chunks(documents: Iterable[list[str]], size: int,
            characters: int = _CHUNK_CHARACTERS) -> Iterator[list[list[str]]]:
    """Group documents into chunks of at most ``size`` documents / about ``characters``."""
    chunk: list[list[str]] = []
    held = 0
    for document in documents:
        chunk.append(document)
        held += sum(map(len, document))
        if len(chunk) >= size or held >= characters:
            yield chunk
            chunk = []
            held = 0
    if chunk:
        yield chunk


# --------------------------------------------------------------------------- writing shards


class _ShardWriter:
    """Accumulates encoded documents and writes a shard once it holds ``shard_tokens``."""

    def __init__(self, directory: Path, shard_tokens: int, dtype: np.dtype) -> None:
        self.directory = directory
        self.shard_tokens = shard_tokens
        self.dtype = dtype
        self.shards: list[dict[str, Any]] = []
        self._reset()

    def _reset(self) -> None:
        self._ids: list[np.ndarray] = []
        self._starts: list[np.ndarray] = []
        self._lengths: list[np.ndarray] = []
        self._sizes: list[np.ndarray] = []
        self._tokens = 0

    def add(self, chunk: _Chunk) -> None:
        """Append a chunk, cutting shards at document boundaries."""
        sizes = chunk.document_sizes
        sentence_ends = np.cumsum(sizes)  # per document: end sentence index
        token_ends = np.concatenate([[0], np.cumsum(chunk.sentence_lengths)])[sentence_ends]
        doc = 0
        while doc < len(sizes):
            before = int(token_ends[doc - 1]) if doc else 0
            # take documents until the shard reaches shard_tokens (at least one document)
            need = before + self.shard_tokens - self._tokens
            stop = min(int(np.searchsorted(token_ends, need, side="left")) + 1, len(sizes))
            stop = max(stop, doc + 1)
            first_sentence = int(sentence_ends[doc - 1]) if doc else 0
            last_sentence = int(sentence_ends[stop - 1])
            end = int(token_ends[stop - 1])
            self._ids.append(chunk.ids[before:end])
            self._starts.append(chunk.word_starts[before:end])
            self._lengths.append(chunk.sentence_lengths[first_sentence:last_sentence])
            self._sizes.append(sizes[doc:stop])
            self._tokens += end - before
            if self._tokens >= self.shard_tokens:
                self.flush()
            doc = stop

    def flush(self) -> None:
        """Write the accumulated documents as the next shard (nothing if empty)."""
        if not self._sizes or self._tokens == 0:
            return
        name = f"shard-{len(self.shards):05d}"
        ids = np.concatenate(self._ids).astype(self.dtype, copy=False)
        starts = np.concatenate(self._starts)
        lengths = np.concatenate(self._lengths)
        sizes = np.concatenate(self._sizes)
        sentences = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=sentences[1:])
        documents = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=documents[1:])
        for kind, array in (("tokens", ids), ("word_starts", starts),
                            ("sentences", sentences), ("documents", documents)):
            np.save(self.directory / f"{name}.{kind}.npy", array)
        self.shards.append({"name": name, "num_tokens": len(ids),
                            "num_sentences": len(lengths), "num_documents": len(sizes)})
        self._reset()


# --------------------------------------------------------------------------- preprocess


def _vocab_fingerprint(vocab: PathLike, tokenizer: Tokenizer | None = None) -> str:
    """:func:`vocab_hash` of the vocab file; for a ``tokenizer.json``-only directory, the hash
    of the ``vocab.txt`` that :meth:`Tokenizer.save_pretrained` would write."""
    path = Path(vocab)
    if path.is_file() or (path / "vocab.txt").is_file():
        return vocab_hash(path)
    tokenizer = tokenizer or Tokenizer.from_pretrained(path)
    ids = tokenizer.backend.get_vocab(with_added_tokens=False)
    text = "".join(t + "\n" for t in sorted(ids, key=ids.__getitem__))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _is_dataset(path: Path) -> bool:
    return (path / "meta.json").is_file()


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"out_dir {out} exists and is not a directory; choose another out_dir")
    if _is_dataset(out):
        if not overwrite:
            raise DataError(
                f"out_dir {out} already holds a dataset; pass overwrite=True "
                "(`zhplm preprocess --overwrite`) to replace it, or choose another out_dir"
            )
    elif any(out.iterdir()):
        raise DataError(
            f"out_dir {out} exists, is not empty and is not a zhplm dataset; refusing to "
            "replace it: choose another out_dir or empty it"
        )


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished dataset ``tmp`` to ``out``, replacing an old dataset or empty dir."""
    old: Path | None = None
    lock: int | None = None
    try:
        if out.exists():
            if _is_dataset(out):
                old = _sibling_dir(out, "old")
                lock = _lock_dir(old)
                os.replace(out, old / out.name)
            else:
                out.rmdir()  # empty (checked before)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        _unlock(lock)


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


def _encoded_chunks(
    documents: Iterable[list[str]], vocab: str, encoder_args: tuple, workers: int,
    chunk_documents: int, inherited_fds: tuple[int, ...] = (),
) -> Iterator[_Chunk]:
    """Encode ``documents`` chunk by chunk, in order, in-process or with a process pool
    (``inherited_fds``: this process's descriptors a forked worker must close)."""
    chunks = _chunks(documents, chunk_documents)
    if workers == 1:
        encoder = _ChunkEncoder(vocab, *encoder_args)
        yield from map(encoder, chunks)
        return
    # workers - 1 processes and this one, which encodes whenever the others are all busy
    method = _START_METHOD or _start_method()
    if method == "fork":
        local = _ChunkEncoder(vocab, *encoder_args)
        local.load()  # the workers inherit it all, loaded
        initializer, initargs = _adopt_worker, (local, inherited_fds)
    else:
        initializer, initargs = _init_worker, (vocab, *encoder_args)
    pool = multiprocessing.get_context(method).Pool(workers - 1, initializer, initargs)
    try:
        if method != "fork":
            local = _ChunkEncoder(vocab, *encoder_args)  # while the workers start
        yield from _ordered_map(pool, chunks, window=2 * (workers - 1), local=local)
        pool.close()
        pool.join()
    finally:
        pool.terminate()


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


_SIBLING = "\\.{name}\\.(tmp|old)-([0-9]+)-[0-9a-f]{{8}}"
"""The names :func:`_sibling_dir` gives (``.OUT.tmp-PID-RANDOM``), as a regex template."""


def _lock_dir(path: Path) -> int | None:
    """Hold an exclusive ``flock`` on directory ``path`` until :func:`_unlock`; the kernel
    drops it when the process dies, even by SIGKILL. None where locks are not supported."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else (or cannot tell): leave it
    return True


def _remove_stale_siblings(out: Path) -> list[Path]:
    """Remove the temporary directories beside ``out`` that killed runs left behind.

    A directory is removed only when all of these hold: its name is one :func:`_sibling_dir`
    makes for ``out`` (``.OUT.tmp-PID-RANDOM`` / ``.OUT.old-PID-RANDOM``), it is a real
    directory, the process PID is gone, and nobody holds its lock (a live run holds one on its
    directory from creation to the end, which also covers runs in other PID namespaces). An
    ``.old-`` directory holds the previous dataset while a new one is moved into place; it is
    removed only once ``out`` holds a dataset again. ``out`` itself is never touched.
    """
    if os.name != "posix" or not out.parent.is_dir():
        return []
    pattern = re.compile(_SIBLING.format(name=re.escape(out.name)))
    removed = []
    for path in out.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if match is None or path.is_symlink() or not path.is_dir():
            continue
        if _pid_alive(int(match[2])) or (match[1] == "old" and not _is_dataset(out)):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue  # gone meanwhile (its run finished) or not ours to open
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live run holds it
                except OSError:
                    pass  # no locks on this file system: the PID decides
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
        finally:
            os.close(fd)
    return removed


def _sibling_dir(out: Path, tag: str) -> Path:
    """Create a new hidden directory beside ``out`` (mode from the umask, unlike mkdtemp)."""
    for _ in range(100):
        path = out.with_name(f".{out.name}.{tag}-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise DataError(f"cannot create a temporary directory beside {out}; check the directory")


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
    paths = [Path(inputs)] if isinstance(inputs, str | os.PathLike) else [Path(p) for p in inputs]
    if not paths:
        raise InputError("no corpus files given; pass one or more .txt or .jsonl files")
    for path in paths:
        _check_file(path)
    tokenizer = Tokenizer.from_pretrained(vocab)
    dtype = np.dtype(np.uint16 if len(tokenizer) <= 65535 else np.int32)
    out = Path(out_dir)
    _check_out_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)

    stats = new_stats()
    documents = (doc for path in paths
                 for doc in iter_documents(path, strict=strict, stats=stats, layout=layout))
    encoder_args = (segmenter, min_sentence_tokens, dtype.name)
    for stale in _remove_stale_siblings(out):
        logger.info("removed %s, left behind by a killed run", stale)
    tmp = _sibling_dir(out, "tmp")
    lock = _lock_dir(tmp)
    chunks = _encoded_chunks(documents, str(vocab), encoder_args, workers, chunk_documents,
                             inherited_fds=() if lock is None else (lock,))
    try:
        writer = _ShardWriter(tmp, shard_tokens, dtype)
        characters = _write_chunks(chunks, writer, stats, progress)
        if not writer.shards:
            skipped = ", ".join(f"{k}={v}" for k, v in stats.items() if v) or "nothing"
            raise DataError(f"no tokens in {', '.join(map(str, paths))} (skipped: {skipped}); "
                            "pass non-empty UTF-8 corpus files")
        meta = _meta(writer.shards, tokenizer, vocab, segmenter, dtype, characters, paths, stats)
        meta["seconds"] = round(time.perf_counter() - started, 3)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
        _check_out_dir(out, overwrite)  # it may have appeared meanwhile
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _unlock(lock)
    return meta


def _write_chunks(chunks: Iterator[_Chunk], writer: _ShardWriter, stats: dict[str, int],
                  progress: bool) -> int:
    """Write every chunk into shards; count skips into ``stats``; return the characters."""
    characters = 0
    first = next(chunks, None)  # starts the workers before tqdm starts its thread
    bar = _Progress(progress)
    with contextlib.closing(chunks), contextlib.closing(bar):  # stops the pool on errors
        for chunk in chain([first] if first is not None else [], chunks):
            writer.add(chunk)
            characters += chunk.characters
            stats["short_sentences"] += chunk.short_sentences
            stats["empty_documents"] += chunk.empty_documents
            bar.update(len(chunk.document_sizes), len(chunk.ids))
    writer.flush()
    return characters


def _meta(shards: list[dict[str, Any]], tokenizer: Tokenizer, vocab: PathLike, segmenter: str,
          dtype: np.dtype, characters: int, paths: list[Path],
          stats: dict[str, int]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "vocab_hash": _vocab_fingerprint(vocab, tokenizer),
        "vocab_size": tokenizer.vocab_size,
        "lowercase": tokenizer.lowercase,
        "segmenter": segmenter,
        "dtype": dtype.name,
        "num_tokens": sum(s["num_tokens"] for s in shards),
        "num_sentences": sum(s["num_sentences"] for s in shards),
        "num_documents": sum(s["num_documents"] for s in shards),
        "num_characters": characters,
        "shards": shards,
        "sources": [str(p) for p in paths],
        "skipped": dict(stats),
        "seconds": 0.0,
    }


# --------------------------------------------------------------------------- reading datasets

_META_KEYS = {"format": str, "vocab_hash": str, "vocab_size": int, "dtype": str,
              "num_tokens": int, "num_documents": int, "shards": list}
_SHARD_KEYS = ("name", "num_tokens", "num_sentences", "num_documents")


@dataclass
class _Shard:
    tokens: np.ndarray
    word_starts: np.ndarray
    sentences: np.ndarray
    documents: np.ndarray


class TokenDataset:
    """A dataset directory written by :func:`preprocess`, memory-mapped.

    ``document(i)`` returns document ``i`` (numbered across shards) as one
    ``(token ids, word starts)`` pair of 1-D arrays per sentence; the arrays are read-only
    views of the memory-mapped shards (ids in the dataset's ``dtype``).
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self._meta = self._read_meta()
        self._shards = [self._open_shard(s) for s in self._meta["shards"]]
        self._first_docs = [0]  # global index of each shard's first document
        for shard in self._shards:
            self._first_docs.append(self._first_docs[-1] + len(shard.documents) - 1)
        if self._first_docs[-1] != self._meta["num_documents"]:
            self._corrupt(f"shards hold {self._first_docs[-1]} documents, meta.json says "
                          f"{self._meta['num_documents']}")

    # ----------------------------------------------------------------- opening
    def _corrupt(self, problem: str) -> None:
        raise DataError(f"dataset {self.path}: {problem}; {_RERUN}")

    def _read_meta(self) -> dict[str, Any]:
        meta_file = self.path / "meta.json"
        if not meta_file.is_file():
            what = "has no meta.json" if self.path.is_dir() else "does not exist"
            raise DataError(f"dataset {self.path} {what}; create it with `zhplm preprocess`")
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DataError(f"{meta_file} is corrupt ({err}); {_RERUN}") from err
        if not isinstance(meta, dict):
            raise DataError(f"{meta_file} is corrupt (not a JSON object); {_RERUN}")
        if meta.get("format") != FORMAT:
            raise DataError(f"{meta_file}: format {meta.get('format')!r} is not {FORMAT!r}; "
                            f"{_RERUN} with this version of zhplm")
        for key, kind in _META_KEYS.items():
            if not isinstance(meta.get(key), kind):
                raise DataError(f"{meta_file} is corrupt ({key!r} missing or not "
                                f"{kind.__name__}); {_RERUN}")
        for shard in meta["shards"]:
            if not isinstance(shard, dict) or any(k not in shard for k in _SHARD_KEYS):
                raise DataError(f"{meta_file} is corrupt (bad shard entry {shard!r}); {_RERUN}")
        return meta

    def _load(self, name: str, kind: str) -> np.ndarray:
        file = self.path / f"{name}.{kind}.npy"
        try:
            array = np.load(file, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read {file} ({err}); {_RERUN}") from err
        if array.ndim != 1:
            self._corrupt(f"{file.name} has shape {array.shape}, expected 1-D")
        return np.asarray(array)  # a plain ndarray view: faster slicing than np.memmap

    def _open_shard(self, info: dict[str, Any]) -> _Shard:
        name = info["name"]
        shard = _Shard(*(self._load(name, kind)
                         for kind in ("tokens", "word_starts", "sentences", "documents")))
        n_tok, n_sent, n_doc = info["num_tokens"], info["num_sentences"], info["num_documents"]
        expected = [
            (len(shard.tokens), n_tok, "tokens"),
            (len(shard.word_starts), n_tok, "word starts"),
            (len(shard.sentences), n_sent + 1, "sentence offsets"),
            (len(shard.documents), n_doc + 1, "document offsets"),
            (int(shard.sentences[-1]) if len(shard.sentences) else -1, n_tok, "last offset"),
            (int(shard.documents[-1]) if len(shard.documents) else -1, n_sent,
             "last sentence"),
        ]
        for got, want, what in expected:
            if got != want:
                self._corrupt(f"{name}: {what} {got}, meta.json says {want}")
        if shard.tokens.dtype.name != self._meta["dtype"]:
            self._corrupt(f"{name}: token dtype {shard.tokens.dtype}, meta.json says "
                          f"{self._meta['dtype']}")
        return shard

    # ----------------------------------------------------------------- properties
    @property
    def meta(self) -> dict[str, Any]:
        """The content of ``meta.json``."""
        return self._meta

    @property
    def num_documents(self) -> int:
        """Number of documents across all shards."""
        return self._first_docs[-1]

    @property
    def num_sentences(self) -> int:
        """Number of sentences across all shards."""
        return sum(len(s.sentences) - 1 for s in self._shards)

    @property
    def num_tokens(self) -> int:
        """Number of tokens across all shards."""
        return sum(len(s.tokens) for s in self._shards)

    @property
    def vocab_hash(self) -> str:
        """:func:`zhplm.tokenization.vocab_hash` of the vocab the dataset was built with."""
        return self._meta["vocab_hash"]

    def __len__(self) -> int:
        return self.num_documents

    def __repr__(self) -> str:
        return (f"TokenDataset({str(self.path)!r}, documents={self.num_documents}, "
                f"tokens={self.num_tokens}, shards={len(self._shards)})")

    # ----------------------------------------------------------------- access
    def document(self, index: int) -> Document:
        """Document ``index`` (negative counts from the end): one (ids, word starts) pair per
        sentence."""
        index = int(index)
        total = self.num_documents
        if index < 0:
            index += total
        if not 0 <= index < total:
            raise IndexError(f"document {index} out of range for {total} documents")
        k = bisect.bisect_right(self._first_docs, index) - 1
        shard = self._shards[k]
        local = index - self._first_docs[k]
        first, last = shard.documents[local : local + 2].tolist()
        bounds = shard.sentences[first : last + 1].tolist()
        tokens, starts = shard.tokens, shard.word_starts
        return [(tokens[a:b], starts[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def documents(self) -> Iterator[Document]:
        """Iterate over all documents in order."""
        for index in range(self.num_documents):
            yield self.document(index)

    def check_vocab(self, vocab: PathLike, source: str | None = None) -> None:
        """Raise :class:`ConfigError` unless the dataset was built with ``vocab``.

        ``vocab`` is a ``vocab.txt``, a model/tokenizer directory, or a vocab hash (16 hex
        characters, as :func:`zhplm.tokenization.vocab_hash` returns). ``source`` names the
        dataset in the message (default: its path).
        """
        name = source or str(self.path)
        path = Path(vocab)
        if path.exists():
            expected = _vocab_fingerprint(path)
            target = str(path / "vocab.txt") if path.is_dir() else str(path)
        elif re.fullmatch(r"[0-9a-f]{16}", str(vocab)):
            expected, target = str(vocab), "MODEL_DIR/vocab.txt"
        else:
            raise ConfigError(f"vocab {vocab} does not exist; pass the model's vocab.txt, its "
                              "directory, or a vocab hash")
        if expected != self.vocab_hash:
            raise ConfigError(
                f"dataset {name} was built with vocab {self.vocab_hash} but the model uses "
                f"{expected}; re-run zhplm preprocess --vocab {target}"
            )
