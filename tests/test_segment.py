"""The jieba segmenter: rjieba (jieba-rs) + corrections gives jieba's words exactly."""

from __future__ import annotations

import random

import pytest

from zhplm import datasets
from zhplm.data import segment
from zhplm.data.segment import jieba_word_starts, jieba_words, word_start_mask

pytest.importorskip("rjieba")

# Where jieba-rs and jieba differ before the corrections (see zhplm.data.segment).
TRICKY = [
    "这套书（1-3）都翻的旧了",  # jieba: 1 / - / 3
    "英超第30轮南安普顿2-0战胜伯恩利",
    "宽度也只有1.5M，总体感觉还是不错",  # 1.5 / M
    "交流切磋。www.smallstonesoft.com",
    "MOSFET的I-V特性的数学描述",
    "详见/5/work_1704965.shtml和27697932_d.html",
    "日期2008.02.23，版本ab.1.2.3，比例10%-20%",
    "3D打印机和C++编程，T恤-3，x-.y，a__b，_a，-1",
    "㐀㐁中文䶵鿖鿿豈𠀀𠀁测试",  # CJK extension A, U+9FD6.., compatibility, plane 2
    "中文\r\n换行\t制表\u3000全角空格 abc 😀 Ａ１ あア 한",
    "",
    "   ",
]


@pytest.fixture(scope="module")
def sample_lines() -> list[str]:
    """3000 real lines: reviews (with URLs, model numbers, scores) and People's Daily."""
    lines = list(datasets.corpus_lines("all"))
    rng = random.Random(0)
    return lines[:1000] + rng.sample(lines[1000:-1000], 1000) + lines[-1000:]


def test_rjieba_is_jieba_on_real_text(sample_lines):
    assert segment.backend() == "rjieba"
    differ = [line for line in sample_lines
              if jieba_words(line, "rjieba") != jieba_words(line, "jieba")]
    assert differ == []
    # the sample exercises the corrections: ASCII runs with . - _ % that jieba splits
    assert sum(any(c in line for c in ".-_%") for line in sample_lines) > 100


@pytest.mark.parametrize("text", TRICKY)
def test_rjieba_is_jieba_where_jieba_rs_differs(text):
    words = jieba_words(text, "rjieba")
    assert words == jieba_words(text, "jieba")
    assert "".join(words) == text


def test_joined_sentences_segment_as_each_alone(sample_lines):
    """encoding.py segments a chunk's sentences joined by newlines in one call."""
    lines = sample_lines[:300] + TRICKY
    joined = jieba_words("\n".join(lines))
    alone = []
    for i, line in enumerate(lines):
        alone += (["\n"] if i else []) + jieba_words(line, "jieba")
    assert joined == alone


def test_word_start_helpers():
    assert jieba_words("我爱北京天安门。") == ["我", "爱", "北京", "天安门", "。"]
    assert jieba_word_starts("我爱北京天安门。") == {0, 1, 2, 4, 7}
    assert word_start_mask("我爱北京天安门。").tolist() == [
        True, True, True, False, True, False, False, True, False]
    assert word_start_mask("").tolist() == [False]


def test_python_jieba_can_be_forced(monkeypatch):
    monkeypatch.setenv("ZHPLM_JIEBA", "python")
    segment._rjieba.cache_clear()
    try:
        assert segment.backend() == "jieba"
        assert jieba_words("2-0战胜") == ["2", "-", "0", "战胜"]
        with pytest.raises(ValueError, match="rjieba is not installed"):
            jieba_words("中文", "rjieba")
    finally:
        monkeypatch.delenv("ZHPLM_JIEBA")
        segment._rjieba.cache_clear()
    assert segment.backend() == "rjieba"
    with pytest.raises(ValueError, match="backend='ltp'"):
        jieba_words("中文", "ltp")
