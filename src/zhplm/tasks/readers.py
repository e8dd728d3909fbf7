"""Readers from downstream task files to examples (`zhplm.tasks.examples`).

Formats (all UTF-8; a UTF-8 byte-order mark is accepted and dropped):

* **TSV** (:func:`read_tsv`) -- UER-py / Chinese-ELECTRA layout: a header line naming the
  tab-separated columns ``label``, ``text_a`` and optionally ``text_b``; other columns are
  allowed (``qid`` or ``id`` becomes the example's guid).  No ``label`` column = unlabelled.
* **JSON lines** (:func:`read_jsonl`) -- CLUE layout: one JSON object per line, keys
  ``sentence1``/``sentence2``/``label``/``id`` by default (see :func:`read_jsonl` for the
  ``sentence``/``text`` fallback and ``field_map``).
* **NER** (:func:`read_ner`) -- "char TAG" lines with blank lines between sentences (People's
  Daily / MSRA), or UER-py's TSV with a ``text_a``/``label`` header and space-separated tokens
  and tags.  Detected from the first non-blank line.
* **SQuAD v1.1 JSON** (:func:`read_squad`) -- also CMRC 2018 and DRCD.

Every problem with a file raises :class:`~zhplm.errors.DataError` whose message starts with
``path:LINE:`` and says which field is wrong and how to fix it; bad arguments raise
:class:`~zhplm.errors.InputError`.  Every example's ``source`` is ``"path:LINE"`` (the line
the example starts on) or, for SQuAD, ``"path:QID"``.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError, InputError
from .examples import QAExample, TaggingExample, TextExample

logger = logging.getLogger("zhplm")

__all__ = [
    "LABEL_KINDS",
    "NER_SCHEMES",
    "TASKS",
    "check_labels",
    "collect_labels",
    "read_jsonl",
    "read_ner",
    "read_squad",
    "read_task_file",
    "read_tsv",
]

PathLike = str | os.PathLike[str]
Example = TextExample | TaggingExample | QAExample

LABEL_KINDS: tuple[str, ...] = ("class", "regression", "none")
"""Valid ``label_kind`` values: class label (``str``), regression target (``float``), none."""

NER_SCHEMES: dict[str, frozenset[str]] = {
    "BIO": frozenset("BI"),
    "BIOES": frozenset("BIES"),
}
"""Tag schemes :func:`read_ner` can validate, with the prefixes each allows (plus ``O``)."""

TASKS: tuple[str, ...] = ("classification", "pair", "regression", "ner", "tagging", "mrc")
"""Task names :func:`read_task_file` understands."""

DEFAULT_FIELD_MAP: dict[str, str] = {
    "first_sequence": "sentence1",
    "second_sequence": "sentence2",
    "label": "label",
    "id": "id",
}
"""CLUE key of each role in a JSON-lines file (override per role with ``field_map``)."""

_FIRST_SEQUENCE_FALLBACKS = ("sentence", "text")
_GUID_COLUMNS = ("qid", "id")
_TSV_EXTENSIONS = (".tsv", ".txt")
_JSONL_EXTENSIONS = (".jsonl", ".json")
_NER_EXTENSIONS = (".txt", ".tsv", ".bio", ".bioes", ".bmes", ".char", ".conll", "")
_BOM = b"\xef\xbb\xbf"
_FAKE_ANSWER = re.compile(r"FAKE_ANSWER_\d+")
_MAX_LISTED = 60


# --------------------------------------------------------------------------- helpers


def _name(path: PathLike) -> str:
    return os.fspath(path)


def _show(value: object, limit: int = 40) -> str:
    """``repr`` of a value, shortened to about ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_text(path: PathLike) -> str:
    """The whole file as text: UTF-8, BOM dropped; a DataError names the bad line."""
    name = _name(path)
    try:
        data = Path(name).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{name}: no such file; check the path") from None
    except IsADirectoryError:
        raise DataError(f"{name}: is a directory; pass the path of a data file") from None
    except OSError as exc:
        raise DataError(f"{name}: cannot read the file ({exc.strerror})") from None
    skipped = 0
    if data.startswith(_BOM):
        data, skipped = data[len(_BOM) :], len(_BOM)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.start + 4]
        utf16 = skipped == 0 and data[:2] in (b"\xff\xfe", b"\xfe\xff")
        hint, source = ("the file looks like UTF-16; ", "UTF-16") if utf16 else ("", "GBK")
        raise DataError(
            f"{name}:{line}: invalid UTF-8 at byte {exc.start + skipped} of the file "
            f"(bytes {bad!r}: {exc.reason}); {hint}task files must be UTF-8 -- re-encode it, "
            f"e.g. `iconv -f {source} -t UTF-8 {name} > fixed.txt`"
        ) from None


def _lines(text: str) -> list[str]:
    """Split on ``\\n`` only (not on the other characters ``str.splitlines`` treats as line
    breaks, which can occur inside a text), dropping a ``\\r`` before each break."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _check_label_kind(label_kind: str) -> None:
    if label_kind not in LABEL_KINDS:
        raise InputError(f"unknown label_kind {label_kind!r}; use one of: {', '.join(LABEL_KINDS)}")


def _parse_float(value: str, where: str, field: str) -> float:
    """A finite regression target from its text, or a DataError at ``where``."""
    text = value.strip()
    try:
        if "_" in text:
            raise ValueError(text)
        number = float(text)
    except ValueError:
        raise DataError(
            f"{where}: {field} {_show(value)} is not a number; a regression file needs a "
            f"number such as 3.5 in every {field} (or read it with label_kind='class')"
        ) from None
    if not math.isfinite(number):
        raise DataError(
            f"{where}: {field} {_show(value)} is not a finite number; give a finite target"
        )
    return number


def _header(name: str, lineno: int, line: str, expected: str) -> list[str]:
    """Column names of a TSV header line; no empty or duplicate names."""
    columns = [column.strip() for column in line.split("\t")]
    for column in columns:
        if not column:
            raise DataError(
                f"{name}:{lineno}: the header has an empty column name (columns found: "
                f"{columns}); remove the stray tab -- expected columns {expected}"
            )
        if columns.count(column) > 1:
            raise DataError(
                f"{name}:{lineno}: column {column!r} appears twice in the header {columns}; "
                "give every column a distinct name"
            )
    return columns


def _split_row(name: str, lineno: int, line: str, columns: Sequence[str]) -> list[str]:
    fields = line.split("\t")
    if len(fields) != len(columns):
        raise DataError(
            f"{name}:{lineno}: found {len(fields)} tab-separated field(s), expected "
            f"{len(columns)} as in the header ({', '.join(columns)}); a text must not contain "
            "a tab or a line break -- replace them with spaces"
        )
    return fields


def _guid_column(columns: Sequence[str]) -> str | None:
    return next((column for column in _GUID_COLUMNS if column in columns), None)


def _row_guid(name: str, lineno: int, fields: list[str], columns: list[str], index: int) -> str:
    column = _guid_column(columns)
    if column is None:
        return str(index)
    guid = fields[columns.index(column)].strip()
    if not guid:
        raise DataError(
            f"{name}:{lineno}: empty {column}; give every row a value in the {column} column"
        )
    return guid


# --------------------------------------------------------------------------- TSV


def read_tsv(path: PathLike, *, label_kind: str = "class") -> list[TextExample]:
    """Read a TSV file with a header line (UER-py / Chinese-ELECTRA layout).

    Columns: ``text_a`` (required), ``label`` and ``text_b`` (optional); other columns are
    allowed and ignored, except that ``qid`` (else ``id``) becomes the guid -- without them the
    guid is the example's index (``"0"``, ``"1"``, ...).  Blank lines are skipped.  Texts are
    kept exactly as written.

    Args:
        path: the file.
        label_kind: ``"class"`` keeps the label as a (stripped) ``str``; ``"regression"``
            parses it as a finite ``float``; ``"none"`` ignores the label column.  A file
            without a ``label`` column gives ``label=None`` whatever the kind.

    Raises:
        DataError: empty file, a header without ``text_a``, a row with the wrong number of
            fields, an empty ``text_a`` / ``text_b`` / label / id, a non-number regression
            target, or no rows at all.
        InputError: unknown ``label_kind``.
    """
    _check_label_kind(label_kind)
    name = _name(path)
    numbered = [(i + 1, line) for i, line in enumerate(_lines(_read_text(path))) if line.strip()]
    expected = "'text_a' (required), 'label' and 'text_b' (optional), e.g. 'label\\ttext_a'"
    if not numbered:
        raise DataError(
            f"{name}:1: the file is empty; expected a header line naming the columns "
            f"({expected}) and then one example per line"
        )
    header_line, header = numbered[0]
    columns = _header(name, header_line, header, expected)
    if "text_a" not in columns:
        raise DataError(
            f"{name}:{header_line}: the header has no 'text_a' column (columns found: "
            f"{', '.join(_show(c, 30) for c in columns)}); expected columns {expected}.  "
            "The first line must be the header -- add one if the file has none"
        )
    col_a = columns.index("text_a")
    col_b = columns.index("text_b") if "text_b" in columns else None
    col_label = columns.index("label") if "label" in columns and label_kind != "none" else None

    examples: list[TextExample] = []
    for lineno, line in numbered[1:]:
        where = f"{name}:{lineno}"
        fields = _split_row(name, lineno, line, columns)
        text_a = fields[col_a]
        if not text_a.strip():
            raise DataError(f"{where}: empty text_a; fill in the text or remove the row")
        text_b = None
        if col_b is not None:
            text_b = fields[col_b]
            if not text_b.strip():
                raise DataError(
                    f"{where}: empty text_b (the header has a text_b column, so every row "
                    "needs a second text); fill it in or remove the row"
                )
        label: str | float | None = None
        if col_label is not None:
            raw = fields[col_label]
            if not raw.strip():
                raise DataError(
                    f"{where}: empty label; give every row a label (or drop the label "
                    "column for an unlabelled file)"
                )
            label = raw.strip() if label_kind == "class" else _parse_float(raw, where, "label")
        guid = _row_guid(name, lineno, fields, columns, len(examples))
        examples.append(TextExample(guid, text_a, text_b, label, where))
    if not examples:
        raise DataError(
            f"{name}:{header_line}: the file has a header but no examples; add one example "
            "per line after the header"
        )
    return examples


# --------------------------------------------------------------------------- JSON lines


def _check_field_map(field_map: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(field_map, Mapping):
        raise InputError(
            f"field_map must be a mapping from role to key, got {type(field_map).__name__}"
        )
    unknown = [role for role in field_map if role not in DEFAULT_FIELD_MAP]
    if unknown:
        raise InputError(
            f"unknown field_map role(s) {', '.join(map(repr, unknown))}; roles are: "
            f"{', '.join(DEFAULT_FIELD_MAP)}"
        )
    for role, key in field_map.items():
        if not isinstance(key, str) or not key:
            raise InputError(f"field_map[{role!r}] must be a non-empty key name, got {key!r}")
    return dict(field_map)


def _json_text(where: str, record: dict[str, Any], key: str, role: str) -> str:
    value = record[key]
    if not isinstance(value, str):
        raise DataError(
            f"{where}: field {key!r} ({role}) must be a string, found "
            f"{type(value).__name__} {_show(value)}; map {role} to a text field with field_map"
        )
    if not value.strip():
        raise DataError(
            f"{where}: empty text in field {key!r} ({role}); fill it in or drop the line"
        )
    return value


def _json_label(where: str, value: Any, key: str, label_kind: str) -> str | float:
    if value is None:
        raise DataError(
            f"{where}: label field {key!r} is null; give a label, or read an unlabelled file "
            "with label_kind='none'"
        )
    if label_kind == "class":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise DataError(
                f"{where}: label field {key!r} must be a string or an integer, found "
                f"{type(value).__name__} {_show(value)}; for numeric targets use "
                "label_kind='regression'"
            )
        label = str(value).strip()
        if not label:
            raise DataError(f"{where}: empty label in field {key!r}; give every line a label")
        return label
    if isinstance(value, str):
        return _parse_float(value, where, f"label field {key!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(
            f"{where}: label field {key!r} {_show(value)} is not a number; a regression file "
            "needs a number in every label"
        )
    if not math.isfinite(value):
        raise DataError(f"{where}: label field {key!r} is not a finite number; fix the target")
    return float(value)


def read_jsonl(
    path: PathLike,
    *,
    field_map: Mapping[str, str] | None = None,
    label_kind: str = "class",
) -> list[TextExample]:
    """Read CLUE-style JSON lines: one JSON object per line; blank lines are skipped.

    ``field_map`` maps our roles (``first_sequence``, ``second_sequence``, ``label``, ``id``)
    to the file's keys; roles it does not name keep the defaults of :data:`DEFAULT_FIELD_MAP`
    (``sentence1``, ``sentence2``, ``label``, ``id``).

    Which fields are required:

    * ``first_sequence`` always.  Fallback (only when ``field_map`` is None): if the first
      object has no ``sentence1``, its ``sentence`` key (TNEWS, IFLYTEK), else its ``text``
      key, is used as ``first_sequence`` for the whole file.
    * a role named in ``field_map`` is required on every line;
    * a default role (``sentence2``, ``label``, ``id``) is optional, decided by the first
      object: if the first object has it, every line must have it; if not, it is ignored
      (``text_b=None`` / ``label=None`` / guid = the example's index).

    Labels may be integers or strings in the file; with ``label_kind="class"`` they become
    ``str`` (``0`` -> ``"0"``); ``"regression"`` takes numbers (or numeric strings) as
    ``float``; ``"none"`` ignores labels.  ``id`` values may be strings or integers.

    Raises:
        DataError: malformed JSON (file:line and the JSON error), a line that is not an
            object, a missing field (the message names it and the keys present), a text that
            is not a string or is empty, a bad label, or no objects at all.
        InputError: bad ``field_map`` or ``label_kind``.
    """
    _check_label_kind(label_kind)
    explicit = _check_field_map(field_map) if field_map is not None else {}
    keys = {**DEFAULT_FIELD_MAP, **explicit}
    name = _name(path)
    required: dict[str, int | None] = {}  # role -> line of the first object that had it
    examples: list[TextExample] = []
    for index, line in enumerate(_lines(_read_text(path))):
        lineno = index + 1
        where = f"{name}:{lineno}"
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            hint = ""
            if not examples and line.strip() in ("[", "{"):
                hint = (
                    " -- the file looks like one JSON document over several lines; convert "
                    "it to one object per line"
                )
            raise DataError(
                f"{where}: malformed JSON at column {exc.colno}: {exc.msg}; every line must "
                f"be one complete JSON object{hint}"
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                f"{where}: expected a JSON object ({{...}}), found a JSON "
                f"{type(record).__name__}; every line must be one object"
            )
        if not required:
            if field_map is None and keys["first_sequence"] not in record:
                for fallback in _FIRST_SEQUENCE_FALLBACKS:
                    if fallback in record:
                        keys["first_sequence"] = fallback
                        break
            required["first_sequence"] = None
            for role in ("second_sequence", "label", "id"):
                if role in explicit:
                    required[role] = None
                elif keys[role] in record:
                    required[role] = lineno
        for role, first_line in required.items():
            key = keys[role]
            if key in record:
                continue
            present = ", ".join(map(repr, record)) or "none"
            if first_line is not None:
                fix = f"line {first_line} has it, so every line must"
            elif role in explicit:
                fix = f"field_map names {key!r} as {role}; fix the map or the file"
            else:
                fix = f"pass field_map={{{role!r}: KEY}} naming the file's text key"
            raise DataError(
                f"{where}: missing field {key!r} ({role}); keys present: {present}; {fix}"
            )
        text_a = _json_text(where, record, keys["first_sequence"], "first_sequence")
        text_b = None
        if "second_sequence" in required:
            text_b = _json_text(where, record, keys["second_sequence"], "second_sequence")
        label: str | float | None = None
        if "label" in required and label_kind != "none":
            label = _json_label(where, record[keys["label"]], keys["label"], label_kind)
        guid = str(len(examples))
        if "id" in required:
            raw_id = record[keys["id"]]
            if isinstance(raw_id, bool) or not isinstance(raw_id, (int, str)) or raw_id == "":
                raise DataError(
                    f"{where}: id field {keys['id']!r} must be a non-empty string or an "
                    f"integer, found {_show(raw_id)}"
                )
            guid = str(raw_id)
        examples.append(TextExample(guid, text_a, text_b, label, where))
    if not examples:
        raise DataError(f"{name}:1: the file is empty; expected one JSON object per line")
    return examples


# --------------------------------------------------------------------------- NER


def _check_scheme(scheme: str | None) -> str | None:
    if scheme is None:
        return None
    if not isinstance(scheme, str) or scheme.upper() not in NER_SCHEMES:
        raise InputError(
            f"unknown tag scheme {scheme!r}; use one of: {', '.join(NER_SCHEMES)} "
            "(or None to accept any tag)"
        )
    return scheme.upper()


def _check_tag(tag: str, scheme: str | None, where: str) -> None:
    if scheme is None or tag == "O":
        return
    prefixes = NER_SCHEMES[scheme]
    if len(tag) > 2 and tag[1] == "-" and tag[0] in prefixes and tag[2:].strip():
        return
    allowed = ", ".join(f"{p}-TYPE" for p in "BIES" if p in prefixes)
    hint = ""
    if tag[:2] in ("E-", "S-") and scheme == "BIO":
        hint = "; the file looks like BIOES -- read it with scheme='BIOES'"
    elif tag[:2] == "M-":
        hint = "; for BMES tags rename M- to I- and read with scheme='BIOES'"
    raise DataError(
        f"{where}: tag {_show(tag)} is not a {scheme} tag; expected 'O' or {allowed}{hint}"
    )


def _read_ner_tsv(
    name: str, numbered: list[tuple[int, str]], scheme: str | None
) -> list[TaggingExample]:
    expected = "'text_a' and 'label' (UER-py NER layout)"
    header_line, header = numbered[0]
    columns = _header(name, header_line, header, expected)
    col_text = columns.index("text_a")
    col_label = columns.index("label") if "label" in columns else None
    examples: list[TaggingExample] = []
    for lineno, line in numbered[1:]:
        where = f"{name}:{lineno}"
        fields = _split_row(name, lineno, line, columns)
        tokens = tuple(fields[col_text].split())
        if not tokens:
            raise DataError(f"{where}: empty text_a; give space-separated tokens or remove the row")
        tags = None
        if col_label is not None:
            tags = tuple(fields[col_label].split())
            if len(tags) != len(tokens):
                raise DataError(
                    f"{where}: {len(tokens)} token(s) in text_a but {len(tags)} tag(s) in "
                    "label; give exactly one space-separated tag per token"
                )
            for tag in tags:
                _check_tag(tag, scheme, where)
        guid = _row_guid(name, lineno, fields, columns, len(examples))
        examples.append(TaggingExample(guid, tokens, tags, where))
    if not examples:
        raise DataError(
            f"{name}:{header_line}: the file has a header but no sentences; add one sentence "
            "per line after the header"
        )
    return examples


def _describe(fields: int) -> str:
    return "a char and a tag" if fields == 2 else "a char but no tag"


def _read_ner_columns(name: str, lines: list[str], scheme: str | None) -> list[TaggingExample]:
    examples: list[TaggingExample] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    mode: tuple[int, int] | None = None  # (fields per line, first line with that count)

    def flush() -> None:
        if tokens:
            tagged = tuple(tags) if mode is not None and mode[0] == 2 else None
            source = f"{name}:{start}"
            examples.append(TaggingExample(str(len(examples)), tuple(tokens), tagged, source))
            tokens.clear()
            tags.clear()

    for index, raw in enumerate(lines):
        lineno = index + 1
        where = f"{name}:{lineno}"
        if not raw.strip():
            flush()
            continue
        line = raw.rstrip()
        if "\t" in line:
            parts = line.split("\t")
            token = parts[0] if not parts[0].strip() else parts[0].strip()
            parts = [token] + [part.strip() for part in parts[1:]]
        else:
            parts = line.split()
        if len(parts) > 2 or any(not part for part in parts[1:]):
            raise DataError(
                f"{where}: expected 'char TAG' (2 fields separated by a space or tab), found "
                f"{len(parts)} field(s) in {_show(raw)}"
            )
        if mode is None:
            mode = (len(parts), lineno)
        elif len(parts) != mode[0]:
            raise DataError(
                f"{where}: this line has {_describe(len(parts))} but line {mode[1]} has "
                f"{_describe(mode[0])}; either every line is 'char TAG' (a labelled file) or "
                "every line is a single char (an unlabelled test file)"
            )
        if not tokens:
            start = lineno
        tokens.append(parts[0])
        if len(parts) == 2:
            _check_tag(parts[1], scheme, where)
            tags.append(parts[1])
    flush()
    return examples


def read_ner(path: PathLike, *, scheme: str | None = None) -> list[TaggingExample]:
    """Read a sequence-tagging (NER) file; the format is detected from its first non-blank line.

    * If that line, split on tabs, has a ``text_a`` column, the file is UER-py's NER TSV:
      a header (``text_a\\tlabel`` or ``label\\ttext_a``; ``qid``/``id`` columns allowed),
      then one sentence per line with space-separated tokens in ``text_a`` and as many
      space-separated tags in ``label``.  Without a ``label`` column, ``tags`` is None.
    * Otherwise it is the column format of People's Daily / MSRA NER: one ``char TAG`` per
      line (separated by a tab, or else by whitespace -- use tabs if a token is itself a
      whitespace character), a blank line between sentences.  A test file may give only the
      char on every line (``tags`` None); mixing the two kinds of line is an error.

    Args:
        path: the file.
        scheme: None accepts any non-empty tag (so POS or other tag sets read too);
            ``"BIO"`` / ``"BIOES"`` require every tag to be ``O`` or ``PREFIX-TYPE`` with a
            prefix of that scheme.

    Raises:
        DataError: empty file, a line with more than two fields, tagged and untagged lines
            mixed, token/tag counts that differ, a tag not in the scheme, a bad TSV row.
        InputError: unknown ``scheme``.
    """
    scheme = _check_scheme(scheme)
    name = _name(path)
    lines = _lines(_read_text(path))
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    if not numbered:
        raise DataError(
            f"{name}:1: the file is empty; expected 'char TAG' lines with blank lines between "
            "sentences, or a 'text_a\\tlabel' header and one sentence per line"
        )
    if "text_a" in (column.strip() for column in numbered[0][1].split("\t")):
        return _read_ner_tsv(name, numbered, scheme)
    return _read_ner_columns(name, lines, scheme)


# --------------------------------------------------------------------------- SQuAD


class _Located(dict):  # type: ignore[type-arg]
    """A JSON object that remembers the offset of its opening brace."""

    offset = 0


def _parse_located(text: str) -> Any:
    """Parse JSON with the pure-Python scanner, recording where every object starts.

    Slow, so only used after a problem was found, to turn a document path into a line."""
    decoder = json.JSONDecoder()

    def parse_object(s_and_end: tuple[str, int], *args: Any) -> tuple[_Located, int]:
        obj, end = json.decoder.JSONObject(s_and_end, *args)
        located = _Located(obj)
        located.offset = s_and_end[1] - 1
        return located, end

    decoder.parse_object = parse_object  # type: ignore[assignment]
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    return decoder.decode(text)


def _doc_path(steps: Sequence[str | int]) -> str:
    out = ""
    for step in steps:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out or "the document"


class _Squad:
    """Validation state of one SQuAD file: turns document paths into file lines on error."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        self._located: Any = None

    def line(self, steps: Sequence[str | int]) -> int:
        """Line of the innermost JSON object on ``steps`` (1 if it cannot be found)."""
        if self._located is None:
            self._located = _parse_located(self.text)
        node, offset = self._located, 0
        for step in steps:
            if isinstance(node, _Located):
                offset = node.offset
            try:
                node = node[step]
            except (KeyError, IndexError, TypeError):
                break
        else:
            if isinstance(node, _Located):
                offset = node.offset
        return self.text.count("\n", 0, offset) + 1

    def fail(self, steps: Sequence[str | int], message: str) -> DataError:
        return DataError(f"{self.name}:{self.line(steps)}: {_doc_path(steps)}: {message}")

    def get(self, node: Any, steps: list[str | int], key: str, kind: type,
            allow_empty: bool = False) -> Any:
        """``node[key]``, which must exist and be of ``kind`` (a string also non-blank,
        unless ``allow_empty``)."""
        if not isinstance(node, dict):
            raise self.fail(steps, f"expected a JSON object, found {type(node).__name__}")
        if key not in node:
            present = ", ".join(map(repr, node)) or "none"
            raise self.fail(
                steps,
                f"missing {key!r} (keys present: {present}); SQuAD layout is "
                '{"data": [{"paragraphs": [{"context": ..., "qas": [{"id": ..., '
                '"question": ..., "answers": [{"text": ..., "answer_start": ...}]}]}]}]}',
            )
        value = node[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise self.fail(
                steps,
                f"{key!r} must be a {'list' if kind is list else 'string'}, found "
                f"{type(value).__name__} {_show(value)}",
            )
        if kind is str and not value.strip() and not allow_empty:
            raise self.fail(steps, f"empty {key!r}; fill it in")
        return value


def _squad_answers(
    squad: _Squad, qa: dict[str, Any], steps: list[str | int], need_offsets: bool = True
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    answers = qa.get("answers", [])
    if answers is None:
        answers = []
    if not isinstance(answers, list):
        raise squad.fail(steps, f"'answers' must be a list, found {type(answers).__name__}")
    # CLUE's CMRC 2018 test file marks "no answer given" with FAKE_ANSWER_n at -1.
    if answers and all(
        isinstance(a, dict)
        and a.get("answer_start") == -1
        and isinstance(a.get("text"), str)
        and _FAKE_ANSWER.fullmatch(a["text"])
        for a in answers
    ):
        return (), ()
    texts: list[str] = []
    starts: list[int] = []
    for k, answer in enumerate(answers):
        where = [*steps, "answers", k]
        text = squad.get(answer, where, "text", str)
        if not need_offsets:  # evaluation: the official scorer reads the texts only
            texts.append(text)
            starts.append(-1)
            continue
        if "answer_start" not in answer:
            raise squad.fail(
                where,
                f"missing 'answer_start' (keys present: "
                f"{', '.join(map(repr, answer))}); give the answer's char offset",
            )
        start = answer["answer_start"]
        # Any JSON integer is accepted: official CMRC 2018 / DRCD files hold -1 and offsets
        # that miss their text (feature building relocates those; evaluation uses texts only).
        # Floats (even 2.0), strings and booleans are not offsets.
        if isinstance(start, bool) or not isinstance(start, int):
            raise squad.fail(
                where,
                f"answer_start must be an integer (the answer's character offset in the "
                f"context, or -1 if unknown), found {_show(start)}",
            )
        texts.append(text)
        starts.append(start)
    return tuple(texts), tuple(starts)


def read_squad(path: PathLike, *, need_offsets: bool = True) -> list[QAExample]:
    """Read a SQuAD v1.1-layout JSON file (also CMRC 2018 and DRCD).

    Layout: ``{"data": [{"title": ..., "paragraphs": [{"context": ..., "qas": [{"id": ...,
    "question": ..., "answers": [{"text": ..., "answer_start": int}]}]}]}]}``.  ``answers``
    may be missing or empty (test files); CLUE's CMRC 2018 test placeholders
    (``FAKE_ANSWER_n`` at ``-1``) also count as no answers.  Ids may be strings or integers.
    ``answer_start`` may be any integer: ``-1`` (unknown, as in ~200 answers of the official
    CMRC 2018 dev set) or an offset that misses the text or lies past the context are kept
    as given -- whether an answer really occurs there is NOT checked here; training features
    relocate it (:func:`zhplm.tasks.mrc.build_qa_features`) and evaluation only uses the
    texts.  A float (even ``2.0``), string or boolean ``answer_start`` is an error.
    ``need_offsets=False`` (evaluation, prediction) reads only the answer texts: a missing or
    malformed ``answer_start`` is then no error, and every start is ``-1``.  An empty question
    is kept (the official CMRC 2018 trial set has two) and counted in one warning.
    ``source`` is ``"path:QID"``.

    Raises:
        DataError: not JSON (with the line and column), a missing or mistyped key (the message
            gives the line and the place in the document, e.g.
            ``data[3].paragraphs[0].qas[2]: missing 'id'``), an empty context, a non-string
            question, a duplicate id, an empty or non-string answer ``text``, a missing or
            non-integer ``answer_start`` (with ``need_offsets``).
    """
    name = _name(path)
    text = _read_text(path)
    if not text.strip():
        raise DataError(f"{name}:1: the file is empty; expected a SQuAD-format JSON document")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{name}:{exc.lineno}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}); the file must be one SQuAD-format JSON document"
        ) from None
    squad = _Squad(name, text)
    data = squad.get(document, [], "data", list)
    examples: list[QAExample] = []
    seen: dict[str, list[str | int]] = {}
    empty_questions: list[str] = []
    for i, article in enumerate(data):
        paragraphs = squad.get(article, ["data", i], "paragraphs", list)
        for j, paragraph in enumerate(paragraphs):
            p_steps: list[str | int] = ["data", i, "paragraphs", j]
            context = squad.get(paragraph, p_steps, "context", str)
            qas = squad.get(paragraph, p_steps, "qas", list)
            for k, qa in enumerate(qas):
                steps: list[str | int] = [*p_steps, "qas", k]
                if isinstance(qa, dict) and isinstance(qa.get("id"), int):
                    qa = {**qa, "id": str(qa["id"])}
                qid = squad.get(qa, steps, "id", str)
                question = squad.get(qa, steps, "question", str, allow_empty=True)
                if not question.strip():
                    empty_questions.append(qid)
                if qid in seen:
                    first = seen[qid]
                    raise squad.fail(
                        steps,
                        f"duplicate id {qid!r} (first at {name}:{squad.line(first)}, "
                        f"{_doc_path(first)}); every question needs a unique id",
                    )
                seen[qid] = steps
                answers, starts = _squad_answers(squad, qa, steps, need_offsets)
                examples.append(QAExample(qid, question, context, answers, starts, f"{name}:{qid}"))
    if empty_questions:
        logger.warning("%s: %d question(s) are empty (e.g. id %s); kept, with the context "
                       "alone to answer from", name, len(empty_questions), empty_questions[0])
    return examples


# --------------------------------------------------------------------------- dispatch


def _check_options(
    options: Mapping[str, Any], accepted: Iterable[str], task: str, name: str
) -> None:
    accepted = tuple(accepted)
    unknown = [key for key in options if key not in accepted]
    if unknown:
        raise InputError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for task {task!r} reading "
            f"{name}; accepted: {', '.join(accepted) or 'none'}"
        )


def _extension(name: str) -> str:
    return Path(name).suffix.lower()


def read_task_file(
    path: PathLike, task: str, **options: Any
) -> list[TextExample] | list[TaggingExample] | list[QAExample]:
    """Read ``path`` for ``task``, choosing the reader from the task and the file extension.

    * ``"classification"``, ``"pair"``, ``"regression"``: ``.tsv``/``.txt`` ->
      :func:`read_tsv`; ``.jsonl``/``.json`` (JSON lines, as CLUE ships) -> :func:`read_jsonl`.
      ``label_kind`` defaults to ``"regression"`` for regression, else ``"class"``; it may be
      set to ``"none"``.  ``field_map`` is passed on for JSON lines.  ``"pair"`` requires a
      second text in every example.
    * ``"ner"`` / ``"tagging"``: ``.txt``/``.tsv``/``.bio``/``.bioes``/``.bmes``/``.char``/
      ``.conll`` or no extension -> :func:`read_ner` (option ``scheme``).
    * ``"mrc"``: ``.json`` -> :func:`read_squad`.

    Raises:
        InputError: unknown task, an extension the task cannot read, an unknown option, or a
            ``label_kind`` that does not fit the task.
        DataError: from the reader; for ``"pair"``, an example without a second text.
    """
    name = _name(path)
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; use one of: {', '.join(TASKS)}")
    ext = _extension(name)
    if task in ("ner", "tagging"):
        _check_options(options, ("scheme",), task, name)
        if ext not in _NER_EXTENSIONS:
            raise InputError(
                f"cannot read {name} for task {task!r}: extension {ext!r} is not one of "
                f"{', '.join(e for e in _NER_EXTENSIONS if e)} (or none); span-annotated JSON "
                "(e.g. CLUENER) must first be converted to 'char TAG' lines"
            )
        return read_ner(path, **options)
    if task == "mrc":
        _check_options(options, ("need_offsets",), task, name)
        if ext != ".json":
            raise InputError(
                f"cannot read {name} for task 'mrc': expected a SQuAD-format .json file"
            )
        return read_squad(path, **options)

    default_kind = "regression" if task == "regression" else "class"
    label_kind = options.get("label_kind", default_kind)
    if label_kind not in (default_kind, "none"):
        raise InputError(
            f"label_kind {label_kind!r} does not fit task {task!r}; use {default_kind!r} or 'none'"
        )
    options = {**options, "label_kind": label_kind}
    examples: list[TextExample]
    if ext in _TSV_EXTENSIONS:
        _check_options(options, ("label_kind",), task, name)
        examples = read_tsv(path, **options)
    elif ext in _JSONL_EXTENSIONS:
        _check_options(options, ("field_map", "label_kind"), task, name)
        examples = read_jsonl(path, **options)
    else:
        raise InputError(
            f"cannot read {name} for task {task!r}: extension {ext!r} is not one of "
            f"{', '.join(_TSV_EXTENSIONS + _JSONL_EXTENSIONS)}"
        )
    if task == "pair":
        for example in examples:
            if example.text_b is None:
                raise DataError(
                    f"{example.source}: task 'pair' needs two texts but this example has only "
                    "one; add a text_b column (TSV) or a sentence2 field (JSON lines, or map "
                    "second_sequence with field_map)"
                )
    return examples


# --------------------------------------------------------------------------- labels


def _label_items(examples: Iterable[Example], caller: str) -> Iterable[tuple[str, str]]:
    """(label, source) for every class label / tag in ``examples``."""
    for example in examples:
        source = example.source or f"example {example.guid}"
        if isinstance(example, TextExample):
            if isinstance(example.label, str):
                yield example.label, source
            elif example.label is not None:
                raise InputError(
                    f"{caller}: {source} has regression target {example.label!r}; only class "
                    "labels and tags have a label set"
                )
        elif isinstance(example, TaggingExample):
            for tag in example.tags or ():
                yield tag, source
        else:
            raise InputError(
                f"{caller} takes TextExample or TaggingExample objects, got "
                f"{type(example).__name__}"
            )


def _join_labels(labels: Sequence[str]) -> str:
    shown = ", ".join(labels[:_MAX_LISTED])
    if len(labels) > _MAX_LISTED:
        shown += f", ... ({len(labels) - _MAX_LISTED} more)"
    return shown or "(none)"


def collect_labels(examples: Sequence[Example], where: str) -> list[str]:
    """Sorted unique class labels of labelled TextExamples, or tags of TaggingExamples.

    ``where`` names the examples' origin for the error message (e.g. ``"train"``).

    Raises:
        DataError: no example carries a label.
        InputError: regression targets or other example types.
    """
    labels = {label for label, _ in _label_items(examples, "collect_labels")}
    if not labels:
        first = next((e.source for e in examples if e.source), where)
        raise DataError(
            f"{first}: no labels in {where} ({len(examples)} example(s), none labelled); "
            "training needs a labelled file -- add a label column / field"
        )
    return sorted(labels)


def check_labels(examples: Sequence[Example], known: Sequence[str], where: str) -> None:
    """Raise a DataError listing every label (or tag) of ``examples`` not in ``known``.

    ``where`` says where ``known`` came from (e.g. ``"train"`` or ``"the model's head"``).
    The message names each unknown label with the first example carrying it, e.g.
    ``dev.tsv:17: unknown label(s) 'neutral' (first at dev.tsv:17), 'x' (first at
    dev.tsv:40); labels from train: negative, positive``.  Unlabelled examples pass.
    """
    if isinstance(known, str):
        raise InputError("check_labels: `known` must be a sequence of labels, not one string")
    known_set = set(known)
    unknown: dict[str, str] = {}
    for label, source in _label_items(examples, "check_labels"):
        if label not in known_set and label not in unknown:
            unknown[label] = source
    if unknown:
        first = next(iter(unknown.values()))
        listed = ", ".join(f"{label!r} (first at {source})" for label, source in unknown.items())
        raise DataError(
            f"{first}: unknown label(s) {listed}; labels from {where}: "
            f"{_join_labels(list(known))}; fix the file's labels or use a label set that "
            "includes them"
        )
