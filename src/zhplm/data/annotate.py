"""Per-character linguistic labels (POS, NER, DEP) for LERT-style pre-training.

LERT (Cui et al. 2022, https://github.com/ymcui/LERT) adds to MLM three heads that predict,
at each masked position, the part of speech, named-entity tag and dependency relation of
the word the token belongs to. LERT labelled its corpus with LTP, whose weights zhplm cannot
download, so the labels come from pluggable *annotators*:

* ``"jieba"`` (:class:`JiebaAnnotator`): ``jieba.posseg`` words and ICTCLAS-style flags,
  mapped onto LTP's POS tags (:data:`JIEBA_TO_LTP_POS`) and onto LTP's person / place /
  organisation entities (:data:`JIEBA_TO_LTP_NER`); no dependency parse (DEP is unknown);
* ``"conll:PATH"`` (:class:`ConllAnnotator`): a CoNLL-U or CoNLL-X file already parsed by
  any tool (LTP, HanLP, a treebank), read with LTP's tag and relation names.

Each annotator gives one :class:`Annotation` per text: for every *character* the label id
of its word in each task (every character of a word carries the word's POS and DEP label;
NER tags are spread over the characters in BIES form), ``-1`` where the label is unknown
(the LERT heads ignore those positions).

The label inventories and their order (index = label id) are LERT's 28 POS tags and 14
dependency relations in the order of LERT's paper/README. For NER, LERT names 13 labels
(``O`` plus S/B/I/E of ``Ns``, ``Nh``, ``Ni``) but its exact order is not published; the
order of :data:`NER_LABELS` is zhplm's choice. :func:`lert_labels` is what a LERT dataset
records in its ``meta.json`` (``"annotation"`` / ``"labels"``).

``zhplm preprocess --annotate jieba|conll:PATH`` labels a whole chunk of sentences at once
with ``label_lines`` (the sentences joined by newlines; -1 on the
newlines; a sentence the annotator cannot label is all -1 and counted), and stores for each
token the labels of its first character (see :mod:`zhplm.data.encoding`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from zhplm.errors import DataError, InputError

logger = logging.getLogger(__name__)

UNKNOWN = -1
"""Label id of a character whose label is unknown (ignored by the LERT heads)."""

POS_LABELS: tuple[str, ...] = (
    "n", "v", "wp", "u", "d", "a", "m", "p", "r", "ns", "c", "q", "nt", "nh",
    "nd", "j", "i", "b", "ni", "nz", "nl", "z", "k", "ws", "o", "h", "e", "%",
)  # fmt: skip
"""LERT's 28 POS labels (LTP's 863 tagset), index = label id."""

NER_ENTITIES: tuple[str, ...] = ("Ns", "Nh", "Ni")
"""LTP's entity types: place, person, organisation."""

NER_LABELS: tuple[str, ...] = ("O",) + tuple(
    f"{tag}-{entity}" for entity in NER_ENTITIES for tag in "SBIE"
)
"""The 13 NER labels: ``O``, then S/B/I/E of Ns, Nh, Ni (this order is zhplm's choice)."""

DEP_LABELS: tuple[str, ...] = (
    "ATT", "WP", "ADV", "VOB", "SBV", "COO", "RAD", "HED", "POB", "CMP", "LAD", "FOB",
    "DBL", "IOB",
)  # fmt: skip
"""LERT's 14 dependency relations (LTP's), index = label id."""

POS_IDS: dict[str, int] = {label: i for i, label in enumerate(POS_LABELS)}
NER_IDS: dict[str, int] = {label: i for i, label in enumerate(NER_LABELS)}
DEP_IDS: dict[str, int] = {label: i for i, label in enumerate(DEP_LABELS)}

TASKS = ("pos", "ner", "dep")


def lert_labels() -> dict[str, list[str]]:
    """The label inventories, ``{"pos": [...], "ner": [...], "dep": [...]}`` (list index =
    label id); recorded in an annotated dataset's ``meta.json``."""
    return {"pos": list(POS_LABELS), "ner": list(NER_LABELS), "dep": list(DEP_LABELS)}


# jieba.posseg flag (ICTCLAS / PKU style, as in jieba's dict.txt and its HMM tag model)
# -> LTP tag. Flags missing here (g, zg: free morphemes of any class; anything new) are
# unknown (-1). "x" is special-cased in jieba_pos_id: punctuation, symbols and whitespace
# are "wp", other characters jieba could not tag (rare CJK characters) are unknown.
JIEBA_TO_LTP_POS: dict[str, str] = {
    # nouns
    "n": "n", "ng": "n",
    "nr": "nh", "nrfg": "nh", "nrt": "nh",  # person names (nrt: transliterated)
    "ns": "ns",  # place names
    "nt": "ni",  # organisation names (ICTCLAS nt = LTP ni; LTP nt is a time noun)
    "nz": "nz",  # other proper nouns
    "t": "nt", "tg": "nt",  # time words
    "s": "nl",  # place words (处所词: 东北郊, 世上) -> LTP location noun
    "f": "nd",  # direction words (方位词) -> LTP direction noun
    # verbs, adjectives, adverbs
    "v": "v", "vd": "v", "vn": "v", "vg": "v", "vi": "v", "vq": "v",
    "a": "a", "ad": "a", "an": "a", "ag": "a",
    "d": "d", "df": "d", "dg": "d",
    # function words
    "p": "p",
    "c": "c",
    "u": "u", "ud": "u", "ug": "u", "uj": "u", "ul": "u", "uv": "u", "uz": "u",
    "y": "u", "yg": "u",  # modal particles (吗, 吧, 呀): LTP tags them u
    "e": "e",  # exclamations
    "o": "o",  # onomatopoeia
    # numbers, measure words, pronouns
    "m": "m", "mg": "m", "mq": "m",  # mq: numeral + measure word (一口袋, 三件)
    "q": "q", "qe": "q", "qg": "q",
    "r": "r", "rg": "r", "rr": "r", "rz": "r",
    # idioms, abbreviations, other
    "i": "i", "in": "i",
    "l": "i",  # fixed expressions (习用语: 一不小心) -> LTP idiom
    "ln": "i",
    "j": "j", "jn": "j",
    "b": "b", "bg": "b",  # distinguishing words (区别词)
    "z": "z",  # state words (状态词)
    "h": "h",  # prefixes
    "k": "k",  # suffixes
    "eng": "ws", "en": "ws",  # ASCII letter runs -> LTP foreign word
    "w": "wp",  # punctuation
}  # fmt: skip

# jieba.posseg flag -> LTP entity type, spread over the word's characters in BIES form.
JIEBA_TO_LTP_NER: dict[str, str] = {
    "nr": "Nh", "nrfg": "Nh", "nrt": "Nh", "ns": "Ns", "nt": "Ni",
}  # fmt: skip


def jieba_pos_id(word: str, flag: str) -> int:
    """The POS label id of a ``jieba.posseg`` (word, flag) pair, -1 when unknown."""
    if flag == "x":
        return UNKNOWN if any(ch.isalnum() for ch in word) else POS_IDS["wp"]
    tag = JIEBA_TO_LTP_POS.get(flag)
    return UNKNOWN if tag is None else POS_IDS[tag]


def bies_ids(entity: str | None, n: int, tag: str = "S") -> list[int]:
    """NER label ids for the ``n`` characters of one word.

    ``entity`` is an LTP entity type (``Ns``, ``Nh``, ``Ni``) or None for ``O``. ``tag`` is
    the *word's* BIES tag (LTP tags words): ``S`` = the word is a whole entity, ``B`` / ``E``
    = it starts / ends one, ``I`` = it is inside one. The characters get the tags a
    character-level tagger would give them (``S`` word of 3 chars -> B I E)."""
    if entity is None:
        return [NER_IDS["O"]] * n
    begins = tag in ("S", "B")
    ends = tag in ("S", "E")
    if n == 1:
        tags = ["S" if begins and ends else "B" if begins else "E" if ends else "I"]
    else:
        tags = ["B" if begins else "I"] + ["I"] * (n - 2) + ["E" if ends else "I"]
    return [NER_IDS[f"{t}-{entity}"] for t in tags]


@dataclass(frozen=True)
class Annotation:
    """POS / NER / DEP label ids of every character of one text (-1 = unknown).

    ``words`` concatenate to ``text``; ``pos``, ``ner`` and ``dep`` are int16 arrays of
    ``len(text)`` label ids into :data:`POS_LABELS`, :data:`NER_LABELS`, :data:`DEP_LABELS`.
    """

    text: str
    words: list[str]
    pos: np.ndarray
    ner: np.ndarray
    dep: np.ndarray
    word_starts: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if "".join(self.words) != self.text:
            raise ValueError("Annotation: the words do not concatenate to the text")
        for task in TASKS:
            ids = np.asarray(getattr(self, task), dtype=np.int16)
            if ids.shape != (len(self.text),):
                raise ValueError(f"Annotation: {task} has shape {ids.shape}, expected "
                                 f"({len(self.text)},) (one label per character)")
            object.__setattr__(self, task, ids)
        starts = np.zeros(len(self.text), dtype=bool)
        offset = 0
        for word in self.words:
            if word:
                starts[offset] = True
            offset += len(word)
        object.__setattr__(self, "word_starts", starts)

    def labels(self, task: str) -> np.ndarray:
        """The label ids of ``task`` ("pos", "ner" or "dep")."""
        if task not in TASKS:
            raise InputError(f"task={task!r}; use one of {', '.join(TASKS)}")
        return getattr(self, task)

    def label_names(self, task: str) -> list[str | None]:
        """The label names of ``task`` per character (None where unknown)."""
        names = lert_labels()[task]
        return [names[i] if i >= 0 else None for i in self.labels(task).tolist()]


def _from_words(words: Sequence[str], pos: Sequence[int], ner: Sequence[Sequence[int]],
                dep: Sequence[int]) -> Annotation:
    """An Annotation from word-level POS / DEP ids and per-character NER ids per word."""
    lengths = [len(w) for w in words]
    return Annotation(
        text="".join(words),
        words=list(words),
        pos=np.repeat(np.asarray(pos, dtype=np.int16), lengths),
        ner=np.asarray([i for ids in ner for i in ids], dtype=np.int16),
        dep=np.repeat(np.asarray(dep, dtype=np.int16), lengths),
    )


@dataclass(frozen=True)
class LineAnnotations:
    """The labels of lines joined by newlines (``"\\n".join(lines)``), as
    :meth:`JiebaAnnotator.label_lines` / :meth:`ConllAnnotator.label_lines` return them.

    ``labels`` is int16 ``[3, len(text)]`` (rows in :data:`TASKS` order; -1 on the newlines,
    on unknown labels and on every character of a line the annotator could not label),
    ``word_starts`` is bool ``[len(text)]`` (True where one of the annotator's words starts;
    False all along an unannotated line) and ``annotated`` is bool ``[len(lines)]``.
    """

    labels: np.ndarray
    word_starts: np.ndarray
    annotated: np.ndarray

    @property
    def unannotated(self) -> int:
        """The number of lines the annotator could not label."""
        return int((~self.annotated).sum())


def _join_lines(lines: Sequence[str], annotations: Sequence[Annotation | None]) -> LineAnnotations:
    """One LineAnnotations from per-line Annotations (None = the line could not be labelled)."""
    size = sum(map(len, lines)) + max(len(lines) - 1, 0)
    labels = np.full((len(TASKS), size), UNKNOWN, dtype=np.int16)
    starts = np.zeros(size, dtype=bool)
    annotated = np.zeros(len(lines), dtype=bool)
    offset = 0
    for k, (line, annotation) in enumerate(zip(lines, annotations, strict=True)):
        if annotation is not None:
            end = offset + len(line)
            for row, task in enumerate(TASKS):
                labels[row, offset:end] = annotation.labels(task)
            starts[offset:end] = annotation.word_starts
            annotated[k] = True
        offset += len(line) + 1
    return LineAnnotations(labels, starts, annotated)


def _without_spaces(text: str) -> str:
    return "".join(text.split())


def _words_from_starts(text: str, starts: np.ndarray) -> list[str]:
    cuts = [*np.flatnonzero(starts).tolist(), len(text)]
    if not cuts or cuts[0] != 0:
        cuts.insert(0, 0)
    return [text[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


def _slice_annotation(annotation: Annotation, start: int, end: int) -> Annotation:
    """The characters ``start:end`` of an Annotation (a word cut at the edge stays a word)."""
    starts = annotation.word_starts[start:end].copy()
    if len(starts):
        starts[0] = True
    text = annotation.text[start:end]
    return Annotation(text=text, words=_words_from_starts(text, starts),
                      pos=annotation.pos[start:end], ner=annotation.ner[start:end],
                      dep=annotation.dep[start:end])


def _spread_over(annotation: Annotation, text: str) -> Annotation:
    """``annotation`` (of ``text`` without its whitespace) laid over ``text``: each
    non-space character takes the next label, whitespace gets -1 and is a word of its own."""
    solid = np.fromiter((not c.isspace() for c in text), dtype=bool, count=len(text))
    labels = {}
    for task in TASKS:
        row = np.full(len(text), UNKNOWN, dtype=np.int16)
        row[solid] = annotation.labels(task)
        labels[task] = row
    starts = np.ones(len(text), dtype=bool)
    starts[solid] = annotation.word_starts
    return Annotation(text=text, words=_words_from_starts(text, starts), **labels)


class Annotator(Protocol):
    """Anything that labels a text: ``annotate(text) -> Annotation``, and lines joined by
    newlines: ``label_lines(lines) -> LineAnnotations``."""

    name: str

    def annotate(self, text: str) -> Annotation:
        """POS / NER / DEP ids of every character of ``text``."""
        ...

    def label_lines(self, lines: list[str]) -> LineAnnotations:
        """Labels and word starts of ``"\\n".join(lines)``."""
        ...

    def load(self) -> None:
        """Load what the annotator needs now (else at the first text)."""
        ...


@lru_cache(maxsize=1)
def _posseg() -> Any:
    """jieba.posseg, initialised, with jieba's INFO logging silenced."""
    import jieba
    import jieba.posseg

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba.posseg


class JiebaAnnotator:
    """POS and NER from ``jieba.posseg`` (accurate mode, HMM on); DEP is unknown (-1).

    POS: every character of a word gets :func:`jieba_pos_id` of the word's flag
    (:data:`JIEBA_TO_LTP_POS`). NER: nr/nrfg/nrt words are persons (Nh), ns places (Ns),
    nt organisations (Ni), tagged S (one character) or B I* E over the word's characters;
    every other character is O.
    """

    name = "jieba"

    def __init__(self, hmm: bool = True) -> None:
        self.hmm = hmm

    def pairs(self, text: str) -> list[tuple[str, str]]:
        """``jieba.posseg``'s (word, flag) pairs of ``text``."""
        return [(p.word, p.flag) for p in _posseg().cut(text, HMM=self.hmm)]

    def annotate(self, text: str) -> Annotation:
        """The labels of ``text``'s characters."""
        pairs = self.pairs(text)
        words = [w for w, _ in pairs]
        pos = [jieba_pos_id(w, f) for w, f in pairs]
        ner = [bies_ids(JIEBA_TO_LTP_NER.get(f), len(w)) for w, f in pairs]
        return _from_words(words, pos, ner, [UNKNOWN] * len(words))

    def load(self) -> None:
        """Initialise jieba.posseg now (its dictionary and HMM tables)."""
        _posseg()

    def label_lines(self, lines: list[str]) -> LineAnnotations:
        """The labels of ``"\\n".join(lines)``: one ``posseg`` pass over the joined text.

        A newline ends jieba's blocks, so each line gets the labels :meth:`annotate` gives
        it alone; the newlines get -1. Should the words not concatenate to the text, or a
        word cross a newline, each line is annotated alone; a line whose words still do not
        concatenate to it is unannotated (all -1).
        """
        text = "\n".join(lines)
        try:
            joined = self.annotate(text)
        except ValueError:
            joined = None
        if joined is not None:
            lengths = np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))
            newlines = (np.cumsum(lengths + 1) - 1)[:-1]
            after = newlines[newlines + 1 < len(text)] + 1
            if joined.word_starts[newlines].all() and joined.word_starts[after].all():
                labels = np.stack([joined.labels(task) for task in TASKS])
                labels[:, newlines] = UNKNOWN
                return LineAnnotations(labels, joined.word_starts.copy(),
                                       np.ones(len(lines), dtype=bool))
        return _join_lines(lines, [self._annotate_or_none(line) for line in lines])

    def _annotate_or_none(self, line: str) -> Annotation | None:
        try:
            return self.annotate(line)
        except ValueError:  # posseg's words do not concatenate to the line
            return None


_CONLL_COLUMNS = "ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC"
_RANGE_ID = re.compile(r"\d+-\d+")
_EMPTY_ID = re.compile(r"\d+\.\d+")
_NE_TAG = re.compile(r"([SBIE])-(\w+)")


def _reencode_hint(path: Path) -> str:
    return f"re-encode {path.name} as UTF-8 (e.g. iconv -f GB18030 -t UTF-8)"


class ConllAnnotator:
    """Labels read from a CoNLL-U or CoNLL-X file (10 tab-separated columns per word).

    ``ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC`` (CoNLL-X: ``ID FORM LEMMA CPOSTAG
    POSTAG FEATS HEAD DEPREL PHEAD PDEPREL``; same positions). Lines starting with ``#``
    are comments, multiword-token ranges (``1-2``) and empty nodes (``1.1``) are skipped, a
    blank line ends a sentence. Per word:

    * DEP: DEPREL, upper-cased, when one of :data:`DEP_LABELS`, else -1 (one warning per
      file lists the relations that are not);
    * POS: XPOS (POSTAG) when one of :data:`POS_LABELS`, else UPOS (CPOSTAG) when it is,
      else -1;
    * NER: ``NE=S-Ns`` (LTP's word-level BIES tag) in MISC, spread over the characters by
      :func:`bies_ids`; ``NE=O`` is O; no ``NE=`` entry (or an unknown tag) is -1.

    Iterating yields one :class:`Annotation` per sentence (text = the FORMs joined without
    spaces); :meth:`annotate` looks a sentence up by its text. Malformed files raise
    :class:`~zhplm.errors.DataError` naming ``file:line`` and the fix.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"conll:{self.path}"
        if not self.path.is_file():
            raise DataError(f"CoNLL file {self.path} does not exist or is not a file; pass "
                            "the path of a CoNLL-U / CoNLL-X file as conll:PATH")
        self._index: dict[str, Annotation] | None = None

    def __iter__(self) -> Iterator[Annotation]:
        return self.sentences()

    def sentences(self) -> Iterator[Annotation]:
        """One Annotation per sentence of the file, in order."""
        unknown: dict[str, int] = {}
        words: list[str] = []
        rows: list[tuple[int, list[int], int]] = []  # (pos, ner ids, dep) per word
        with open(self.path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                where = f"{self.path}:{lineno}"
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as err:
                    raise DataError(f"{where}: invalid UTF-8 at byte {err.start} of the line "
                                    f"({err.reason}); {_reencode_hint(self.path)}") from None
                if lineno == 1:
                    line = line.removeprefix("\ufeff")
                if not line.strip():
                    if words:
                        yield _from_words(words, *zip(*rows, strict=True))
                        words, rows = [], []
                    continue
                if line.startswith("#"):
                    continue
                row = self._parse(line, where, len(words), unknown)
                if row is not None:
                    words.append(row[0])
                    rows.append(row[1:])
        if words:
            yield _from_words(words, *zip(*rows, strict=True))
        if unknown:
            listed = ", ".join(f"{rel} ({n})" for rel, n in
                               sorted(unknown.items(), key=lambda kv: -kv[1]))
            logger.warning("%s: dependency relations outside LERT's 14 (%s) are labelled "
                           "unknown (-1): %s", self.path, " ".join(DEP_LABELS), listed)

    @staticmethod
    def _parse(line: str, where: str, n_words: int,
               unknown: dict[str, int]) -> tuple[str, int, list[int], int] | None:
        """(FORM, pos id, NER ids, dep id) of one word line; None for ranges / empty nodes."""
        cols = line.split("\t")
        if len(cols) != 10 and "\t" not in line:
            cols = line.split()  # CoNLL-X written with spaces
        if len(cols) != 10:
            raise DataError(f"{where}: {len(cols)} columns, expected 10 ({_CONLL_COLUMNS}); "
                            "separate the columns with tabs, '_' for empty fields")
        wid, form, _, upos, xpos, _, head, deprel, _, misc = cols
        if _RANGE_ID.fullmatch(wid) or _EMPTY_ID.fullmatch(wid):
            return None
        if not wid.isdecimal():
            raise DataError(f"{where}: ID {wid!r} is not an integer (nor a range 1-2 or an "
                            "empty node 1.1); number the words of each sentence 1, 2, ...")
        if int(wid) != n_words + 1:
            raise DataError(f"{where}: word ID {wid} where {n_words + 1} was expected; number "
                            "the words of each sentence 1, 2, ... and end every sentence "
                            "with a blank line")
        if not head.isdecimal():
            raise DataError(f"{where}: HEAD {head!r} is not an integer; give the ID of the "
                            "head word (0 for the root)")
        if not form:
            raise DataError(f"{where}: empty FORM; give the word in column 2")
        pos = POS_IDS.get(xpos, POS_IDS.get(upos, UNKNOWN))
        rel = deprel.upper()
        dep = DEP_IDS.get(rel, UNKNOWN)
        if dep == UNKNOWN:
            unknown[deprel] = unknown.get(deprel, 0) + 1
        ner = [UNKNOWN] * len(form)
        for item in misc.split("|"):
            if item.startswith("NE="):
                value = item[3:]
                match = _NE_TAG.fullmatch(value)
                if value == "O":
                    ner = bies_ids(None, len(form))
                elif match and match.group(2) in NER_ENTITIES:
                    ner = bies_ids(match.group(2), len(form), match.group(1))
        return form, pos, ner, dep

    def load(self) -> None:
        """Read the file now and index its sentences by text (whitespace removed). A
        sentence that `zhplm preprocess` would split in several (``split_sentences``: a
        parsed corpus *line*) is also indexed under each of its pieces."""
        if self._index is not None:
            return
        from zhplm.data.documents import split_sentences

        index: dict[str, Annotation] = {}
        for annotation in self.sentences():
            index.setdefault(_without_spaces(annotation.text), annotation)
            pieces = split_sentences(annotation.text)
            if len(pieces) > 1:
                offset = 0
                for piece in pieces:
                    start = annotation.text.find(piece, offset)
                    if start < 0:
                        break
                    offset = start + len(piece)
                    index.setdefault(_without_spaces(piece),
                                     _slice_annotation(annotation, start, offset))
        self._index = index

    def lookup(self, text: str) -> Annotation | None:
        """The Annotation of ``text``: the file's sentence (or piece of one) whose FORMs join
        to ``text`` once whitespace is removed (whitespace in ``text`` is labelled -1); None
        if there is none."""
        self.load()
        assert self._index is not None
        found = self._index.get(_without_spaces(text))
        if found is None or found.text == text:
            return found
        return _spread_over(found, text)

    def label_lines(self, lines: list[str]) -> LineAnnotations:
        """The labels of ``"\\n".join(lines)``: each line is looked up by its text; a line
        that is no sentence of the file is unannotated (all -1), not an error."""
        return _join_lines(lines, [self.lookup(line) for line in lines])

    def annotate(self, text: str) -> Annotation:
        """The Annotation of the file's sentence whose text is ``text``."""
        found = self.lookup(text)
        if found is None:
            raise InputError(f"{self.path} has no sentence whose FORMs join to {text[:40]!r}; "
                             "annotate the texts of this file (iterate the annotator), or use "
                             "the 'jieba' annotator for other text")
        return found


ANNOTATORS = ("jieba", "conll:PATH")


def build_annotator(spec: str) -> JiebaAnnotator | ConllAnnotator:
    """An annotator from its spec: ``"jieba"`` or ``"conll:PATH"``."""
    if spec == "jieba":
        return JiebaAnnotator()
    if spec.startswith("conll:") and spec[len("conll:"):]:
        return ConllAnnotator(spec[len("conll:"):])
    raise InputError(f"annotator {spec!r} is unknown; use 'jieba' or 'conll:PATH' (a "
                     "CoNLL-U / CoNLL-X file)")
