"""Masked language modelling: cross-entropy at the masked positions only.

The vocabulary projection runs on the ~15 % of positions that are predicted, never on every
token: with a 21k vocab that projection would otherwise dominate the step. The projection,
the cross-entropy and the arg-max (for accuracy) are one autograd function,
`linear_cross_entropy`: it keeps one [predicted, vocab] buffer (the exponentials, reused for
the gradient in place) where `F.linear` + `F.cross_entropy` + `argmax` make and read
five, takes one `exp` pass instead of two, and gets accuracy from the row maximum it needs
anyway (a prediction is right when the target's logit is the maximum) instead of a separate,
slower `argmax`. That buffer (~50 MB for 600 predictions x 21k tokens) is kept between steps
(`LogitsWorkspace`): a fresh one is page-faulted in every step, which cost as much as the
projection itself. The loss and gradients are the same (`tests/test_fused_ops.py` checks them
against `F.cross_entropy`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from zhplm.modeling.bert import EncoderOutput


class LogitsWorkspace:
    """A [rows, vocab] fp32 buffer reused by `linear_cross_entropy` from one step to the next.

    It is lent to one forward and given back by that forward's backward; a forward while it
    is lent (a second loss before `backward()`) or one whose backward never runs just
    allocates as usual, so reuse can only save time, never change results.
    """

    def __init__(self) -> None:
        self.buffer: Tensor | None = None
        self.lent = False

    def take(self, rows: int, vocab: int, device: torch.device) -> Tensor | None:
        if self.lent:
            return None
        if self.buffer is None or self.buffer.shape[0] < rows or \
                self.buffer.shape[1] != vocab or self.buffer.device != device:
            self.buffer = torch.empty(rows + rows // 8, vocab, device=device)
        self.lent = True
        return self.buffer[:rows]

    def give_back(self) -> None:
        self.lent = False


class _LinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(h_i W^T + b, y_i) and whether y_i has the largest logit; backward once (the
    saved exponentials become the gradient in place)."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor,  # noqa: ANN001
                labels: Tensor, workspace: LogitsWorkspace | None,
                uniforms: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        # Under autocast the product runs in the autocast dtype, as `F.linear` would; the
        # softmax is fp32 either way.
        device = hidden.device.type
        compute = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) \
            else weight.dtype
        with torch.autocast(device, enabled=False):
            h, w, b = hidden.to(compute), weight.to(compute), bias.to(compute)
            out = workspace.take(len(labels), w.shape[0], w.device) \
                if workspace is not None and compute == torch.float32 else None
            ctx.workspace = workspace if out is not None else None
            logits = torch.addmm(b, h, w.t(), out=out).float()
            target = logits.gather(1, labels[:, None]).squeeze(1)
            top = logits.amax(dim=1)
            correct = target >= top
            exps = logits.sub_(top[:, None]).exp_()
            sums = exps.sum(dim=1)
            loss = (sums.log() + top - target).sum()
            sampled = sample_rows(exps, uniforms) if uniforms is not None \
                else labels.new_empty(0)
        ctx.save_for_backward(h, w, exps, sums, labels)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype)
        ctx.mark_non_differentiable(correct, sampled)
        return loss, correct, sampled

    @staticmethod
    def backward(ctx, grad_loss: Tensor, grad_correct: Tensor,  # noqa: ANN001, ARG004
                 grad_sampled: Tensor) -> tuple[Tensor | None, ...]:  # noqa: ARG004
        h, w, exps, sums, labels = ctx.saved_tensors
        hidden_dtype, weight_dtype, bias_dtype = ctx.dtypes
        # d loss / d logits = softmax - one_hot, times the incoming gradient.
        grad = exps.mul_((grad_loss / sums)[:, None])
        grad[torch.arange(len(labels)), labels] -= grad_loss
        grad_hidden = grad_weight = grad_bias = None
        low = grad.to(w.dtype)
        if ctx.needs_input_grad[0]:
            grad_hidden = (low @ w).to(hidden_dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = (low.t() @ h).to(weight_dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dim=0).to(bias_dtype)
        if ctx.workspace is not None:
            ctx.workspace.give_back()
        return grad_hidden, grad_weight, grad_bias, None, None, None


def sample_rows(weights: Tensor, uniforms: Tensor) -> Tensor:
    """One index per row of non-negative `weights`, drawn with probability weight / total
    by inverting the row's cumulative sum at `uniforms` (one number in [0, 1) per row).

    This is an exact categorical sample, the same distribution as ELECTRA's Gumbel-max
    (argmax of logits + Gumbel noise), from one uniform per row instead of one per row and
    vocabulary entry; the uniforms come from each instance's own seed, so a sample does not
    depend on how instances are split over processes."""
    cumulative = weights.cumsum(dim=1)
    # scaled by the cumulative sum's own last entry, so a target never lands past the end
    targets = (uniforms.to(cumulative.dtype) * cumulative[:, -1])[:, None]
    index = torch.searchsorted(cumulative, targets, right=True).squeeze(1)
    return index.clamp_(max=weights.shape[1] - 1)


def linear_cross_entropy(hidden: Tensor, weight: Tensor, bias: Tensor, labels: Tensor,
                         workspace: LogitsWorkspace | None = None) -> tuple[Tensor, Tensor]:
    """(summed cross-entropy of `hidden @ weight.T + bias` against `labels`, a bool per row:
    the label's logit is the largest, i.e. argmax == label up to exact ties):
    `F.cross_entropy(F.linear(hidden, weight, bias), labels, reduction="sum")` without its
    [n, vocab] temporaries. With a `workspace`, its buffer holds the logits when a backward
    will follow (grad enabled)."""
    loss, correct, _ = _apply(hidden, weight, bias, labels, workspace, None)
    return loss, correct


def linear_cross_entropy_and_sample(hidden: Tensor, weight: Tensor, bias: Tensor,
                                    labels: Tensor, uniforms: Tensor,
                                    workspace: LogitsWorkspace | None = None
                                    ) -> tuple[Tensor, Tensor, Tensor]:
    """`linear_cross_entropy`, plus one token per row sampled from softmax(logits) with
    `uniforms` (see `sample_rows`): ELECTRA's generator loss and its samples from one
    projection."""
    return _apply(hidden, weight, bias, labels, workspace, uniforms)


def _apply(hidden: Tensor, weight: Tensor, bias: Tensor, labels: Tensor,
           workspace: LogitsWorkspace | None, uniforms: Tensor | None
           ) -> tuple[Tensor, Tensor, Tensor]:
    backward = torch.is_grad_enabled() and any(
        t.requires_grad for t in (hidden, weight, bias))
    return _LinearCrossEntropy.apply(hidden, weight, bias, labels,
                                     workspace if backward else None, uniforms)


class MaskedLM:
    """The MLM objective over `model.cls.predictions` (tied to the word embeddings)."""

    name = "mlm"

    def __init__(self) -> None:
        self.workspace = LogitsWorkspace()

    def counts(self, batch) -> dict[str, float]:  # noqa: ANN001 - PretrainBatch
        return {"mlm": float(batch.mlm_labels.numel())}

    def loss(self, model: nn.Module, encoded: EncoderOutput, batch,  # noqa: ANN001
             normalizers: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        hidden = encoded.last_hidden_state.flatten(0, 1).index_select(0, batch.mlm_positions)
        head = model.cls.predictions
        loss_sum, right = linear_cross_entropy(head.transform(hidden), head.decoder_weight,
                                               head.bias, batch.mlm_labels, self.workspace)
        correct = right.sum()
        stats = {"mlm_loss_sum": loss_sum.detach(), "mlm_correct": correct.float(),
                 "mlm_count": loss_sum.new_tensor(float(batch.mlm_labels.numel()))}
        return loss_sum / normalizers["mlm"].clamp(min=1), stats
