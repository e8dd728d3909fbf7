"""Tests of zhplm.tasks.metrics: hand-worked cases and agreement with seqeval/scipy/sklearn."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest

from zhplm.errors import InputError
from zhplm.tasks.metrics import (
    accuracy,
    classification_scores,
    cmrc_em,
    cmrc_f1,
    cmrc_scores,
    entity_scores,
    find_lcs,
    get_entities,
    macro_f1,
    matthews_corrcoef,
    mixed_segmentation,
    pearson,
    regression_scores,
    remove_punctuation,
    spearman,
)

TYPES = ("PER", "LOC", "ORG")


# --------------------------------------------------------------------------- classification


def test_accuracy_hand_worked() -> None:
    # positions 0, 2, 3 agree -> 3/5
    assert accuracy(["a", "b", "a", "c", "c"], ["a", "a", "a", "c", "b"]) == pytest.approx(0.6)
    assert accuracy([1], [1]) == 1.0
    assert accuracy([0, 0], [1, 1]) == 0.0


def test_macro_f1_hand_worked() -> None:
    golds = ["a", "a", "b", "b", "c"]
    preds = ["a", "b", "b", "b", "a"]
    # a: tp=1 fp=1 fn=1 -> F1 = 2/(2+1+1) = 0.5
    # b: tp=2 fp=1 fn=0 -> F1 = 4/(4+1) = 0.8
    # c: tp=0 fp=0 fn=1 -> F1 = 0
    assert macro_f1(preds, golds) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    # restrict to a and b -> (0.5 + 0.8) / 2
    assert macro_f1(preds, golds, labels=["a", "b"]) == pytest.approx(0.65)
    # a label that never occurs scores 0 and pulls the mean down: (0.5 + 0.8 + 0 + 0) / 4
    assert macro_f1(preds, golds, labels=["a", "b", "c", "z"]) == pytest.approx(1.3 / 4)
    # labels only in predictions count too: gold x, pred y -> x:0, y:0
    assert macro_f1(["y"], ["x"]) == 0.0


def test_mcc_hand_worked() -> None:
    # binary: TP=2 (1,1), TN=1 (0,0), FP=1 (gold 0 pred 1), FN=0
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = 2 / sqrt(3*2*2*1) = 2/sqrt(12)
    golds = [1, 1, 0, 0]
    preds = [1, 1, 0, 1]
    assert matthews_corrcoef(preds, golds) == pytest.approx(2 / math.sqrt(12))
    # perfect and perfectly inverted
    assert matthews_corrcoef([0, 1, 2], [0, 1, 2]) == pytest.approx(1.0)
    assert matthews_corrcoef([1, 0], [0, 1]) == pytest.approx(-1.0)
    # constant predictions: undefined -> 0.0
    assert matthews_corrcoef([1, 1, 1], [0, 1, 0]) == 0.0
    # 3 classes: golds a a b c, preds a b b a
    # t=(a2,b1,c1), p=(a2,b2,c0), c=2, s=4: cov_tp = 2*4 - (4+2+0) = 2
    # s^2-p.p = 16-8 = 8 ; s^2-t.t = 16-6 = 10 -> 2/sqrt(80)
    assert matthews_corrcoef(list("abba"), list("aabc")) == pytest.approx(2 / math.sqrt(80))


def test_classification_scores_keys() -> None:
    out = classification_scores([1, 1, 0, 1], [1, 1, 0, 0])
    assert set(out) == {"accuracy", "macro_f1", "mcc"}
    assert out["accuracy"] == pytest.approx(0.75)
    # class 0: tp1 fp0 fn1 -> 2/3 ; class 1: tp2 fp1 fn0 -> 4/5
    assert out["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    # TP=2 TN=1 FP=1 FN=0 -> 2/sqrt(12)
    assert out["mcc"] == pytest.approx(2 / math.sqrt(12))


def test_classification_agrees_with_sklearn() -> None:
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for trial in range(60):
        n = int(rng.integers(1, 40))
        k = int(rng.integers(1, 5))
        golds = rng.integers(0, k, n).tolist()
        preds = rng.integers(0, k + (trial % 2), n).tolist()  # sometimes an extra class
        assert accuracy(preds, golds) == pytest.approx(skm.accuracy_score(golds, preds), abs=1e-12)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected_f1 = skm.f1_score(golds, preds, average="macro", zero_division=0)
            expected_mcc = skm.matthews_corrcoef(golds, preds)
            labels = [0, 2, 5]
            expected_f1_lab = skm.f1_score(
                golds, preds, average="macro", labels=labels, zero_division=0
            )
        assert macro_f1(preds, golds) == pytest.approx(expected_f1, abs=1e-12)
        assert macro_f1(preds, golds, labels=labels) == pytest.approx(expected_f1_lab, abs=1e-12)
        assert matthews_corrcoef(preds, golds) == pytest.approx(expected_mcc, abs=1e-12)


# --------------------------------------------------------------------------- regression


def test_pearson_spearman_hand_worked() -> None:
    # y = 2x + 1 exactly -> r = 1
    assert pearson([1, 2, 3, 4], [3, 5, 7, 9]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # x = (1,2,3), y = (1,3,2): centred (-1,0,1) and (-1,1,0) -> 1 / (sqrt2*sqrt2) = 0.5
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    # monotone but not linear -> spearman 1, pearson < 1
    x = [1, 2, 3, 4]
    y = [1, 4, 9, 100]
    assert spearman(x, y) == pytest.approx(1.0)
    assert pearson(x, y) < 0.99
    # ties: x ranks (1, 2.5, 2.5, 4), y ranks (1,2,3,4)
    # centred x: (-1.5, 0, 0, 1.5), y: (-1.5,-.5,.5,1.5); dot = 4.5; |x|^2=4.5, |y|^2=5
    # -> 4.5 / sqrt(4.5*5) = sqrt(0.9)
    assert spearman([10, 20, 20, 30], [1, 2, 3, 4]) == pytest.approx(math.sqrt(0.9))


def test_constant_input_gives_nan() -> None:
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))
    assert math.isnan(pearson([2.0], [3.0]))
    out = regression_scores([1, 1], [1, 2])
    assert math.isnan(out["average"])


def test_regression_scores() -> None:
    out = regression_scores([1, 2, 3], [1, 3, 2])
    assert out["pearson"] == pytest.approx(0.5)
    # ranks equal the values here, so spearman is also 0.5
    assert out["spearman"] == pytest.approx(0.5)
    assert out["average"] == pytest.approx(0.5)


def test_regression_agrees_with_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    for trial in range(60):
        n = int(rng.integers(3, 50))
        if trial % 2:  # heavy ties: STS-B golds are on a 0..5 grid
            x = rng.integers(0, 6, n).astype(float)
            y = (x + rng.integers(-2, 3, n)).astype(float)
        else:
            x = rng.normal(size=n)
            y = 0.3 * x + rng.normal(size=n)
        if np.all(x == x[0]) or np.all(y == y[0]):
            continue
        assert pearson(x.tolist(), y.tolist()) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
        assert spearman(x.tolist(), y.tolist()) == pytest.approx(
            stats.spearmanr(x, y)[0], abs=1e-12
        )


# --------------------------------------------------------------------------- NER


def test_get_entities_bio_hand_worked() -> None:
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-ORG", "B-PER"]
    # B-PER I-PER -> PER [0,2); I-LOC after O starts LOC [3,5); B-LOC starts [5,6);
    # I-ORG after LOC (type change) starts ORG [6,7); final B-PER [7,8)
    assert get_entities(tags) == [
        ("PER", 0, 2),
        ("LOC", 3, 5),
        ("LOC", 5, 6),
        ("ORG", 6, 7),
        ("PER", 7, 8),
    ]
    assert get_entities([]) == []
    assert get_entities(["O", "O"]) == []
    # bare (untyped) tags get the type "_"
    assert get_entities(["B", "I", "O", "I"]) == [("_", 0, 2), ("_", 3, 4)]
    # types may contain hyphens
    assert get_entities(["B-GPE-X", "I-GPE-X"]) == [("GPE-X", 0, 2)]


def test_get_entities_bioes_hand_worked() -> None:
    tags = ["S-PER", "B-LOC", "I-LOC", "E-LOC", "E-LOC", "O", "I-ORG", "E-ORG", "B-PER"]
    # S-PER [0,1); B I E LOC [1,4); E-LOC right after E starts and ends [4,5);
    # I-ORG after O starts, E-ORG closes [6,8); trailing B-PER [8,9)
    assert get_entities(tags, scheme="BIOES") == [
        ("PER", 0, 1),
        ("LOC", 1, 4),
        ("LOC", 4, 5),
        ("ORG", 6, 8),
        ("PER", 8, 9),
    ]
    assert get_entities(tags, scheme="iobes") == get_entities(tags, scheme="BIOES")


def test_entity_scores_hand_worked() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "B-LOC"]]
    # gold: PER(0,0-2) LOC(0,3-4) ORG(1,0-1) -> 3
    # pred: PER(0,0-2) ORG(0,3-4) ORG(1,0-1) LOC(1,1-2) -> 4 ; correct: PER, ORG(1) -> 2
    out = entity_scores(gold, pred)
    assert (out["num_gold"], out["num_predicted"], out["num_correct"]) == (3, 4, 2)
    assert out["precision"] == pytest.approx(2 / 4)
    assert out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert list(out["per_type"]) == ["LOC", "ORG", "PER"]
    assert out["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    # LOC: 0 correct of 1 gold / 1 predicted
    assert out["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    # ORG: 1 correct, 2 predicted, 1 gold -> P .5 R 1 F 2/3
    assert out["per_type"]["ORG"]["f1"] == pytest.approx(2 / 3)
    assert out["per_type"]["ORG"]["support"] == 1
    # same span in different sentences is a different entity
    same = entity_scores([["B-PER"], ["O"]], [["O"], ["B-PER"]])
    assert same["num_correct"] == 0 and same["f1"] == 0.0
    # nothing anywhere -> zeros, no crash
    none = entity_scores([["O"]], [["O"]])
    assert none["f1"] == 0.0 and none["per_type"] == {}


def _random_tags(rng: np.random.Generator, scheme: str) -> list[str]:
    prefixes = ["B", "I"] if scheme == "BIO" else ["B", "I", "E", "S"]
    length = int(rng.integers(0, 15))
    tags = []
    for _ in range(length):
        r = rng.random()
        if r < 0.35:
            tags.append("O")
        elif r < 0.40:
            tags.append(str(rng.choice(prefixes)))  # bare prefix
        else:
            tags.append(f"{rng.choice(prefixes)}-{rng.choice(TYPES)}")
    return tags


def _corrupt(rng: np.random.Generator, tags: list[str], scheme: str) -> list[str]:
    """A prediction: the gold with some tags replaced by random ones."""
    noisy = _random_tags(rng, scheme) + ["O"] * len(tags)
    return [noisy[i] if rng.random() < 0.3 else t for i, t in enumerate(tags)]


@pytest.mark.parametrize("scheme", ["BIO", "BIOES"])
def test_agrees_with_seqeval(scheme: str) -> None:
    seq_metrics = pytest.importorskip("seqeval.metrics")
    from seqeval.metrics.sequence_labeling import get_entities as seqeval_get_entities

    rng = np.random.default_rng(2018 if scheme == "BIO" else 2019)
    n_checked = 0
    for _ in range(30):  # 30 corpora x ~8 sentences -> > 200 sequences per scheme
        n_sent = int(rng.integers(1, 15))
        gold = [_random_tags(rng, scheme) for _ in range(n_sent)]
        pred = [_corrupt(rng, g, scheme) for g in gold]
        for seq in gold + pred:
            expected = [(t, s, e + 1) for t, s, e in seqeval_get_entities(list(seq))]
            assert get_entities(seq, scheme) == expected, seq
            n_checked += 1
        ours = entity_scores(gold, pred, scheme=scheme)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = seq_metrics.precision_score(gold, pred)
            r = seq_metrics.recall_score(gold, pred)
            f = seq_metrics.f1_score(gold, pred)
            per = seq_metrics.classification_report(gold, pred, output_dict=True)
        assert abs(ours["precision"] - p) < 1e-12
        assert abs(ours["recall"] - r) < 1e-12
        assert abs(ours["f1"] - f) < 1e-12
        for type_, scores in ours["per_type"].items():
            assert abs(scores["f1"] - per[type_]["f1-score"]) < 1e-12
            assert scores["support"] == per[type_]["support"]
    assert n_checked >= 200


def test_ner_bad_input() -> None:
    with pytest.raises(InputError, match="unknown tagging scheme"):
        get_entities(["O"], scheme="BILOU")
    with pytest.raises(InputError, match="X-PER"):
        get_entities(["O", "X-PER"])
    with pytest.raises(InputError, match="E-PER"):
        get_entities(["B-PER", "E-PER"], scheme="BIO")
    with pytest.raises(InputError):
        get_entities(["B-"])
    with pytest.raises(InputError):
        get_entities(["O-PER"], scheme="BIOES")
    with pytest.raises(InputError, match="2 predictions but 1 golds"):
        entity_scores([["O"]], [["O"], ["O"]])
    with pytest.raises(InputError, match="sentence 0"):
        entity_scores([["O", "O"]], [["O"]])
    with pytest.raises(InputError, match="empty"):
        entity_scores([], [])
    with pytest.raises(InputError, match="unknown tagging scheme"):
        entity_scores([["O"]], [["O"]], scheme="xyz")


# --------------------------------------------------------------------------- CMRC 2018


def test_mixed_segmentation_and_punctuation() -> None:
    # Chinese chars one by one; "BERT" lowercased as one word; listed "，" kept as a segment
    assert mixed_segmentation("BERT模型，很强") == ["bert", "模", "型", "，", "很", "强"]
    assert mixed_segmentation("BERT模型，很强", rm_punc=True) == ["bert", "模", "型", "很", "强"]
    # words separated by spaces; digits stay together
    assert mixed_segmentation(" New York 2018年 ") == ["new", "york", "2018", "年"]
    # temp_str logic: with rm_punc a dropped "-" does not break the pending run
    assert mixed_segmentation("abc-def") == ["abc", "-", "def"]
    assert mixed_segmentation("abc-def", rm_punc=True) == ["abcdef"]
    # "……" in the list never matches a single "…"; ASCII "," is not in the list
    assert remove_punctuation(" 《三体》……，A-B ") == "三体……ab"
    assert mixed_segmentation("好…", rm_punc=True) == ["好", "…"]


def test_find_lcs() -> None:
    assert find_lcs("abcde", "xbcdy") == ("bcd", 3)
    assert find_lcs(["a", "b", "c"], ["c", "a", "b"]) == (["a", "b"], 2)
    assert find_lcs("abc", "xyz") == ("", 0)
    assert find_lcs("", "abc") == ("", 0)
    # two longest ones ("ab" at 0, "cd" at 2): the one ending first in s1 wins
    assert find_lcs("abcd", "cdab") == ("ab", 2)


def test_cmrc_em_and_f1_hand_worked() -> None:
    # EM after removing punctuation: "北京大学。" -> "北京大学"
    assert cmrc_em("北京大学", ["北京", "北京大学。"]) == 1.0
    assert cmrc_f1("北京大学", ["北京", "北京大学。"]) == 1.0
    assert cmrc_em("北京", ["北京大学"]) == 0.0
    # pred 北京 (2 segs) vs gold 北京大学 (4): lcs 2, P=1, R=.5 -> F1 = 2/3
    assert cmrc_f1("北京", ["北京大学"]) == pytest.approx(2 / 3)
    # max over golds: vs "大学" -> lcs 0; vs "在北京" -> lcs 2, P=1 R=2/3 -> 0.8
    assert cmrc_f1("北京", ["大学", "在北京"]) == pytest.approx(0.8)
    # mixed: pred "the BERT模型" -> [the, bert, 模, 型]; gold "BERT模型的" -> [bert, 模, 型, 的]
    # lcs [bert, 模, 型] = 3: P=3/4 R=3/4 -> F1 0.75
    assert cmrc_f1("the BERT模型", ["BERT模型的"]) == pytest.approx(0.75)
    assert cmrc_em("the BERT模型", ["BERT模型的"]) == 0.0
    # case and listed punctuation ignored for EM
    assert cmrc_em("《BERT》：模型", ["bert模型"]) == 1.0
    # LCS is contiguous: pred 北X京 vs gold 北京 -> lcs 1, P=1/3 R=1/2 -> F1 0.4
    assert cmrc_f1("北x京", ["北京"]) == pytest.approx(0.4)
    # an empty prediction scores 0
    assert cmrc_f1("", ["北京"]) == 0.0
    assert cmrc_em("", ["北京"]) == 0.0


def test_cmrc_scores_with_missing_prediction() -> None:
    golds = {
        "q1": ["北京大学", "北京"],  # pred exact -> em 1, f1 1
        "q2": ["北京大学"],  # pred 北京 -> em 0, f1 2/3
        "q3": ["上海"],  # no prediction -> 0, skipped
        "q4 ": ["abc"],  # id stripped before lookup, pred "ABC" -> em 1, f1 1
    }
    preds = {"q1": "北京大学", "q2": "北京", "q4": "ABC", "extra": "ignored"}
    out = cmrc_scores(preds, golds)
    assert out["total"] == 4
    assert out["skipped"] == 1
    assert out["em"] == pytest.approx(100 * 2 / 4)
    assert out["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0 + 1) / 4)
    assert out["average"] == pytest.approx((out["em"] + out["f1"]) / 2)


def test_cmrc_bad_input() -> None:
    with pytest.raises(InputError, match="empty"):
        cmrc_scores({}, {})
    with pytest.raises(InputError):
        cmrc_f1("北京", [])
    with pytest.raises(InputError):
        cmrc_em("北京", "北京")  # a bare string instead of a list
    with pytest.raises(InputError, match="q1"):
        cmrc_scores({"q1": "a"}, {"q1": []})


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "fn", [accuracy, macro_f1, matthews_corrcoef, pearson, spearman, classification_scores]
)
def test_length_mismatch_and_empty(fn: Callable[..., object]) -> None:
    with pytest.raises(InputError, match="2 predictions but 3 golds"):
        fn([1, 2], [1, 2, 3])
    with pytest.raises(InputError, match="empty"):
        fn([], [])


def test_other_bad_input() -> None:
    with pytest.raises(InputError, match="NaN"):
        pearson([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(InputError, match="numbers"):
        spearman(["a", "b"], [1.0, 2.0])
    with pytest.raises(InputError, match="duplicates"):
        macro_f1([1], [1], labels=[1, 1])
    with pytest.raises(InputError, match="labels"):
        macro_f1([1], [1], labels=[])
