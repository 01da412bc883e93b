"""Attention pooling with ``torch.nn.MultiheadAttention`` (SigLIP's
``SiglipMultiheadAttentionPoolingHead``: a learned probe as the one query over the tower's
tokens): AttnLRP's uniform rule on ``Q K^T`` and ``A V`` (docs/method.md, section 5), as the
transformers kernel wrapper gives every other attention of these models.

``nn.MultiheadAttention`` computes its attention inside ``F.multi_head_attention_forward``
(in-projections, ``bmm``/``baddbmm`` or SDPA, softmax, out-projection). Its projections are
linear, so scaling the gradient at the module's inputs and output scales it at q, k and at the
``A V`` product exactly: the query and the key inputs get half (the uniform rule on ``Q K^T``;
the query is the probe, a parameter, so its half leaves the explanation as a parameter's
would), the output gets half (the uniform rule on ``A V``: half to A, half to V). No torch code
is replaced. The key and the value are the same tensor in SigLIP's head; the halved key is a
view of it, so the module projects the two separately (numerically the same values up to the
order of floating-point sums: the separate projections use the same weights' rows).
"""
from __future__ import annotations

from ..rules import scale_grad

__all__ = ["factories"]


def factories(part) -> dict:
    return {"attention_pool": _attention_pool}


def _attention_pool(module, original):
    def forward(query, key, value, *args, **kwargs):
        out = original(scale_grad(query, 0.5), scale_grad(key, 0.5), value, *args, **kwargs)
        return (scale_grad(out[0], 0.5), *out[1:])
    return forward
