"""Epochs as small index arrays over memory-mapped shards (Megatron-style), not built instances.

An epoch of pre-training instances is described by a few numbers per instance at most, built
with vectorised numpy in well under a second per million instances; an instance's tokens are
cut from the memory-mapped shards only when a batch needs it (:meth:`Epoch.instances`).

* :class:`DocumentSet` — which documents of a dataset an epoch reads (training or held-out,
  :meth:`DocumentSet.split`), as arithmetic on document numbers: no per-document array.
* :class:`Corpus` — shards (:class:`zhplm.data.shards.Shard`, memory-mapped or in memory) and a
  document set; it reads token ranges and sentences as segments (tuples of per-token arrays).
* :class:`PackedEpoch` (``full_sentences``) — the kept documents in corpus order form one
  circular token stream, cut into sequences of ``seq_length - 2`` tokens (a short target now
  and then, ``short_seq_prob``) starting at a random phase: every token is in exactly one
  instance per epoch. Only the short instances are stored (index and length, ~10 % of
  instances), so the index takes ~1.8 bytes per instance.
* :class:`PairEpoch` (``nsp``, ``sop``, ``sentence_order``) — each document is cut into chunks
  of consecutive sentences (all documents advance one chunk per vectorised round); a chunk is
  13 bytes: first sentence, sentences in A, sentences used, label. Which document B comes from,
  where a one-sentence chunk is cut and how a long pair is trimmed are drawn when the instance
  is read, from a generator seeded by (seed, epoch, instance).

Instances are visited in the order of a seeded :class:`zhplm.data.permutation.Permutation`,
computed on the fly. Everything derives from (seed, epoch), so every rank and every restart
sees the same epoch.

What differs from building every instance (zhplm before issue 21): documents are packed in
corpus order with a random phase per epoch instead of in a shuffled document order (as
fairseq's RoBERTa packs; the instances are shuffled either way), and B drawn from another
document is read up to ``seq_length`` tokens before trimming.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from zhplm.data.instances import (
    InstanceConfig,
    Instances,
    Segment,
    SpecialIds,
    assemble,
    truncate_adjacent,
    truncate_pair,
)
from zhplm.data.permutation import Permutation
from zhplm.data.shards import Shard

__all__ = ["Corpus", "DocumentSet", "Epoch", "InstanceReader", "InstanceRefs", "PackedEpoch",
           "PairEpoch", "build_epoch"]

_BLOCK = 1 << 16  # instances drawn per vectorised block


def _concat_or_empty(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)


# What each generator of an epoch is for: a spawn key, so no stream of an epoch equals the
# collator's masking stream of an instance, seeded by the entropy (seed, epoch, instance id).
_PACK, _CHUNK, _READ, _ORDER = 1, 2, 3, 4


def _rng(seed: int, epoch: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence((seed, epoch), spawn_key=key))


# --------------------------------------------------------------------------- documents


@dataclass(frozen=True, eq=False)
class DocumentSet:
    """Documents ``0..total-1`` of a dataset, all of them, those held out (every
    ``stride``-th), the others, or an explicit sorted list."""

    total: int
    stride: int = 0          # 0: no hold-out rule
    held_out: bool = False   # with stride: the held-out documents instead of the rest
    explicit: np.ndarray | None = None

    @classmethod
    def split(cls, total: int, dev_fraction: float) -> tuple[DocumentSet, DocumentSet]:
        """(training, held-out): every k-th document (k = 1/dev_fraction) is held out."""
        if dev_fraction <= 0:
            return cls(total), cls.of([])
        stride = max(2, round(1 / dev_fraction))
        return cls(total, stride), cls(total, stride, held_out=True)

    @classmethod
    def of(cls, ids: Sequence[int] | np.ndarray) -> DocumentSet:
        """An explicit set of document numbers."""
        array = np.unique(np.asarray(ids, dtype=np.int64))
        return cls(int(array[-1]) + 1 if len(array) else 0, explicit=array)

    def __len__(self) -> int:
        if self.explicit is not None:
            return len(self.explicit)
        if not self.stride:
            return self.total
        held = self.total // self.stride
        return held if self.held_out else self.total - held

    def ids(self, k: np.ndarray) -> np.ndarray:
        """The document numbers of members ``k`` (0-based ranks in the set)."""
        k = np.asarray(k, dtype=np.int64)
        if self.explicit is not None:
            return self.explicit[k]
        if not self.stride:
            return k
        if self.held_out:
            return k * self.stride + self.stride - 1
        return k + k // (self.stride - 1)

    def rank(self, ids: np.ndarray) -> np.ndarray:
        """The ranks in the set of member documents ``ids`` (inverse of :meth:`ids`)."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.explicit is not None:
            return np.searchsorted(self.explicit, ids)
        if not self.stride:
            return ids
        if self.held_out:
            return ids // self.stride
        return ids - (ids + 1) // self.stride

    def between(self, first: int, stop: int) -> np.ndarray:
        """Member document numbers in ``[first, stop)``, sorted."""
        if self.explicit is not None:
            lo, hi = np.searchsorted(self.explicit, [first, stop])
            return self.explicit[lo:hi]
        ids = np.arange(first, stop, dtype=np.int64)
        if not self.stride:
            return ids
        held = ids % self.stride == self.stride - 1
        return ids[held] if self.held_out else ids[~held]


# --------------------------------------------------------------------------- corpus


class Corpus:
    """The documents ``docs`` of ``shards``: reads token ranges and sentences as segments."""

    def __init__(self, shards: Sequence[Shard], docs: DocumentSet) -> None:
        self.shards = list(shards)
        self.docs = docs
        self.labelled = bool(self.shards) and self.shards[0].linguistic is not None
        doc_counts = [len(s.documents) - 1 for s in self.shards]
        sentence_counts = [len(s.sentences) - 1 for s in self.shards]
        self.doc_offsets = np.concatenate([[0], np.cumsum(doc_counts)]).astype(np.int64)
        self.sentence_offsets = np.concatenate([[0], np.cumsum(sentence_counts)]).astype(
            np.int64)
        self._runs = None

    @classmethod
    def from_documents(cls, documents: Sequence[Sequence[Segment]]) -> Corpus:
        """An in-memory corpus of documents (lists of sentences), all of them in the set;
        empty sentences, and documents left empty, are dropped."""
        kept = [d for d in ([s for s in doc if len(s[0])] for doc in documents) if d]
        sentences = [s for doc in kept for s in doc]
        lengths = np.array([len(s[0]) for s in sentences], dtype=np.int64)
        arrays = [np.concatenate([s[i] for s in sentences]) if sentences else
                  np.zeros(0, np.int64) for i in range(len(sentences[0]) if sentences else 2)]
        shard = Shard(
            tokens=np.asarray(arrays[0]).astype(np.int64),
            word_starts=np.asarray(arrays[1]).astype(np.uint8),
            sentences=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            documents=np.concatenate([[0], np.cumsum([len(d) for d in kept])]).astype(np.int64),
            linguistic=np.asarray(arrays[2], dtype=np.uint8) if len(arrays) > 2 else None,
        )
        return cls([shard], DocumentSet(len(kept)))

    # ---- reading -----------------------------------------------------------------------
    def segment(self, shard: int, start: int, stop: int) -> Segment:
        """Tokens ``start:stop`` of a shard: (ids, word starts[, linguistic])."""
        s = self.shards[shard]
        if s.linguistic is None:
            return (s.tokens[start:stop], s.word_starts[start:stop])
        return (s.tokens[start:stop], s.word_starts[start:stop], s.linguistic[start:stop])

    def locate_sentence(self, sentence: int) -> tuple[int, int]:
        """(shard, local sentence index) of a global sentence index."""
        k = int(np.searchsorted(self.sentence_offsets, sentence, side="right")) - 1
        return k, sentence - int(self.sentence_offsets[k])

    def sentences(self, shard: int, first: int, stop: int, max_tokens: int | None = None
                  ) -> Segment:
        """Local sentences ``first:stop`` of a shard as one segment (at most ``max_tokens``)."""
        offsets = self.shards[shard].sentences
        start, end = int(offsets[first]), int(offsets[stop])
        if max_tokens is not None:
            end = min(end, start + max_tokens)
        return self.segment(shard, start, end)

    def document_rank(self, shard: int, local_sentence: int) -> int:
        """The rank in the document set of the document holding a sentence."""
        local_doc = int(np.searchsorted(self.shards[shard].documents, local_sentence,
                                        side="right")) - 1
        return int(self.docs.rank(np.array([self.doc_offsets[shard] + local_doc]))[0])

    def document_sentences(self, rank: int) -> tuple[int, int, int]:
        """(shard, first local sentence, stop) of the member document of rank ``rank``."""
        doc = int(self.docs.ids(np.array([rank]))[0])
        k = int(np.searchsorted(self.doc_offsets, doc, side="right")) - 1
        documents = self.shards[k].documents
        local = doc - int(self.doc_offsets[k])
        return k, int(documents[local]), int(documents[local + 1])

    def member_documents(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        """(first sentence, stop sentence) local to the shard of its member documents."""
        first_doc = int(self.doc_offsets[shard])
        local = self.docs.between(first_doc, int(self.doc_offsets[shard + 1])) - first_doc
        documents = self.shards[shard].documents
        return (np.asarray(documents[local], dtype=np.int64),
                np.asarray(documents[local + 1], dtype=np.int64))

    # ---- the token stream of full_sentences -----------------------------------------------
    def runs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The member documents' tokens as maximal runs: (shard, local start, cumulative
        stream offsets [runs + 1]); one run per gap left by a non-member document."""
        if self._runs is None:
            shard_ids, starts, lengths = [], [], []
            for k, shard in enumerate(self.shards):
                first, stop = self.member_documents(k)
                offsets = shard.sentences
                a = np.asarray(offsets[first], dtype=np.int64)
                b = np.asarray(offsets[stop], dtype=np.int64)
                if not len(a):
                    continue
                new_run = np.concatenate([[True], a[1:] != b[:-1]])
                run_starts = a[new_run]
                run_ends = b[np.concatenate([new_run[1:], [True]])]
                keep = run_ends > run_starts
                shard_ids.append(np.full(int(keep.sum()), k, np.int32))
                starts.append(run_starts[keep])
                lengths.append(run_ends[keep] - run_starts[keep])
            lengths_all = _concat_or_empty(lengths, np.int64)
            self._runs = (_concat_or_empty(shard_ids, np.int32),
                          _concat_or_empty(starts, np.int64),
                          np.concatenate([[0], np.cumsum(lengths_all)]).astype(np.int64))
        return self._runs

    def token_counts(self, vocab_size: int) -> np.ndarray:
        """How often each token id occurs in the member documents (float64, `vocab_size`)."""
        counts = np.zeros(vocab_size, dtype=np.float64)
        shard_ids, run_starts, cum = self.runs()
        for k, start, length in zip(shard_ids, run_starts, np.diff(cum), strict=True):
            tokens = self.shards[k].tokens[start:start + length]
            counts += np.bincount(tokens, minlength=vocab_size)[:vocab_size]
        return counts

    @property
    def stream_tokens(self) -> int:
        """Tokens in the member documents."""
        return int(self.runs()[2][-1])

    def stream(self, start: int, length: int) -> list[Segment]:
        """``length`` tokens of the circular stream from offset ``start``, as segments."""
        shard_ids, run_starts, cum = self.runs()
        total = int(cum[-1])
        pieces: list[Segment] = []
        position = start % total
        while length > 0:
            r = int(np.searchsorted(cum, position, side="right")) - 1
            within = position - int(cum[r])
            take = min(length, int(cum[r + 1]) - position)
            local = int(run_starts[r]) + within
            pieces.append(self.segment(int(shard_ids[r]), local, local + take))
            length -= take
            position = (position + take) % total
        return pieces


# --------------------------------------------------------------------------- epochs


class InstanceReader:
    """Cuts instances from the shards given their refs: holds the corpus and the settings,
    no epoch index, so it is cheap to hand to collation workers."""

    def __init__(self, corpus: Corpus, config: InstanceConfig, special: SpecialIds,
                 seed: int) -> None:
        self.corpus, self.config, self.special, self.seed = corpus, config, special, seed

    def read(self, refs: InstanceRefs) -> Instances:
        """The instances of ``refs``, in order."""
        if self.config.kind == "full_sentences":
            f = refs.fields
            rows = [(self.corpus.stream(int(s), int(n)), (), None)
                    for s, n in zip(f["start"], f["length"], strict=True)]
            return assemble(rows, self.config.seq_length, self.special)
        return self._read_pairs(refs)

    def _read_pairs(self, refs: InstanceRefs) -> Instances:
        f = refs.fields
        rows = [self._pair(refs.epoch, int(i), int(first), int(a), int(used), int(label))
                for i, first, a, used, label in zip(refs.ids, f["first"], f["a"], f["used"],
                                                    f["label"], strict=True)]
        return assemble(rows, self.config.seq_length, self.special)

    def _pair(self, epoch: int, i: int, first: int, a_end: int, used: int, label: int
              ) -> tuple[list[Segment], list[Segment], int]:
        corpus, kind = self.corpus, self.config.kind
        longest = self.config.seq_length - 3
        rng = _rng(self.seed, epoch, _READ, i)
        shard, first = corpus.locate_sentence(first)
        if (kind == "nsp" and label == 1) or (kind == "sentence_order" and label == 2):
            a = corpus.sentences(shard, first, first + a_end)
            rank = corpus.document_rank(shard, first)
            count = len(corpus.docs)
            other = (rank + int(rng.integers(1, count))) % count
            o_shard, o_first, o_stop = corpus.document_sentences(other)
            o_start = o_first + int(rng.integers(0, o_stop - o_first))
            b = corpus.sentences(o_shard, o_start, o_stop, max_tokens=longest)
            a, b = truncate_pair(a, b, longest, rng)
            return [a], [b], label
        if used >= 2:
            first_part = corpus.sentences(shard, first, first + a_end)
            second_part = corpus.sentences(shard, first + a_end, first + used)
        else:  # one sentence: cut it in two
            sentence = corpus.sentences(shard, first, first + 1)
            cut = int(rng.integers(1, len(sentence[0])))
            first_part = tuple(x[:cut] for x in sentence)
            second_part = tuple(x[cut:] for x in sentence)
        if kind == "sentence_order":
            first_part, second_part = truncate_adjacent(first_part, second_part, longest)
            if label == 1:
                return [second_part], [first_part], 1
            return [first_part], [second_part], 0
        if kind == "sop" and rng.random() < 0.5:
            first_part, second_part, label = second_part, first_part, 1
        a, b = truncate_pair(first_part, second_part, longest, rng)
        return [a], [b], label



@dataclass
class InstanceRefs:
    """Instances of one epoch by id, with what reading them needs (small arrays)."""

    epoch: int
    ids: np.ndarray
    fields: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.ids)


class Epoch:
    """One epoch's instances, visited in a seeded order (`order[position]` = instance id)."""

    corpus: Corpus
    config: InstanceConfig
    special: SpecialIds
    order: Permutation
    reader: InstanceReader

    def __len__(self) -> int:
        return len(self.order)

    def ids(self, positions: np.ndarray | Sequence[int]) -> np.ndarray:
        """Instance ids at epoch positions."""
        return self.order[np.asarray(positions, dtype=np.int64)]

    def refs(self, ids: np.ndarray | Sequence[int]) -> InstanceRefs:
        """What :meth:`read` needs to cut instances ``ids`` from the shards: a few numbers
        per instance, cheap to send to a worker process."""
        raise NotImplementedError

    def refs_at(self, positions: np.ndarray | Sequence[int]) -> InstanceRefs:
        """The refs of the instances at epoch ``positions``."""
        return self.refs(self.ids(positions))

    def keep_share(self, rank: int, world_size: int, micro_batch: int,
                   micro_batches: int) -> None:
        """Keep only what ``rank`` reads when each global batch of ``micro_batch x
        world_size x micro_batches`` positions is split as :class:`~zhplm.data.stream
        .InstanceStream` splits it; :meth:`refs_at` then serves this rank's positions only.
        The default keeps everything: an index with nothing per instance to share."""

    def read(self, refs: InstanceRefs) -> Instances:
        """The instances of ``refs``, cut from the shards (uses no index array)."""
        return self.reader.read(refs)

    def instances(self, ids: np.ndarray | Sequence[int]) -> Instances:
        """The instances ``ids`` cut from the shards, in that order."""
        return self.read(self.refs(ids))

    @property
    def nbytes(self) -> int:
        """Memory held by the index arrays."""
        return sum(v.nbytes for v in vars(self).values() if isinstance(v, np.ndarray))


class PackedEpoch(Epoch):
    """``full_sentences``: the circular stream cut into consecutive sequences."""

    def __init__(self, corpus: Corpus, config: InstanceConfig, special: SpecialIds,
                 seed: int, epoch: int) -> None:
        self.corpus, self.config, self.special = corpus, config, special
        self.epoch = epoch
        self.reader = InstanceReader(corpus, config, special, seed)
        rng = _rng(seed, epoch, _PACK)
        total = corpus.stream_tokens
        longest = config.seq_length - 2
        self.phase = int(rng.integers(total)) if total else 0
        short_index, short_length = [], []
        consumed, count, self.last_length = 0, 0, 0
        while consumed < total:
            short = rng.random(_BLOCK) < config.short_seq_prob
            draws = rng.integers(2, longest + 1, size=_BLOCK)
            lengths = np.where(short, draws, longest)
            ends = consumed + np.cumsum(lengths)
            done = ends[-1] >= total
            stop = int(np.searchsorted(ends, total)) + 1 if done else _BLOCK
            picked = np.flatnonzero(short[:stop]) if done else np.flatnonzero(short)
            if done:  # the last instance ends the stream (it may be shorter than its draw)
                self.last_length = int(total - (ends[stop - 2] if stop > 1 else consumed))
                picked = picked[picked < stop - 1]
            short_index.append(picked + count)
            short_length.append(lengths[picked])
            count += stop
            consumed = total if done else int(ends[-1])
        self.count = count
        self.short_index = np.concatenate(short_index + [np.array([-1])]).astype(np.int64)
        self.short_length = np.concatenate(short_length + [np.zeros(1)]).astype(np.uint16)
        deficit = longest - self.short_length[:-1].astype(np.int64)
        self.deficit_before = np.concatenate([[0], np.cumsum(deficit)]).astype(np.int64)
        self.order = Permutation(count, (seed, epoch, _ORDER))

    def spans(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(stream offset, length) of instances ``ids``: an instance starts where the one
        before it ends, so its start is ``id x longest`` less what the short ones before it
        left out (the index ends with a -1 sentinel)."""
        ids = np.asarray(ids, dtype=np.int64)
        longest = self.config.seq_length - 2
        before = np.searchsorted(self.short_index[:-1], ids)  # short instances before each
        starts = self.phase + ids * longest - self.deficit_before[before]
        lengths = np.where(self.short_index[before] == ids,
                           self.short_length[before].astype(np.int64), longest)
        return starts, np.where(ids == self.count - 1, self.last_length, lengths)

    def refs(self, ids: np.ndarray | Sequence[int]) -> InstanceRefs:
        ids = np.asarray(ids, dtype=np.int64)
        starts, lengths = self.spans(ids)
        return InstanceRefs(self.epoch, ids, {"start": starts, "length": lengths})



class PairEpoch(Epoch):
    """``nsp`` / ``sop`` / ``sentence_order``: chunks of consecutive sentences split in two."""

    def __init__(self, corpus: Corpus, config: InstanceConfig, special: SpecialIds,
                 seed: int, epoch: int) -> None:
        self.corpus, self.config, self.special = corpus, config, special
        self.seed, self.epoch = seed, epoch
        self.reader = InstanceReader(corpus, config, special, seed)
        self._share: tuple[int, int, int, int] | None = None
        longest = config.seq_length - 3
        many_docs = len(corpus.docs) > 1
        parts: list[tuple[np.ndarray, ...]] = []
        for k, shard in enumerate(corpus.shards):
            offsets = shard.sentences
            s, e = corpus.member_documents(k)
            live = e > s
            s, e = s[live], e[live]
            rng = _rng(seed, epoch, _CHUNK, k)  # one stream per shard, drawn round by round
            while len(s):
                m = len(s)
                goal = np.where(rng.random(m) < config.short_seq_prob,
                                rng.integers(2, longest + 1, size=m), longest)
                start_tokens = np.asarray(offsets[s], dtype=np.int64)
                t = np.minimum(np.searchsorted(offsets, start_tokens + goal), e)
                n = t - s
                a = np.where(n < 2, 1, 1 + np.floor(rng.random(m) * (n - 1)).astype(np.int64))
                if config.kind == "nsp":
                    label = (((n == 1) | (rng.random(m) < 0.5)) & many_docs).astype(np.uint8)
                    other = label == 1
                elif config.kind == "sentence_order":
                    label = np.floor(rng.random(m) * (3 if many_docs else 2)).astype(np.uint8)
                    other = label == 2
                else:  # sop: the swap is drawn when the instance is read
                    label = np.zeros(m, np.uint8)
                    other = np.zeros(m, bool)
                used = np.where(other, a, n)
                one_token = (n == 1) & ~other & (
                    np.asarray(offsets[s + 1], dtype=np.int64) - start_tokens < 2)
                keep = ~one_token
                parts.append(((s + corpus.sentence_offsets[k])[keep],  # final dtypes now:
                              a[keep].astype(np.uint16), used[keep].astype(np.uint16),
                              label[keep]))  # a build holds ~2x the index, not more
                s = s + used
                live = s < e
                s, e = s[live], e[live]
        columns = list(zip(*parts, strict=True)) if parts else [[], [], [], []]
        dtypes = (np.int64, np.uint16, np.uint16, np.uint8)
        self.first, self.a_sentences, self.used, self.label = (
            _concat_or_empty(list(c), d) for c, d in zip(columns, dtypes, strict=True))
        del parts, columns
        self.order = Permutation(len(self.first), (seed, epoch, _ORDER))

    def refs(self, ids: np.ndarray | Sequence[int]) -> InstanceRefs:
        if self._share is not None:
            raise ValueError("this epoch index keeps one rank's share; use refs_at(positions)")
        return self._refs(np.asarray(ids, dtype=np.int64), np.asarray(ids, dtype=np.int64))

    def _refs(self, ids: np.ndarray, rows: np.ndarray) -> InstanceRefs:
        return InstanceRefs(self.epoch, ids, {"first": self.first[rows],
                                              "a": self.a_sentences[rows],
                                              "used": self.used[rows], "label": self.label[rows]})

    def keep_share(self, rank: int, world_size: int, micro_batch: int,
                   micro_batches: int) -> None:
        if world_size == 1:
            return
        global_batch = micro_batch * world_size * micro_batches
        steps = len(self) // global_batch
        positions = (np.arange(steps)[:, None, None] * global_batch
                     + ((np.arange(micro_batches) * world_size + rank) * micro_batch
                        )[None, :, None]
                     + np.arange(micro_batch)[None, None, :]).reshape(-1)
        ids = self.ids(positions)  # this rank's instances, in the order it reads them
        self.first, self.a_sentences = self.first[ids], self.a_sentences[ids]
        self.used, self.label = self.used[ids], self.label[ids]
        self._share = (rank, world_size, micro_batch, micro_batches)

    def refs_at(self, positions: np.ndarray | Sequence[int]) -> InstanceRefs:
        positions = np.asarray(positions, dtype=np.int64)
        ids = self.ids(positions)
        if self._share is None:
            return self._refs(ids, ids)
        rank, world_size, micro, micro_batches = self._share
        offset = positions % (micro * world_size * micro_batches)
        if ((offset // micro) % world_size != rank).any():
            raise IndexError(f"positions outside rank {rank}'s share of the epoch")
        rows = (positions // (micro * world_size * micro_batches) * (micro_batches * micro)
                + offset // (micro * world_size) * micro + offset % micro)
        return self._refs(ids, rows)


def build_epoch(corpus: Corpus, config: InstanceConfig, special: SpecialIds, seed: int,
                epoch: int) -> Epoch:
    """The index of epoch ``epoch`` of ``corpus`` for ``config.kind``."""
    if config.kind == "full_sentences":
        return PackedEpoch(corpus, config, special, seed, epoch)
    return PairEpoch(corpus, config, special, seed, epoch)
