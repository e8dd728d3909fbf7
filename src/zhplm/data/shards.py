"""The dataset directory format: shards of token ids and word starts, ``meta.json``.

A dataset directory, as :func:`zhplm.data.corpus.preprocess` writes it::

    meta.json
    shard-00000.tokens.npy       1-D token ids (uint16 when the vocab fits, else int32)
    shard-00000.word_starts.npy  1-D uint8, 1 where a token starts a word
    shard-00000.sentences.npy    int64 [num_sentences + 1], cumulative token offsets
    shard-00000.documents.npy    int64 [num_documents + 1], cumulative sentence offsets
    shard-00000.linguistic.npy   uint8 [num_tokens, 3], only with ``--annotate`` (LERT): the
                                 pos, ner, dep label ids of each token (255 = unknown)

With an annotator, ``meta.json`` also has ``"annotation"``: the annotator spec, the tasks
(column order), the label inventories (:func:`zhplm.data.annotate.lert_labels`), the number of
tokens with a known label per task and the number of sentences the annotator could not label.

:class:`ShardWriter` writes the shards, :func:`dataset_meta` / :func:`write_meta` the
``meta.json``; :class:`TokenDataset` opens the directory again with ``np.load(mmap_mode="r")``.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zhplm.data.output_dir import write_text_atomically
from zhplm.errors import ConfigError, DataError
from zhplm.tokenization import Tokenizer, vocab_hash

if TYPE_CHECKING:
    from zhplm.data.encoding import EncodedChunk

__all__ = [
    "FORMAT",
    "Document",
    "Sentence",
    "Shard",
    "ShardWriter",
    "TokenDataset",
    "annotation_meta",
    "dataset_meta",
    "vocab_fingerprint",
    "write_meta",
]

FORMAT = "zhplm-tokens-v1"
"""The ``format`` field of ``meta.json``."""

PathLike = str | os.PathLike[str]
Sentence = tuple[np.ndarray, ...]
"""A stored sentence: (token ids, word starts), both 1-D and of equal length; in an annotated
dataset (token ids, word starts, linguistic labels), the last uint8 ``[len, 3]``."""
Document = list[Sentence]

_RERUN = "re-run `zhplm preprocess` to rebuild it"


# --------------------------------------------------------------------------- writing


class ShardWriter:
    """Accumulates encoded documents and writes a shard once it holds ``shard_tokens``.

    ``shards`` (the entries of shards already in ``directory``, as :attr:`shards` lists them)
    continues a resumed run: the next shard gets the next number. ``on_flush`` is called after
    each shard is written (a resumable run records its progress there).
    """

    def __init__(self, directory: Path, shard_tokens: int, dtype: np.dtype,
                 shards: Sequence[dict[str, Any]] = (),
                 on_flush: Callable[[], None] | None = None) -> None:
        self.directory = directory
        self.shard_tokens = shard_tokens
        self.dtype = dtype
        self.shards: list[dict[str, Any]] = [dict(s) for s in shards]
        self.on_flush = on_flush
        self._reset()

    def _reset(self) -> None:
        self._ids: list[np.ndarray] = []
        self._starts: list[np.ndarray] = []
        self._lengths: list[np.ndarray] = []
        self._sizes: list[np.ndarray] = []
        self._linguistic: list[np.ndarray] = []
        self._tokens = 0

    def add(self, chunk: EncodedChunk) -> None:
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
            if chunk.linguistic is not None:
                self._linguistic.append(chunk.linguistic[before:end])
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
        arrays = [("tokens", ids), ("word_starts", starts), ("sentences", sentences),
                  ("documents", documents)]
        if self._linguistic:
            arrays.append(("linguistic", np.concatenate(self._linguistic)))
        for kind, array in arrays:
            np.save(self.directory / f"{name}.{kind}.npy", array)
        self.shards.append({"name": name, "num_tokens": len(ids),
                            "num_sentences": len(lengths), "num_documents": len(sizes)})
        self._reset()
        if self.on_flush is not None:
            self.on_flush()


# --------------------------------------------------------------------------- meta.json


def vocab_fingerprint(vocab: PathLike, tokenizer: Tokenizer | None = None) -> str:
    """:func:`vocab_hash` of the vocab file; for a ``tokenizer.json``-only directory, the hash
    of the ``vocab.txt`` that :meth:`Tokenizer.save_pretrained` would write."""
    path = Path(vocab)
    if path.is_file() or (path / "vocab.txt").is_file():
        return vocab_hash(path)
    tokenizer = tokenizer or Tokenizer.from_pretrained(path)
    ids = tokenizer.backend.get_vocab(with_added_tokens=False)
    text = "".join(t + "\n" for t in sorted(ids, key=ids.__getitem__))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def dataset_meta(shards: list[dict[str, Any]], tokenizer: Tokenizer, vocab: PathLike,
                 segmenter: str, dtype: np.dtype, characters: int, paths: list[Path],
                 stats: dict[str, int],
                 annotation: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``meta.json`` content of a dataset of ``shards`` (as :class:`ShardWriter` lists
    them) made from the corpus files ``paths``; ``seconds`` is left 0 for the caller.
    ``annotation`` (see :func:`annotation_meta`) is added only when given."""
    meta = {
        "format": FORMAT,
        "vocab_hash": vocab_fingerprint(vocab, tokenizer),
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
    if annotation is not None:
        meta["annotation"] = annotation
    return meta


def annotation_meta(spec: str, labelled_tokens: np.ndarray | Sequence[int],
                    unannotated_sentences: int) -> dict[str, Any]:
    """The ``"annotation"`` entry of ``meta.json``: the annotator ``spec``, the tasks (column
    order of the linguistic arrays), the label inventories, the tokens with a known label per
    task and the sentences the annotator could not label."""
    from zhplm.data.annotate import TASKS, lert_labels

    return {
        "annotator": spec,
        "tasks": list(TASKS),
        "labels": lert_labels(),
        "labelled_tokens": {task: int(n) for task, n in zip(TASKS, labelled_tokens,
                                                            strict=True)},
        "unannotated_sentences": int(unannotated_sentences),
    }


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    """Write ``meta`` as ``directory/meta.json`` (atomically)."""
    write_text_atomically(directory / "meta.json",
                          json.dumps(meta, indent=2, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- reading

_META_KEYS = {"format": str, "vocab_hash": str, "vocab_size": int, "dtype": str,
              "num_tokens": int, "num_documents": int, "shards": list}
_SHARD_KEYS = ("name", "num_tokens", "num_sentences", "num_documents")


@dataclass
class Shard:
    """One shard's arrays: token ids, word starts, cumulative sentence offsets (tokens) and
    document offsets (sentences), and in an annotated dataset the linguistic labels."""

    tokens: np.ndarray
    word_starts: np.ndarray
    sentences: np.ndarray
    documents: np.ndarray
    linguistic: np.ndarray | None = None  # uint8 [tokens, 3] in an annotated dataset


class TokenDataset:
    """A dataset directory written by :func:`zhplm.data.corpus.preprocess`, memory-mapped.

    ``document(i)`` returns document ``i`` (numbered across shards) as one
    ``(token ids, word starts)`` pair of 1-D arrays per sentence; the arrays are read-only
    views of the memory-mapped shards (ids in the dataset's ``dtype``). In an annotated
    dataset (``annotation`` is not None) each sentence is a triple ``(token ids, word starts,
    linguistic)``, the last uint8 ``[len, 3]``: pos, ner, dep label ids, 255 = unknown.
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
        annotation = meta.get("annotation")
        if annotation is not None and not (isinstance(annotation, dict)
                                           and isinstance(annotation.get("tasks"), list)):
            raise DataError(f"{meta_file} is corrupt ('annotation' is not an object with "
                            f"'tasks'); {_RERUN}")
        return meta

    def _load(self, name: str, kind: str, rerun: str = _RERUN) -> np.ndarray:
        file = self.path / f"{name}.{kind}.npy"
        try:
            array = np.load(file, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read {file} ({err}); {rerun}") from err
        if array.ndim != 1 and kind != "linguistic":
            self._corrupt(f"{file.name} has shape {array.shape}, expected 1-D")
        return np.asarray(array)  # a plain ndarray view: faster slicing than np.memmap

    def _load_linguistic(self, name: str, num_tokens: int) -> np.ndarray:
        """The shard's uint8 [num_tokens, tasks] label ids, checked."""
        annotation = self._meta["annotation"]
        rerun = (f"re-run zhplm preprocess --annotate {annotation.get('annotator', 'SPEC')} "
                 "to rebuild it")
        array = self._load(name, "linguistic", rerun)
        expected = (num_tokens, len(annotation["tasks"]))
        if array.shape != expected or array.dtype != np.uint8:
            file = self.path / f"{name}.linguistic.npy"
            raise DataError(f"{file} has shape {array.shape} and dtype {array.dtype}, expected "
                            f"{expected} uint8 (the {', '.join(annotation['tasks'])} label ids "
                            f"of each token, as meta.json says); {rerun}")
        return array

    def _open_shard(self, info: dict[str, Any]) -> Shard:
        name = info["name"]
        shard = Shard(*(self._load(name, kind)
                         for kind in ("tokens", "word_starts", "sentences", "documents")))
        if self.annotation is not None:
            shard.linguistic = self._load_linguistic(name, info["num_tokens"])
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
    def annotation(self) -> dict[str, Any] | None:
        """``meta.json``'s ``"annotation"`` (annotator, tasks, labels, counts; see
        :func:`annotation_meta`), None for a dataset made without ``--annotate``."""
        return self._meta.get("annotation")

    @property
    def shards(self) -> list[Shard]:
        """The memory-mapped shards, in order (documents never cross a shard)."""
        return self._shards

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
        sentence, or (ids, word starts, linguistic) triple in an annotated dataset."""
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
        tokens, starts, linguistic = shard.tokens, shard.word_starts, shard.linguistic
        pairs = zip(bounds[:-1], bounds[1:], strict=True)
        if linguistic is None:
            return [(tokens[a:b], starts[a:b]) for a, b in pairs]
        return [(tokens[a:b], starts[a:b], linguistic[a:b]) for a, b in pairs]

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
            expected = vocab_fingerprint(path)
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


def token_counts(dataset: TokenDataset, documents: Iterable[int], vocab_size: int
                 ) -> np.ndarray:
    """How often each token id occurs in `documents` of `dataset` (float64, length
    `vocab_size`)."""
    counts = np.zeros(vocab_size, dtype=np.float64)
    for index in documents:
        for sentence in dataset.document(index):
            counts += np.bincount(sentence[0], minlength=vocab_size)[:vocab_size]
    return counts
