"""Documents -> token ids and word starts, chunk by chunk, in this process and worker processes.

:class:`ChunkEncoder` tokenizes a chunk of documents (lists of sentences) without special
tokens and marks the tokens that start a word (jieba words for whole-word masking, see
:mod:`zhplm.data.segment`); the output is the same as encoding each sentence alone. With an
annotator (:mod:`zhplm.data.annotate`, LERT) it also gives every token the POS / NER / DEP
labels of its first character, and the word starts are then the annotator's words.
:func:`encoded_chunks` groups documents into chunks and encodes them in order, in this
process or with ``workers - 1`` more processes (forked where that is safe, else spawned).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from zhplm.data.annotate import build_annotator
from zhplm.data.segment import jieba_words, word_start_mask
from zhplm.tokenization import Tokenizer

__all__ = ["ChunkEncoder", "EncodedChunk", "EncoderArgs", "encoded_chunks", "single_token_table"]

EncoderArgs = tuple[str, str, int, str] | tuple[str, str, int, str, str | None]
"""The arguments of :class:`ChunkEncoder`: (vocab, segmenter, min_sentence_tokens, dtype[,
annotate]); ``annotate`` (default None) is an annotator spec, ``"jieba"`` or ``"conll:PATH"``."""

UNKNOWN_LABEL = 255
"""The stored label id (uint8) of a token whose label is unknown."""


@dataclass
class EncodedChunk:
    """The encoded form of a chunk of documents."""

    ids: np.ndarray  # token ids, all sentences concatenated
    word_starts: np.ndarray  # uint8, same length
    sentence_lengths: np.ndarray  # int64, tokens per kept sentence
    document_sizes: np.ndarray  # int64, kept sentences per kept document
    characters: int
    short_sentences: int
    empty_documents: int
    # with an annotator: uint8 [tokens, 3] label ids (columns as annotate.TASKS, 255 =
    # unknown) of each token's first character; kept sentences the annotator could not label
    linguistic: np.ndarray | None = None
    unannotated_sentences: int = 0

    def without_documents(self, count: int) -> EncodedChunk:
        """The chunk less its first ``count`` kept documents (what a resumed run already
        wrote); the counters (``characters``, ...) stay those of the whole chunk."""
        sentences = int(self.document_sizes[:count].sum())
        tokens = int(self.sentence_lengths[:sentences].sum())
        return dataclasses.replace(
            self, ids=self.ids[tokens:], word_starts=self.word_starts[tokens:],
            sentence_lengths=self.sentence_lengths[sentences:],
            document_sizes=self.document_sizes[count:],
            linguistic=None if self.linguistic is None else self.linguistic[tokens:])


_HAN_FIRST, _HAN_LAST = 0x4E00, 0x9FFF
_BMP = 0x10000


def single_token_table(backend: Any) -> np.ndarray | None:
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


class ChunkEncoder:
    """Tokenizes documents and marks word starts; one per process.

    Vectorized over the chunk, and the output is the same as encoding each sentence alone:

    * the sentences are joined by newlines (a word boundary for WordPiece and for jieba);
    * with a BERT tokenizer, the characters that are always a token of their own (Chinese
      characters, Chinese punctuation: ~90% of Chinese text, see
      :func:`single_token_table`) are looked up in a table; each run of them becomes one
      space in what goes through ``encode_batch``, which then has ~10x less to do and yields
      the same other tokens (a space separates words just as they did);
    * continuation pieces (``##``) are looked up by token id;
    * the jieba word starts come from one segmentation of the joined text.

    With ``annotate`` (an annotator spec, see :func:`zhplm.data.annotate.build_annotator`),
    the annotator labels the joined text once per chunk
    (:meth:`~zhplm.data.annotate.JiebaAnnotator.label_lines`); each token gets the labels of
    its first character (``linguistic``: uint8 ``[tokens, 3]``, 255 = unknown). The word
    starts then come from the *annotator's* words instead of the segmenter's, so that a
    whole-word mask covers exactly one labelled word (a token starts a word when its first
    character starts one of the annotator's words, it is no ``##`` piece, or it starts a
    sentence); on the sentences the annotator could not label, the segmenter's words are used.
    """

    def __init__(self, vocab: str, segmenter: str, min_sentence_tokens: int, dtype: str,
                 annotate: str | None = None) -> None:
        self.tokenizer = Tokenizer.from_pretrained(vocab)
        self.segmenter = segmenter
        self.annotator = None if annotate is None else build_annotator(annotate)
        self.min_tokens = min_sentence_tokens
        self.dtype = np.dtype(dtype)
        backend = self.tokenizer.backend
        pieces = backend.get_vocab(with_added_tokens=True)
        self.continuation = np.zeros(max(pieces.values(), default=0) + 1, dtype=bool)
        self.continuation[[i for t, i in pieces.items() if t.startswith("##")]] = True
        self.single_tokens = single_token_table(backend)

    def load(self) -> None:
        """Load the segmenter's dictionary and the annotator now (else at the first chunk)."""
        if self.segmenter == "jieba":
            jieba_words("")
        if self.annotator is not None:
            self.annotator.load()

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

    def __call__(self, documents: list[list[str]]) -> EncodedChunk:
        flat = [sentence for document in documents for sentence in document]
        chars = np.fromiter(map(len, flat), dtype=np.int64, count=len(flat))
        bases = np.cumsum(chars + 1) - (chars + 1)  # where each sentence starts in the join
        ids, begins = self._tokenize(flat, bases)
        sentence_of = np.searchsorted(bases, begins, side="right") - 1
        lengths = np.bincount(sentence_of, minlength=len(flat)).astype(np.int64)
        starts = ~self.continuation[ids]
        linguistic, annotated = None, None
        if self.annotator is not None:
            labelled = self.annotator.label_lines(flat)
            annotated = labelled.annotated
            linguistic = labelled.labels[:, begins].T
            linguistic = np.where(linguistic < 0, UNKNOWN_LABEL, linguistic).astype(np.uint8)
            if len(ids):
                starts &= self._word_boundaries(flat, chars, labelled.word_starts,
                                                annotated)[begins]
        elif self.segmenter == "jieba" and len(ids):
            starts &= word_start_mask("\n".join(flat))[begins]
        firsts = np.cumsum(lengths) - lengths
        starts[firsts[lengths > 0]] = True  # a sentence starts a word
        keep = lengths >= self.min_tokens
        kept_tokens = np.repeat(keep, lengths)
        document_of = np.repeat(np.arange(len(documents)), [len(d) for d in documents])
        kept_per_document = np.bincount(document_of[keep], minlength=len(documents))
        return EncodedChunk(
            ids=ids[kept_tokens].astype(self.dtype),
            word_starts=starts[kept_tokens].astype(np.uint8),
            sentence_lengths=lengths[keep],
            document_sizes=kept_per_document[kept_per_document > 0].astype(np.int64),
            characters=int(chars[keep].sum()),
            short_sentences=int((~keep).sum()),
            empty_documents=int((kept_per_document == 0).sum()),
            linguistic=None if linguistic is None else linguistic[kept_tokens],
            unannotated_sentences=0 if annotated is None else int((~annotated & keep).sum()),
        )

    def _word_boundaries(self, flat: list[str], chars: np.ndarray, annotator_starts: np.ndarray,
                         annotated: np.ndarray) -> np.ndarray:
        """Per character of the joined text: does a word start there? The annotator's words on
        the sentences it labelled, the segmenter's on the others."""
        if annotated.all():
            return annotator_starts
        covered = np.repeat(annotated, chars + 1)[: len(annotator_starts)]
        if self.segmenter == "jieba":
            fallback = word_start_mask("\n".join(flat))[:-1]
        else:  # WordPiece words: the ## test alone
            fallback = np.ones(len(annotator_starts), dtype=bool)
        return np.where(covered, annotator_starts, fallback)


# --------------------------------------------------------------------------- worker processes

_WORKER_ENCODER: ChunkEncoder | None = None


def _init_worker(vocab: str, segmenter: str, min_sentence_tokens: int, dtype: str,
                 annotate: str | None = None) -> None:
    """Initializer of a spawned worker: it loads its own encoder (and annotator)."""
    global _WORKER_ENCODER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    _WORKER_ENCODER = ChunkEncoder(vocab, segmenter, min_sentence_tokens, dtype, annotate)


def _adopt_worker(encoder: ChunkEncoder, inherited_fds: tuple[int, ...]) -> None:
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


def _encode_in_worker(documents: list[list[str]]) -> EncodedChunk:
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


def _ordered_map(pool: Any, items: Iterable[list[list[str]]], window: int,
                 local: ChunkEncoder) -> Iterator[EncodedChunk]:
    """``pool.imap`` with ``local`` (this process's encoder) that keeps at most ``window``
    chunks in the pool.

    ``Pool.imap`` feeds its whole input to the workers as fast as it can be read, which would
    hold the entire corpus in memory; this keeps reading in step with writing. This process
    encodes a chunk itself whenever ``window`` chunks already wait in the pool, instead of
    waiting for them: no core idles, and one process fewer starts.
    """
    pending: deque[Any] = deque()  # AsyncResults and chunks encoded here, in input order
    in_pool = 0
    most = 4 * window + 4  # chunks held at most
    for item in items:
        if in_pool >= window:
            with _serial_tokenizers():
                pending.append(local(item))
        else:
            pending.append(pool.apply_async(_encode_in_worker, (item,)))
            in_pool += 1
        while pending and (len(pending) >= most or isinstance(pending[0], EncodedChunk)
                           or pending[0].ready()):
            head = pending.popleft()
            if not isinstance(head, EncodedChunk):
                in_pool -= 1
                head = head.get()
            yield head
    while pending:
        head = pending.popleft()
        yield head if isinstance(head, EncodedChunk) else head.get()


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


def encoded_chunks(
    documents: Iterable[list[str]], encoder_args: EncoderArgs, workers: int,
    chunk_documents: int, inherited_fds: tuple[int, ...] = (), start_chunk: int = 0,
) -> Iterator[EncodedChunk]:
    """Encode ``documents`` chunk by chunk, in order, in-process or with a process pool
    (``inherited_fds``: this process's descriptors a forked worker must close).

    ``start_chunk`` chunks are read and grouped but not encoded (a resumed run wrote them):
    the first chunk yielded is chunk number ``start_chunk`` of the whole input."""
    chunks = _chunks(documents, chunk_documents)
    for _ in range(start_chunk):
        if next(chunks, None) is None:
            return
    if workers == 1:
        yield from map(ChunkEncoder(*encoder_args), chunks)
        return
    # workers - 1 processes and this one, which encodes whenever the others are all busy
    method = _START_METHOD or _start_method()
    if method == "fork":
        local = ChunkEncoder(*encoder_args)
        local.load()  # the workers inherit it all, loaded
        initializer, initargs = _adopt_worker, (local, inherited_fds)
    else:
        initializer, initargs = _init_worker, encoder_args
    pool = multiprocessing.get_context(method).Pool(workers - 1, initializer, initargs)
    try:
        if method != "fork":
            local = ChunkEncoder(*encoder_args)  # while the workers start
        yield from _ordered_map(pool, chunks, window=2 * (workers - 1), local=local)
        pool.close()
        pool.join()
    finally:
        pool.terminate()
