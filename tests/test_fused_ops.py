"""The training-speed kernels change nothing but speed: fused MLM cross-entropy, one QKV GEMM,
numpy dropout masks, attention with dropout spelled out. Losses and gradients match
transformers (MiniLM weights and a tiny random model) and plain torch."""

import pytest
import torch
import torch.nn.functional as F
import transformers

from zhplm.data.collate import PretrainBatch
from zhplm.modeling import BertForMaskedLM, BertForPreTraining
from zhplm.modeling import bert as bert_module
from zhplm.modeling.bert import attention_with_dropout
from zhplm.modeling.dropout import Dropout, dropout_mask
from zhplm.objectives import PretrainingModule, build_objectives
from zhplm.objectives.mlm import linear_cross_entropy


def _reference_ce(hidden, weight, bias, labels):
    logits = F.linear(hidden, weight, bias)
    return F.cross_entropy(logits, labels, reduction="sum"), logits.argmax(-1) == labels


@pytest.mark.parametrize("rows", [1, 37, 300])
def test_linear_cross_entropy_matches_torch(rows):
    torch.manual_seed(rows)
    vocab, width = 1000, 48
    leaves = [torch.randn(rows, width), torch.randn(vocab, width) * 0.5, torch.randn(vocab)]
    labels = torch.randint(0, vocab, (rows,))
    labels[: rows // 3] = F.linear(*leaves).argmax(-1)[: rows // 3]  # some right answers
    ours = [t.clone().requires_grad_() for t in leaves]
    theirs = [t.clone().requires_grad_() for t in leaves]
    loss, right = linear_cross_entropy(*ours, labels)
    ref_loss, ref_right = _reference_ce(*theirs, labels)
    (0.3 * loss).backward()
    (0.3 * ref_loss).backward()
    assert abs(loss.item() - ref_loss.item()) <= 1e-5 * max(1.0, abs(ref_loss.item()))
    assert torch.equal(right, ref_right)
    for a, b in zip(ours, theirs, strict=True):
        assert (a.grad - b.grad).abs().max() <= 1e-5


def test_linear_cross_entropy_under_bf16_autocast():
    torch.manual_seed(0)
    leaves = [torch.randn(64, 32), torch.randn(500, 32) * 0.3, torch.randn(500) * 0.1]
    labels = torch.randint(0, 500, (64,))
    ours = [t.clone().requires_grad_() for t in leaves]
    theirs = [t.clone().requires_grad_() for t in leaves]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = linear_cross_entropy(*ours, labels)
        ref = F.cross_entropy(F.linear(*theirs).float(), labels, reduction="sum")
    loss.backward()
    ref.backward()
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref.item()) <= 1e-2 * abs(ref.item())
    for a, b in zip(ours, theirs, strict=True):
        assert a.grad.dtype == torch.float32
        assert (a.grad - b.grad).abs().max() <= 0.02 * b.grad.abs().max() + 1e-3


def test_dropout_mask_distribution_and_seeding():
    torch.manual_seed(3)
    mask = dropout_mask((1000, 1000), 0.1)
    values = torch.unique(mask)
    assert torch.allclose(values, torch.tensor([0.0, 1 / 0.9]))
    keep = (mask > 0).float().mean().item()
    assert abs(keep - 0.9) < 0.002
    assert abs(mask.mean().item() - 1.0) < 0.003  # unbiased, as nn.Dropout
    # follows torch's generator: same seed, same masks; successive masks differ
    torch.manual_seed(3)
    assert torch.equal(dropout_mask((1000, 1000), 0.1), mask)
    assert not torch.equal(dropout_mask((1000, 1000), 0.1), mask)
    assert dropout_mask((4, 5), 0.5, torch.bfloat16).dtype == torch.bfloat16


def test_dropout_module():
    layer = Dropout(0.25)
    x = torch.randn(64, 64, requires_grad=True)
    assert layer.eval()(x) is x
    out = layer.train()(x)
    dropped = out == 0
    assert 0.15 < dropped.float().mean().item() < 0.35
    assert torch.allclose(out[~dropped], x[~dropped] / 0.75)
    out.sum().backward()
    assert torch.allclose(x.grad, (~dropped).float() / 0.75)
    assert torch.equal(Dropout(0.0).train()(x), x)


@pytest.mark.parametrize("padded", [False, True])
def test_attention_with_dropout_is_sdpa_when_nothing_is_dropped(monkeypatch, padded):
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 7, 8) for _ in range(3))
    mask = None
    if padded:
        mask = torch.ones(3, 1, 1, 7, dtype=torch.bool)
        mask[1, ..., 5:] = False
    def keep_all(shape, p, dtype=torch.float32, device="cpu"):
        return torch.ones(shape, dtype=dtype, device=device)

    monkeypatch.setattr(bert_module, "dropout_mask", keep_all)
    ours = [t.clone().requires_grad_() for t in (q, k, v)]
    theirs = [t.clone().requires_grad_() for t in (q, k, v)]
    a = attention_with_dropout(*ours, mask, 0.1)
    b = F.scaled_dot_product_attention(*theirs, attn_mask=mask)
    assert (a - b).abs().max() <= 1e-5
    grad = torch.randn_like(a)
    a.backward(grad)
    b.backward(grad)
    for x, y in zip(ours, theirs, strict=True):
        assert (x.grad - y.grad).abs().max() <= 1e-5


def _batch(ids, mask, types, positions, labels, sentence_labels=None):
    return PretrainBatch(input_ids=ids, token_type_ids=types, attention_mask=mask,
                         mlm_positions=positions, mlm_labels=labels,
                         mlm_uniforms=torch.rand(len(labels)),
                         sentence_labels=sentence_labels, num_tokens=int(mask.sum()))


def _mlm_targets(ids, mask, seed=0):
    generator = torch.Generator().manual_seed(seed)
    real = mask.flatten().nonzero().squeeze(1)
    positions = real[torch.randperm(len(real), generator=generator)[: max(3, len(real) // 6)]]
    positions = positions.sort().values
    labels = ids.flatten()[positions]
    hf_labels = torch.full_like(ids, -100)
    hf_labels.view(-1)[positions] = labels
    return positions, labels, hf_labels


def _compare_grads(ours, theirs, tolerance=1e-5):
    theirs_grads = {n: p.grad for n, p in theirs.named_parameters() if p.grad is not None}
    checked = 0
    for name, param in ours.named_parameters():
        if name in theirs_grads:
            assert (param.grad - theirs_grads[name]).abs().max() <= tolerance, name
            checked += 1
    return checked


def _train_pair(zhplm_class, hf_class, directory):
    ours = zhplm_class.from_pretrained(directory).train()
    theirs = hf_class.from_pretrained(directory, attn_implementation="sdpa").train()
    # dropout off (the only random part): training-mode forward and backward must agree
    for model in (ours, theirs):
        for module in model.modules():
            if isinstance(module, (torch.nn.Dropout, Dropout)):
                module.p = 0.0
        for module in model.modules():
            if hasattr(module, "dropout_p"):
                module.dropout_p = 0.0
    theirs.config.attention_probs_dropout_prob = 0.0
    for layer in theirs.bert.encoder.layer:
        layer.attention.self.dropout_prob = 0.0
    return ours, theirs


def test_mlm_loss_and_gradients_match_transformers_minilm(minilm_dir, tmp_path):
    # MiniLM's encoder weights; its (absent) MLM head initialised once and saved, so both
    # sides load the same head.
    torch.manual_seed(0)
    transformers.logging.set_verbosity_error()
    transformers.BertForMaskedLM.from_pretrained(minilm_dir).save_pretrained(tmp_path)
    tokenizer = transformers.BertTokenizer.from_pretrained(minilm_dir)
    texts = ["The quick brown fox jumps over the lazy dog.", "Hi!",
             "BERT encoders map text to contextual vectors, one token at a time."]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    ids, mask, types = enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]
    positions, labels, hf_labels = _mlm_targets(ids, mask)
    ours, theirs = _train_pair(BertForMaskedLM, transformers.BertForMaskedLM, tmp_path)
    module = PretrainingModule(ours, build_objectives({"mlm": 1.0}))
    batch = _batch(ids, mask, types, positions, labels)
    loss, stats = module(batch, module.normalizers([batch]))
    ref = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=hf_labels)
    assert abs(loss.item() - ref.loss.item()) <= 1e-5
    loss.backward()
    ref.loss.backward()
    assert _compare_grads(ours, theirs) >= 100
    logits = ref.logits.view(-1, ref.logits.shape[-1])[positions]
    assert stats["mlm_correct"].item() == (logits.argmax(-1) == labels).sum().item()


def test_pretraining_loss_and_gradients_match_transformers_tiny_random(tmp_path):
    config = transformers.BertConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=128,
                                     max_position_embeddings=64)
    torch.manual_seed(0)
    hf = transformers.BertForPreTraining(config)
    with torch.no_grad():  # non-zero biases, so their gradients path is exercised too
        for name, param in hf.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.1)
    hf.save_pretrained(tmp_path)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 300, (4, 20), generator=generator)
    mask = torch.ones_like(ids)
    mask[2, 13:] = 0
    types = torch.zeros_like(ids)
    types[:, 9:] = 1
    sentence_labels = torch.tensor([0, 1, 1, 0])
    positions, labels, hf_labels = _mlm_targets(ids, mask, seed=2)
    ours, theirs = _train_pair(BertForPreTraining, transformers.BertForPreTraining, tmp_path)
    module = PretrainingModule(ours, build_objectives({"mlm": 1.0, "nsp": 1.0}))
    batch = _batch(ids, mask, types, positions, labels, sentence_labels)
    loss, _ = module(batch, module.normalizers([batch]))
    ref = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=hf_labels,
                 next_sentence_label=sentence_labels)
    assert abs(loss.item() - ref.loss.item()) <= 1e-5
    loss.backward()
    ref.loss.backward()
    assert _compare_grads(ours, theirs) == sum(1 for _ in ours.parameters())


def test_qkv_parameters_keep_hf_names():
    model = BertForMaskedLM(transformers_free_config())
    names = set(model.state_dict())
    for part in ("query", "key", "value"):
        assert f"bert.encoder.layer.0.attention.self.{part}.weight" in names
        assert f"bert.encoder.layer.0.attention.self.{part}.bias" in names


def transformers_free_config():
    from zhplm.config import preset

    return preset("tiny", vocab_size=200)


def test_dropout_add_to_is_residual_plus_dropout():
    layer = Dropout(0.3).train()
    x, residual = torch.randn(8, 16, requires_grad=True), torch.randn(8, 16, requires_grad=True)
    torch.manual_seed(5)
    fused = layer.add_to(x, residual)
    torch.manual_seed(5)
    plain = residual + layer(x)
    assert torch.allclose(fused, plain)
    assert torch.equal(layer.eval().add_to(x, residual), x + residual)


def test_logits_workspace_is_reused_and_never_shared():
    from zhplm.objectives.mlm import LogitsWorkspace

    torch.manual_seed(0)
    workspace = LogitsWorkspace()
    leaves = [torch.randn(40, 16), torch.randn(300, 16), torch.randn(300)]
    labels = torch.randint(0, 300, (40,))
    ref = [t.clone().requires_grad_() for t in leaves]
    ref_loss, _ = linear_cross_entropy(*ref, labels)
    ref_loss.backward()
    buffers = set()
    for _ in range(2):  # the second step reuses the first one's buffer
        ours = [t.clone().requires_grad_() for t in leaves]
        loss, _ = linear_cross_entropy(*ours, labels, workspace)
        buffers.add(workspace.buffer.data_ptr())
        # a second forward before backward must not overwrite the lent buffer
        other = [t.clone().requires_grad_() for t in leaves]
        other_loss, _ = linear_cross_entropy(*other, labels.flip(0), workspace)
        loss.backward()
        other_loss.backward()
        assert abs(loss.item() - ref_loss.item()) <= 1e-5
        for a, b in zip(ours, ref, strict=True):
            assert (a.grad - b.grad).abs().max() <= 1e-6
        assert not workspace.lent
    assert len(buffers) == 1
    with torch.no_grad():  # no backward will come: the buffer is not lent out
        linear_cross_entropy(*leaves, labels, workspace)
    assert not workspace.lent


def test_generator_samples_follow_its_softmax():
    """`linear_cross_entropy_and_sample`: the same loss as `linear_cross_entropy`, and one
    token per row drawn from softmax(logits) by inverting the cumulative sum at the row's
    uniform (checked exactly against numpy, and in distribution over 20k draws)."""
    import numpy as np

    from zhplm.objectives.mlm import linear_cross_entropy_and_sample

    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(6, 16, generator=generator)
    weight = torch.randn(50, 16, generator=generator)
    bias = torch.randn(50, generator=generator)
    labels = torch.randint(0, 50, (6,), generator=generator)
    uniforms = torch.rand(6, generator=generator)
    loss, right, sampled = linear_cross_entropy_and_sample(hidden, weight, bias, labels,
                                                           uniforms)
    plain, plain_right = linear_cross_entropy(hidden, weight, bias, labels)
    assert torch.equal(loss, plain) and torch.equal(right, plain_right)
    probs = torch.softmax(F.linear(hidden, weight, bias).double(), dim=1).numpy()
    expected = [int(np.searchsorted(np.cumsum(p), u * p.sum(), side="right"))
                for p, u in zip(probs, uniforms.double().numpy(), strict=True)]
    assert sampled.tolist() == expected
    draws = 20000
    one = hidden[:1].expand(draws, -1)
    _, _, many = linear_cross_entropy_and_sample(one, weight, bias, labels[:1].expand(draws),
                                                 torch.rand(draws, generator=generator))
    frequency = np.bincount(many.numpy(), minlength=50) / draws
    assert np.abs(frequency - probs[0]).max() < 0.015
