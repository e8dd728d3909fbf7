"""fill-mask and feature-extraction pipelines: parity with transformers, batching, bad input."""

import logging

import numpy as np
import pytest
import torch
import transformers

from zhplm import pipeline
from zhplm.config import preset
from zhplm.errors import ConfigError, InputError
from zhplm.modeling import BertForMaskedLM
from zhplm.tokenization import Tokenizer

ZH_TEXTS = ["今天天气很[MASK]。", "这本书的内容非常丰富，值得一[MASK]。", "北京是中国的[MASK]都。"]
EN_TEXTS = ["The capital of France is [MASK].", "I [MASK] reading books on the train."]


def _peaked_mlm(model: BertForMaskedLM, seed: int) -> BertForMaskedLM:
    """A random MLM head whose bias spreads the scores, so top-k has no near-ties."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bias = model.cls.predictions.bias
        bias.copy_(torch.randn(bias.shape, generator=generator) * 2)
    return model


@pytest.fixture(scope="module")
def zh_mlm_dir(tmp_path_factory, zh_vocab_dir):
    tokenizer = Tokenizer.from_pretrained(zh_vocab_dir)
    torch.manual_seed(0)
    model = _peaked_mlm(BertForMaskedLM(preset("tiny", vocab_size=tokenizer.vocab_size)), 0)
    out = tmp_path_factory.mktemp("zh_mlm")
    model.save_pretrained(out, tokenizer=tokenizer)
    return out


@pytest.fixture(scope="module")
def en_mlm_dir(tmp_path_factory, minilm_dir):
    torch.manual_seed(0)
    model = _peaked_mlm(BertForMaskedLM.from_pretrained(minilm_dir), 1)
    out = tmp_path_factory.mktemp("en_mlm")
    model.save_pretrained(out)  # copies vocab.txt and tokenizer configs along
    return out


def _assert_same_predictions(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a["token"] == b["token"]
        assert a["token_str"] == b["token_str"]
        assert a["sequence"] == b["sequence"]
        assert abs(a["score"] - b["score"]) <= 1e-5


@pytest.mark.parametrize("fixture,texts", [("zh_mlm_dir", ZH_TEXTS), ("en_mlm_dir", EN_TEXTS)])
def test_fill_mask_matches_transformers(request, fixture, texts):
    model_dir = request.getfixturevalue(fixture)
    ours = pipeline("fill-mask", model=model_dir, top_k=5, dtype="fp32")  # exact comparison
    theirs = transformers.pipeline("fill-mask", model=str(model_dir), top_k=5, device="cpu")
    batch = ours(texts)
    for text, batched in zip(texts, batch, strict=True):
        expected = theirs(text)
        _assert_same_predictions(ours(text), expected)
        _assert_same_predictions(batched, expected)  # batching and padding change nothing


def test_fill_mask_several_masks_and_targets(zh_mlm_dir):
    ours = pipeline("fill-mask", model=zh_mlm_dir, dtype="fp32")
    theirs = transformers.pipeline("fill-mask", model=str(zh_mlm_dir), device="cpu")
    text = "我[MASK]欢这本[MASK]。"
    a, b = ours(text, top_k=3), theirs(text, top_k=3)
    assert len(a) == 2 and len(a[0]) == 3
    for mask_a, mask_b in zip(a, b, strict=True):
        _assert_same_predictions(mask_a, mask_b)
    targets = ["好", "坏", "大"]
    _assert_same_predictions(
        sorted(ours(ZH_TEXTS[0], targets=targets), key=lambda p: p["token"]),
        sorted(theirs(ZH_TEXTS[0], targets=targets), key=lambda p: p["token"]),
    )
    assert {p["token_str"] for p in ours(ZH_TEXTS[0], targets=targets)} == set(targets)


def test_feature_extraction_matches_transformers(minilm_dir):
    texts = ["A short one.", "A somewhat longer sentence with a few more words in it."]
    ours = pipeline("feature-extraction", model=minilm_dir, dtype="fp32")
    theirs = transformers.pipeline("feature-extraction", model=str(minilm_dir), device="cpu")
    token_vectors = ours(texts)
    for text, vectors in zip(texts, token_vectors, strict=True):
        expected = np.asarray(theirs(text))[0]
        assert vectors.shape == expected.shape
        assert np.abs(vectors - expected).max() <= 1e-5
    pooled = ours(texts, pooling="mean")
    assert pooled.shape == (2, 384)
    expected_mean = np.asarray(theirs(texts[1]))[0].mean(0)
    assert np.abs(pooled[1] - expected_mean).max() <= 1e-5
    cls = ours(texts[0], pooling="cls")
    assert np.abs(cls - token_vectors[0][0]).max() <= 1e-5  # alone vs. in a padded batch
    unit = ours(texts, pooling="mean", normalize=True)
    assert np.allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)


def test_bf16_autocast_stays_close_to_fp32(minilm_dir):
    # Two short texts: cheap even where bf16 is emulated (AVX2-only CPUs).
    texts = ["Semantic search finds documents by meaning.", "Dogs are loyal animals."]
    fp32 = pipeline("feature-extraction", model=minilm_dir, dtype="fp32")(texts, pooling="mean")
    bf16 = pipeline("feature-extraction", model=minilm_dir, dtype="bf16")(texts, pooling="mean")
    a, b = torch.from_numpy(fp32), torch.from_numpy(bf16)
    assert torch.nn.functional.cosine_similarity(a, b).min() >= 0.99


# ---- bad input --------------------------------------------------------------------------------
def test_empty_text_is_refused(zh_mlm_dir):
    fill = pipeline("fill-mask", model=zh_mlm_dir)
    with pytest.raises(InputError, match="input 1 is empty"):
        fill(["今天[MASK]。", "  "])


def test_fill_mask_needs_a_mask(zh_mlm_dir):
    fill = pipeline("fill-mask", model=zh_mlm_dir)
    with pytest.raises(InputError, match=r"no \[MASK\]"):
        fill("今天天气很好。")


def test_over_long_text_truncates_with_warning_or_refuses(zh_mlm_dir, caplog):
    long_text = "[MASK]" + "好" * 600
    fill = pipeline("fill-mask", model=zh_mlm_dir)
    with caplog.at_level(logging.WARNING, logger="zhplm"):
        result = fill(long_text)
    assert "truncated to the model's 512 positions" in caplog.text
    assert len(result) == 5
    strict = pipeline("fill-mask", model=zh_mlm_dir, truncate=False)
    with pytest.raises(InputError, match="603 tokens, more than the model's 512"):
        strict(long_text)
    # A mask that truncation cuts off is named as such.
    with pytest.raises(InputError, match="cut by truncation"):
        fill("好" * 600 + "[MASK]")


def test_unknown_task_and_options(zh_mlm_dir):
    with pytest.raises(InputError, match="unknown pipeline task"):
        pipeline("summarization", model=zh_mlm_dir)
    with pytest.raises(ConfigError, match="dtype='fp8'.*auto, fp32, bf16"):
        pipeline("fill-mask", model=zh_mlm_dir, dtype="fp8")
