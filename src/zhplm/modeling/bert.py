"""BERT in one file: embeddings, post-LN transformer layers, pooler, MLM and NSP heads.

Module and parameter names are exactly Hugging Face's (`bert.encoder.layer.0.attention.self.
query.weight`, `cls.predictions.transform.dense.weight`, ...), so a `state_dict` moves
between zhplm and `transformers` without renaming. Attention runs through
`torch.nn.functional.scaled_dot_product_attention` (its fused kernel) whenever attention
dropout is off; in training with attention dropout it runs as SDPA's own math path would
(which it takes anyway on CPU when `dropout_p > 0`), with the faster dropout masks below.

Training speed on CPU (see `benchmarks/pretrain_vs_uer.py`): the query/key/value projections
run as one GEMM over the concatenated weights (the three `nn.Linear`s, and so the HF parameter
names, stay as they are), and dropout masks come from numpy's SFC64 generator, seeded from
torch's generator on every call (so `torch.manual_seed` and the checkpointed torch RNG state
still make runs reproducible), instead of torch's serial `bernoulli_` — which cost 10-20 % of
a small model's training step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zhplm.config import ModelConfig
from zhplm.modeling.dropout import Dropout, dropout_mask
from zhplm.modeling.layer_norm import make_layer_norm
from zhplm.modeling.pretrained import PreTrainedModel

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "tanh": torch.tanh,
}


def attention_with_dropout(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None,
                           dropout_p: float) -> Tensor:
    """softmax(q k^T / sqrt(d) + mask) with dropout, times v: SDPA's math path, spelled out
    so the dropout mask comes from `dropout_mask`. `attn_mask` is SDPA's boolean form
    (True = attend) or None."""
    scores = torch.matmul(q * (1.0 / math.sqrt(q.shape[-1])), k.transpose(-2, -1))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        probs = probs * dropout_mask(tuple(probs.shape), dropout_p, probs.dtype, probs.device)
    return torch.matmul(probs, v)


@dataclass
class EncoderOutput:
    """What `BertModel` returns."""

    last_hidden_state: Tensor
    pooler_output: Tensor | None = None


@dataclass
class MaskedLMOutput:
    """What `BertForMaskedLM` returns."""

    logits: Tensor
    last_hidden_state: Tensor | None = None


@dataclass
class PreTrainingOutput:
    """What `BertForPreTraining` returns."""

    prediction_logits: Tensor
    seq_relationship_logits: Tensor
    last_hidden_state: Tensor | None = None


class BertEmbeddings(nn.Module):
    """Word + absolute position + token type embeddings, then LayerNorm and dropout.

    `width` is the embedding size: `hidden_size` for BERT, `embedding_size` for ELECTRA."""

    def __init__(self, config: ModelConfig, width: int | None = None) -> None:
        super().__init__()
        width = width or config.hidden_size
        self.word_embeddings = nn.Embedding(
            config.vocab_size, width, padding_idx=config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, width)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width)
        self.LayerNorm = make_layer_norm(width, config)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        seq_len = input_ids.shape[1]
        x = self.word_embeddings(input_ids) + self.position_embeddings.weight[:seq_len]
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """Multi-head self-attention projections (`query`, `key`, `value`) around SDPA."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        batch, seq_len, hidden = x.shape
        # One GEMM for the three projections (concatenating the weights is cheap); the
        # parameters stay `query`, `key`, `value` as in HF.
        weight = torch.cat((self.query.weight, self.key.weight, self.value.weight))
        bias = torch.cat((self.query.bias, self.key.bias, self.value.bias))
        qkv = F.linear(x, weight, bias).view(batch, seq_len, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        dropout_p = self.dropout_p if self.training else 0.0
        if dropout_p > 0.0:
            context = attention_with_dropout(q, k, v, attn_mask, dropout_p)
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return context.transpose(1, 2).reshape(batch, seq_len, hidden)


class BertSelfOutput(nn.Module):
    """Attention output projection, dropout, residual, LayerNorm (post-LN); the dropout and
    the residual add are one `addcmul`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = make_layer_norm(config.hidden_size, config)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout.add_to(self.dense(hidden), residual))


class BertAttention(nn.Module):
    """Self-attention block: `self` (projections + SDPA) and `output`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        return self.output(self.self(x, attn_mask), x)


class BertIntermediate(nn.Module):
    """First feed-forward projection and activation."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.dense(x))


class BertOutput(nn.Module):
    """Second feed-forward projection, dropout, residual, LayerNorm."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = make_layer_norm(config.hidden_size, config)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout.add_to(self.dense(hidden), residual))


class BertLayer(nn.Module):
    """One post-LN transformer layer."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        x = self.attention(x, attn_mask)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    """A stack of `BertLayer`s."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        for layer in self.layer:
            x = layer(x, attn_mask)
        return x


class BertPooler(nn.Module):
    """tanh(dense(first token)): the sentence vector NSP and classifiers use."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


def attention_bias(attention_mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Turn a [batch, seq] 1/0 padding mask into an SDPA mask, or None when nothing is padded.

    Returns a boolean [batch, 1, 1, seq] mask (True = attend). Skipping the mask when every
    position is real lets SDPA take its fastest kernel.
    """
    if attention_mask is None:
        return None
    mask = attention_mask.bool()
    if bool(mask.all()):
        return None
    return mask[:, None, None, :]


class BertModel(PreTrainedModel):
    """The encoder: `embeddings`, `encoder`, optional `pooler`."""

    base_model_prefix = ""
    backbone_name = "bert"

    def __init__(self, config: ModelConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.init_weights()

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> EncoderOutput:
        """Encode a batch of token ids ([batch, seq]) into hidden states."""
        x = self.embeddings(input_ids, token_type_ids)
        x = self.encoder(x, attention_bias(attention_mask, x.dtype))
        pooled = self.pooler(x) if self.pooler is not None else None
        return EncoderOutput(last_hidden_state=x, pooler_output=pooled)


class BertPredictionHeadTransform(nn.Module):
    """dense + activation + LayerNorm before the vocabulary projection."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.LayerNorm = make_layer_norm(config.hidden_size, config)

    def forward(self, x: Tensor) -> Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    """MLM head: transform, then a decoder tied to the word embeddings, plus a bias."""

    def __init__(self, config: ModelConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.word_embeddings = [word_embeddings]  # a list: not registered twice as a module

    @property
    def decoder_weight(self) -> Tensor:
        """The (tied) vocabulary projection."""
        return self.word_embeddings[0].weight

    def forward(self, hidden: Tensor) -> Tensor:
        return F.linear(self.transform(hidden), self.decoder_weight, self.bias)


class BertOnlyMLMHead(nn.Module):
    """`cls` of `BertForMaskedLM`."""

    def __init__(self, config: ModelConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(config, word_embeddings)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.predictions(hidden)


class BertPreTrainingHeads(nn.Module):
    """`cls` of `BertForPreTraining`: MLM predictions and the NSP classifier."""

    def __init__(self, config: ModelConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(config, word_embeddings)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


class BertForMaskedLM(PreTrainedModel):
    """BERT with the masked-language-model head (no pooler, as in HF)."""

    base_model_prefix = "bert"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config, self.bert.embeddings.word_embeddings)
        self.cls.apply(self._init_module)

    def masked_lm_logits(self, hidden: Tensor) -> Tensor:
        """Vocabulary logits of some positions' hidden states ([n, hidden] -> [n, vocab]);
        every family's masked LM has this (the fill-mask pipeline uses it)."""
        return self.cls(hidden)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> MaskedLMOutput:
        """Vocabulary logits at every position ([batch, seq, vocab])."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
        return MaskedLMOutput(logits=self.cls(hidden), last_hidden_state=hidden)


class BertForPreTraining(PreTrainedModel):
    """BERT with the MLM and NSP heads, as in the original pre-training."""

    base_model_prefix = "bert"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=True)
        self.cls = BertPreTrainingHeads(config, self.bert.embeddings.word_embeddings)
        self.cls.apply(self._init_module)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> PreTrainingOutput:
        """MLM logits at every position and NSP logits per sequence."""
        out = self.bert(input_ids, attention_mask, token_type_ids)
        return PreTrainingOutput(
            prediction_logits=self.cls.predictions(out.last_hidden_state),
            seq_relationship_logits=self.cls.seq_relationship(out.pooler_output),
            last_hidden_state=out.last_hidden_state,
        )
