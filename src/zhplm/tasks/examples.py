"""The examples every task reader produces and every task consumes.

Each example remembers `source` ("file:line", or "file:qid" for SQuAD) so a later error
(an unknown label, an over-long text) can name where the example came from.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TextExample:
    """Single sentence (`text_b is None`) or sentence pair, with a class label (`str`), a
    regression target (`float`), or no label (`None`, e.g. an unlabelled test file)."""

    guid: str
    text_a: str
    text_b: str | None = None
    label: str | float | None = None
    source: str = ""


@dataclass(frozen=True)
class TaggingExample:
    """A sequence of tokens (for Chinese: one character each) with one tag per token
    (`tags is None` when unlabelled)."""

    guid: str
    tokens: tuple[str, ...]
    tags: tuple[str, ...] | None = None
    source: str = ""


@dataclass(frozen=True)
class QAExample:
    """One SQuAD-format question over a context. `answers[i]` starts at character
    `answer_starts[i]` of `context` as the file claims: -1 means unknown, and an offset may
    miss its text (official CMRC 2018 / DRCD files have both); training features relocate
    such answers, evaluation only uses the texts."""

    qid: str
    question: str
    context: str
    answers: tuple[str, ...] = ()
    answer_starts: tuple[int, ...] = ()
    source: str = ""
