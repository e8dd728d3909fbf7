"""Corpus files -> documents, each a list of sentences (strings).

:func:`expand_inputs` turns what a user names (files, directories, glob patterns) into the
list of corpus files, in a deterministic order. :func:`iter_documents` reads UTF-8 ``.txt``
files (one document per line, or blank-line separated documents with one sentence per line)
and ``.jsonl`` files (a ``"text"`` field per line); :func:`split_sentences` splits Chinese and
English paragraphs into sentences. Bad input is skipped and counted (:func:`new_stats`), or
raises :class:`DataError` under ``strict``. Files are read in binary and decoded line by line,
so the bytes read so far come for free (:class:`ReadBytes`: a progress bar's position).
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from zhplm.errors import DataError, InputError

__all__ = [
    "CORPUS_SUFFIXES",
    "LAYOUTS",
    "SKIP_KEYS",
    "Layout",
    "ReadBytes",
    "check_corpus_file",
    "expand_inputs",
    "iter_documents",
    "new_stats",
    "split_sentences",
]

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
PathLike = str | os.PathLike[str]

_JSONL_SUFFIXES = (".jsonl", ".ndjson")
CORPUS_SUFFIXES = (".txt", *_JSONL_SUFFIXES)
"""The files taken from a directory (or a pattern matching directories), case-insensitive."""
_BOM = b"\xef\xbb\xbf"
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


def check_corpus_file(path: Path) -> None:
    """Raise :class:`DataError` unless ``path`` is a file."""
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise DataError(f"corpus file {path} {what}; pass existing UTF-8 .txt or .jsonl files")


_GLOB_CHARACTERS = re.compile(r"[*?[]")


def _path_key(path: Path) -> tuple[str, ...]:
    return path.parts


def _corpus_files_under(directory: Path) -> list[Path]:
    """The corpus files (:data:`CORPUS_SUFFIXES`) under ``directory``, recursively, sorted by
    path; hidden files and directories (a name starting with ".") are left out."""
    files = [p for p in directory.rglob("*")
             if p.suffix.lower() in CORPUS_SUFFIXES and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(directory).parts)]
    return sorted(files, key=_path_key)


def expand_inputs(inputs: PathLike | Iterable[PathLike]) -> list[Path]:
    """The corpus files that ``inputs`` name, in order: each argument is

    * a file: taken as it is (any name; ``.jsonl`` / ``.ndjson`` are read as JSON lines);
    * a directory: its ``.txt`` / ``.jsonl`` / ``.ndjson`` files, recursively, sorted by path
      (hidden ones left out);
    * a glob pattern that names no existing path (``data/*.txt``, ``corpus/**/*.txt``; ``**``
      crosses directories): the files it matches, sorted by path (a matched directory
      contributes its corpus files as above).

    The order is deterministic, so the same arguments always build the same dataset.

    Raises:
        InputError: no inputs.
        DataError: a path that does not exist, a directory without corpus files,
            or a pattern that matches nothing; the message names the argument and the fix.
    """
    arguments = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    if not arguments:
        raise InputError("no corpus files given; pass .txt or .jsonl files, directories of "
                        "them, or glob patterns like 'data/*.txt'")
    files: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = _corpus_files_under(path)
            if not found:
                raise DataError(f"corpus directory {path} holds no .txt or .jsonl file (hidden "
                                "ones are skipped); pass the files themselves, or a glob "
                                "pattern that matches them")
            files += found
        elif _GLOB_CHARACTERS.search(str(argument)):
            matches = sorted((Path(m) for m in glob.glob(str(argument), recursive=True)),
                             key=_path_key)
            found = [f for m in matches
                     for f in ([m] if m.is_file() else _corpus_files_under(m))]
            if not found:
                raise DataError(f"corpus pattern {str(argument)!r} matches no file; check the "
                                "pattern (quote it so that the shell does not expand it, use "
                                "'**' to cross directories) or pass the files themselves")
            files += found
        else:
            check_corpus_file(path)  # raises: does not exist
    return files


class ReadBytes:
    """The bytes of corpus files read so far (``total``), for a progress bar: pass one to
    :func:`iter_documents`; it counts every byte of a file once the file is read to its end."""

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total = 0


def _lines(path: Path, strict: bool, stats: dict[str, int],
           read: ReadBytes | None = None) -> Iterator[tuple[int, str]]:
    """(line number, text without the line break) of each validly encoded line of ``path``;
    the bytes of each line are added to ``read`` as it is read.

    A line that is not UTF-8 is counted in ``stats["invalid_utf8"]`` and skipped, or under
    ``strict`` raises :class:`DataError` with the line number and the file byte offset.
    """
    offset = 0
    if read is None:
        read = ReadBytes()  # counted into a throwaway: one code path
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            start = offset
            offset += len(raw)
            read.total += len(raw)
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


def _json_text(line: str) -> str:
    """The ``"text"`` of a JSON-lines record; ``ValueError`` says what is wrong with it."""
    try:
        record = json.loads(line)
    except ValueError as err:
        raise ValueError(f"invalid JSON ({err})") from None
    if not (isinstance(record, dict) and isinstance(record.get("text"), str)):
        raise ValueError('not a JSON object with a string "text" field')
    return record["text"]


def _jsonl_documents(
    path: Path, lines: Iterable[tuple[int, str]], strict: bool, stats: dict[str, int]
) -> Iterator[list[str]]:
    for lineno, line in lines:
        if not line.strip():
            stats["empty_lines"] += 1
            continue
        try:
            text = _json_text(line)
        except ValueError as problem:
            if strict:
                raise DataError(
                    f"{path}:{lineno}: {problem}; write one object per line like "
                    '{"text": "..."}, or drop --strict to skip and count such lines'
                ) from None
            stats["malformed_json"] += 1
            continue
        sentences = [s for paragraph in text.splitlines() for s in split_sentences(paragraph)]
        if sentences:
            yield sentences
        else:
            stats["empty_documents"] += 1


def iter_documents(
    path: PathLike,
    strict: bool = False,
    stats: dict[str, int] | None = None,
    layout: Layout = "auto",
    read: ReadBytes | None = None,
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
    :class:`DataError` when the iterator starts. ``read`` (optional) counts the bytes read.
    """
    if layout not in LAYOUTS:
        raise InputError(f"layout={layout!r}; use one of {', '.join(LAYOUTS)}")
    path = Path(path)
    stats = new_stats() if stats is None else stats
    for key in SKIP_KEYS:
        stats.setdefault(key, 0)
    check_corpus_file(path)
    lines = _lines(path, strict, stats, read)
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
