"""AttnLRP's uniform rule for ``torch.nn.MultiheadAttention`` (docs/method.md, sections 5 and
14): uniform on ``Q K^T`` and on ``A V``, softmax, scale and masks plain. One mechanism for every
model that uses the module: torchvision's ViT blocks (self-attention, ``x, x, x``), the
attention-pool head of transformers' SigLIP and SigLIP 2 towers (a learned probe as the one
query over the tokens).

No torch code is replaced: the stock ``forward`` runs (``F.multi_head_attention_forward``:
in-projections, attention, out-projection), between two gradient scalings. The in-projections
and the out-projection are linear, so halving the gradient at the module's query and key inputs
halves it exactly at q and k (the uniform rule on ``Q K^T``: half of a score's relevance to
each), and halving it at the module's output halves it exactly at the ``A V`` product (half to
A, half to V). A query that is a parameter (SigLIP's probe) takes its half out of the
explanation, as a bias does.

Self-attention (``query is key is value``): the halved query and key are new tensors, so the
stock code projects q, k and v separately, with the rows of ``in_proj_weight`` it would use in
one packed projection; the values are the packed projection's up to the order of floating-point
sums (checked against the stock module in float64, tests/test_multihead_attention.py). Masks
(``key_padding_mask``, ``attn_mask``, ``is_causal``), ``need_weights``, ``bias_k``/``bias_v``,
``add_zero_attn``, separate q/k/v weights and sequence-first inputs are the stock code's: the
rule only needs the projections to be linear. The returned attention weights, if asked for,
are the stock ones; relevance is explained through the output only.
"""
from __future__ import annotations

from ..patching import UnsupportedModelError
from ..rules import scale_grad

__all__ = ["multihead_attention", "factories"]


def multihead_attention(rules):
    """``make(module, original)`` for ``nn.MultiheadAttention`` under ``rules``; only the
    uniform attention rule (the constant rule would need A itself, which the stock code keeps
    inside)."""

    def make(module, original):
        if rules.attention != "uniform":
            raise UnsupportedModelError(
                f"nn.MultiheadAttention is explained with the uniform attention rule only "
                f"(rule set 'uniform'), not {rules.attention!r}")

        def forward(query, key, value, key_padding_mask=None, need_weights=True,
                    attn_mask=None, average_attn_weights=True, is_causal=False):
            out, weights = original(scale_grad(query, 0.5), scale_grad(key, 0.5), value,
                                    key_padding_mask=key_padding_mask, need_weights=need_weights,
                                    attn_mask=attn_mask, average_attn_weights=average_attn_weights,
                                    is_causal=is_causal)
            return scale_grad(out, 0.5), weights

        return forward

    return make


def factories(part) -> dict:
    return {"multihead_attention": multihead_attention(part.rules)}
