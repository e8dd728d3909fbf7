"""The demo's fine-tuning comparison: mean ± sd over seeds, and a verdict in words."""

from zhplm.demo import format_comparison


def scores(ours: list[float], base: list[float]) -> dict[str, dict[str, list[float]]]:
    return {"reviews-sentiment": {"pre-trained": ours, "random init": base},
            "pd-ner": {"pre-trained": ours, "random init": base}}


def test_table_shows_mean_sd_and_range_per_model():
    text = format_comparison(scores([80.0, 82.0, 84.0], [70.0, 71.0, 72.0]), 3)
    assert "3 seeds: mean ± sd (min–max)) | pre-trained | random init |" in text
    assert "82.0 ± 2.0 (80.0–84.0) | 71.0 ± 1.0 (70.0–72.0) |" in text
    assert "ahead by 11.0 points, more than the spread" in text


def test_overlapping_seeds_are_not_called_a_gain():
    text = format_comparison(scores([70.0, 75.0, 80.0], [72.0, 73.0, 74.0]), 3)
    assert "within the spread" in text and "no clear gain" in text


def test_a_loss_is_said_in_words():
    text = format_comparison(scores([60.0, 61.0, 62.0], [70.0, 71.0, 72.0]), 3)
    assert "NOT ahead: -10.0 points" in text and "shows no gain from pre-training" in text


def test_one_seed_has_no_spread():
    text = format_comparison(scores([80.0], [70.0]), 1)
    assert "80.0 ± 0.0 (80.0–80.0)" in text


def test_unigram_bias_predicts_the_corpus_frequencies(small_dataset, zh_vocab_dir):
    import numpy as np
    import torch

    from zhplm.config import preset
    from zhplm.data.shards import TokenDataset
    from zhplm.modeling import BertForMaskedLM
    from zhplm.pretraining import init_unigram_bias
    from zhplm.tokenization import Tokenizer

    tokenizer = Tokenizer.from_pretrained(zh_vocab_dir)
    model = BertForMaskedLM(preset("tiny", vocab_size=tokenizer.vocab_size))
    dataset = TokenDataset(small_dataset)
    documents = list(range(dataset.num_documents))
    init_unigram_bias(model, dataset, documents)
    counts = np.zeros(tokenizer.vocab_size)
    for index in documents:
        for sentence in dataset.document(index):
            counts += np.bincount(sentence[0], minlength=tokenizer.vocab_size)
    bias = model.cls.predictions.bias.detach().numpy()
    assert int(bias.argmax()) == int(counts.argmax())
    seen = counts > 0
    # log(count + 1) up to a constant: the differences are exact
    expected = np.log(counts + 1)
    assert np.allclose(bias - bias[seen].mean(), expected - expected[seen].mean(), atol=1e-4)
    assert torch.isfinite(model.cls.predictions.bias).all()


def test_context_note_tells_a_plateau_from_a_model_that_uses_context(small_dataset,
                                                                     zh_vocab_dir):
    from zhplm.data.instances import SpecialIds
    from zhplm.data.shards import TokenDataset, token_counts
    from zhplm.demo import CONTEXT_GAP, context_note
    from zhplm.objectives.mlm_floor import context_free_mlm_loss
    from zhplm.pretraining import PretrainRecipe
    from zhplm.recipe import load_recipe
    from zhplm.tokenization import Tokenizer

    recipe = load_recipe(PretrainRecipe, "configs/pretrain/demo.yaml",
                         [f"data.dataset={small_dataset}", f"data.vocab={zh_vocab_dir}/vocab.txt"])
    data = TokenDataset(small_dataset)
    tokenizer = Tokenizer.from_pretrained(zh_vocab_dir)
    floor = context_free_mlm_loss(token_counts(data, range(len(data)), tokenizer.vocab_size),
                                  0.8, 0.1, SpecialIds.from_tokenizer(tokenizer).first_normal)
    assert f"scores ~{floor:.3f}" in context_note(floor, small_dataset, recipe)
    assert "not yet as good as one that uses no context" in context_note(
        floor + 0.1, small_dataset, recipe)
    assert "0.100 nats above" in context_note(floor + 0.1, small_dataset, recipe)
    assert "almost nothing from context" in context_note(floor - 0.01, small_dataset, recipe)
    assert "uses context" in context_note(floor - CONTEXT_GAP, small_dataset, recipe)
    assert "no held-out MLM loss" in context_note(float("nan"), small_dataset, recipe)
