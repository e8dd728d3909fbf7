"""Word boundaries for whole-word and n-gram masking.

Chinese text has no spaces, so a "word" for whole-word masking comes from a segmenter:
jieba here (Chinese-BERT-wwm used LTP; jieba ships on PyPI with its dictionary). A token
starts a word when its first character starts a jieba word; WordPiece continuation pieces
(`##ing`) and the 2nd..nth characters of a Chinese word do not. Without a segmenter, words
are WordPiece words (a token starts a word unless it begins with `##`).

The words are those of ``jieba.cut(text)`` (accurate mode, HMM on). They are computed by
`rjieba` (Rust bindings of jieba-rs, same dictionary, same DAG/route and HMM; ~10x faster)
when it is installed, else by jieba itself. jieba-rs differs from jieba in two places, and
:func:`jieba_words` corrects both, so the words are jieba's:

* inside a run of ASCII letters, digits and ``+#&._%-`` that the HMM step sees (not a
  dictionary word), jieba splits with ``[a-zA-Z0-9]+(?:\\.\\d+)?%?`` (``1-3`` -> ``1 - 3``,
  ``1.5M`` -> ``1.5 M``) where jieba-rs keeps ``1-3`` / ``1.5M`` whole: such runs are
  re-split with jieba's own pattern;
* jieba-rs treats CJK extension A, U+9FD6..U+9FFF, compatibility ideographs and the
  supplementary planes as Chinese, jieba treats them as symbols (one word each, a block
  boundary): the text is cut at those characters first, which is exactly what jieba does.

On the built-in corpus and UER-py's CLUECorpusSmall sample (39 347 documents) the result
equals jieba's on every line, as on 60 000 random strings mixing Chinese, ASCII runs, rare
CJK, symbols and whitespace (``tests/test_segment.py`` checks a sample on every run). Set
``ZHPLM_JIEBA=python`` to force jieba itself (e.g. after ``jieba.load_userdict``: words added
to jieba are not seen by rjieba).
"""

from __future__ import annotations

import logging
import os
import re
from bisect import bisect_left
from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import accumulate
from typing import Any

import numpy as np

SEGMENTERS = ("jieba", "none")
BACKENDS = ("rjieba", "jieba")
"""Implementations of the "jieba" segmenter: jieba-rs (when installed), jieba itself."""

# jieba.finalseg.re_skip: how jieba's HMM step splits a non-Chinese block.
_JIEBA_SKIP = re.compile(r"([a-zA-Z0-9]+(?:\.\d+)?%?)")
# Characters jieba-rs segments as Chinese but jieba does not (jieba: U+4E00..U+9FD5 only).
_WIDE_HAN = re.compile("([\u3400-\u4dbf\u9fd6-\u9fff\uf900-\ufaff\U00020000-\U0003ffff])")
# Non-Chinese characters of jieba's "han" blocks (re_han_default).
_ASCII_HAN = re.compile(r"[a-zA-Z0-9+#&._%\-]+")


@lru_cache(maxsize=1)
def _jieba():  # noqa: ANN202 - the jieba module
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


@lru_cache(maxsize=1)
def _rjieba() -> Any:
    """The rjieba module, or None when it is not installed (or ZHPLM_JIEBA=python)."""
    if os.environ.get("ZHPLM_JIEBA", "").lower() in ("python", "jieba"):
        return None
    try:
        import rjieba
    except ImportError:
        return None
    return rjieba


def backend() -> str:
    """The implementation :func:`jieba_words` uses: "rjieba" or "jieba"."""
    return "rjieba" if _rjieba() is not None else "jieba"


def _resplit_ascii(words: list[str], has_word: Callable[[str], bool]) -> list[str]:
    """Re-split jieba-rs's non-dictionary ASCII runs the way jieba's HMM step does."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if len(run) == 1 and len(run[0]) == 1:
            out.append(run[0])
        else:
            out.extend(p for p in _JIEBA_SKIP.split("".join(run)) if p)
        run.clear()

    for word in words:
        if (word.isascii() and _ASCII_HAN.fullmatch(word) is not None
                and (len(word) == 1 or not has_word(word))):
            run.append(word)
            continue
        if run:
            flush()
        out.append(word)
    if run:
        flush()
    return out


def _correct_ascii_runs(text: str, words: list[str], has_word: Callable[[str], bool]) -> list[str]:
    """:func:`_resplit_ascii` where it can change anything: consecutive candidate words are
    ASCII runs of ``text``, so only the words inside each run are looked at (a run that is
    one word of letters and digits only stays as it is)."""
    starts = list(accumulate(map(len, words), initial=0))
    out: list[str] = []
    done = 0  # words[:done] are in out
    for match in _ASCII_HAN.finditer(text):
        begin, end = match.span()
        first = bisect_left(starts, begin, done, len(words))
        stop = bisect_left(starts, end, first, len(words))
        if stop == first or (stop == first + 1 and starts[first] == begin
                             and starts[stop] == end and match.group().isalnum()):
            continue
        out += words[done:first]
        out += _resplit_ascii(words[first:stop], has_word)
        done = stop
    if not done:
        return words
    out += words[done:]
    return out


def jieba_words(text: str, backend: str | None = None) -> list[str]:
    """The words of ``jieba.cut(text)`` (accurate mode, HMM), in order; they concatenate to
    ``text``. ``backend`` picks "rjieba" or "jieba" (default: rjieba when installed)."""
    if backend is None:
        backend = "rjieba" if _rjieba() is not None else "jieba"
    if backend == "jieba":
        return _jieba().lcut(text)
    if backend != "rjieba":
        raise ValueError(f"backend={backend!r}; use one of {', '.join(BACKENDS)}")
    rjieba = _rjieba()
    if rjieba is None:
        raise ValueError("backend='rjieba' but rjieba is not installed; pip install rjieba")
    if _WIDE_HAN.search(text) is None:
        words = rjieba.cut(text)
    else:
        words = []
        for k, piece in enumerate(_WIDE_HAN.split(text)):
            if k % 2:
                words.append(piece)  # one word, a block boundary in jieba
            elif piece:
                words.extend(rjieba.cut(piece))
    return _correct_ascii_runs(text, words, rjieba.has_word)


def jieba_word_starts(text: str) -> set[int]:
    """Character offsets at which jieba starts a word in `text`."""
    starts: set[int] = set()
    offset = 0
    for word in jieba_words(text):
        starts.add(offset)
        offset += len(word)
    return starts


def word_starts(
    tokens: Sequence[str],
    offsets: Sequence[tuple[int, int]],
    text: str | None = None,
    segmenter: str = "jieba",
) -> np.ndarray:
    """A uint8 array, 1 where a token starts a word, for tokens without special tokens.

    `offsets` are the tokenizer's character offsets into `text`. With `segmenter="jieba"`
    the words are jieba's; with `"none"` they are WordPiece words.
    """
    if segmenter not in SEGMENTERS:
        raise ValueError(f"segmenter={segmenter!r}; use one of {', '.join(SEGMENTERS)}")
    starts = np.fromiter((not t.startswith("##") for t in tokens), dtype=np.uint8,
                         count=len(tokens))
    if segmenter == "jieba" and text:
        boundaries = jieba_word_starts(text)
        for i, (begin, _) in enumerate(offsets):
            if starts[i] and begin not in boundaries:
                starts[i] = 0  # inside a jieba word
    if len(starts):
        starts[0] = 1
    return starts


def word_start_mask(text: str) -> np.ndarray:
    """A bool array of ``len(text) + 1``, True at each character offset where a jieba word
    starts (the last entry, the end of the text, is False)."""
    lengths = np.fromiter(map(len, jieba_words(text)), dtype=np.int64)
    mask = np.zeros(len(text) + 1, dtype=bool)
    if len(lengths):
        ends = np.cumsum(lengths)
        mask[ends - lengths] = True
    return mask
