"""DeBERTa's disentangled attention for the transformers adapter (docs/method.md, section 13,
"Relative-position biases").

``DisentangledSelfAttention`` computes its scores itself (no attention-interface kernel):

    z = Q K^T / s + rel,    rel = c2p + p2c,    c2p[i, j] = Q_i . Kr_d(i,j) / s,
                                                p2c[i, j] = K_j . Qr_d(j,i) / s

with ``Kr``, ``Qr`` projections of the relative-distance embeddings (shared by the layers) and
``d`` the bucketed distance. The rules:

- ``Q K^T``: uniform (M5), the gradients of the ``query_proj`` and ``key_proj`` outputs halved
  (``halve_output``); ``A V``: uniform, the gradient entering the ``DebertaV2SelfOutput.dense``
  (the context's only consumer) halved;
- ``c2p``, ``p2c``: products of content (Q or K) and position (Kr or Qr), so the uniform rule
  (M5) as for RoPE's products: half of their relevance to the content, which flows on through Q
  and K (the halving at their projections is that half), half to the position. The positional
  half is read from a leaf with the value of ``rel`` as added to the scores, shape (B, heads,
  queries, keys), read per key position (``position_dim=3``), one sink per layer
  (``rel_0``, ``rel_1``, ...): relevance ``rel * grad / 2`` at the sum (M15);
- AttnLRP (positions constant): ``Kr`` and ``Qr`` are constants, so ``c2p`` and ``p2c`` are
  linear in the content, which keeps all of their relevance (the gradient through ``rel`` is
  doubled to undo the projections' halving, which belongs to ``Q K^T`` only).
"""
from __future__ import annotations

import torch

from ..rules import scale_grad

__all__ = ["factories"]


def _halve_output(module, original):
    def forward(*args, **kwargs):
        return scale_grad(original(*args, **kwargs), 0.5)
    return forward


def _plain(module, original):
    return original


def _relative_scores(part):
    """``disentangled_attention_bias`` of one attention module: the stock ``rel``, split by the
    uniform rule between the content (its autograd path) and a positional leaf."""
    def make(module, original):
        def method(*args, **kwargs):
            rel = original(*args, **kwargs)
            if not torch.is_tensor(rel):
                return rel                       # no c2p / p2c term configured
            if not part.source.attribute:
                return scale_grad(rel, 2.0)      # positions constant: content keeps all
            heads = module.num_attention_heads
            batch = rel.shape[0] // heads
            leaf = part.cache.get(("rel", module))
            if leaf is None:                     # first call this pass (not a recompute)
                index = sum(1 for key in part.cache if isinstance(key, tuple)
                            and key[0] == "rel")
                leaf = part.source.leaf(rel.detach().reshape(batch, heads, *rel.shape[1:]),
                                        batch, f"rel_{index}", position_dim=3)
                part.cache[("rel", module)] = leaf
            content = rel - rel.detach()         # value 0, gradient into Q, K (halved there)
            return scale_grad(leaf, 0.5).reshape(rel.shape) + content
        return method
    return make


def factories(part) -> dict:
    """The rules of a disentangled-attention family, by name."""
    return {"halve_output": _halve_output, "disentangled_attention": _plain,
            "relative_scores": _relative_scores(part)}
