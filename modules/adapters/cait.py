"""timm's CaiT: talking-heads self-attention, class-attention blocks, layer scale, and a
``pos_embed`` added to the patch tokens before the class token joins (docs/method.md,
section 14).

- ``TalkingHeadAttn``: ``A = W_w softmax(W_l (s q k^T))`` mixes the heads' scores before and
  their probabilities after the softmax (``proj_l``, ``proj_w``: linear maps across heads,
  plain, i.e. epsilon); ``q k^T`` and ``A V`` get the rule set's attention rule: ``uniform``
  halves q's, k's and the output's gradients (the softmax plain); ``constant`` makes the
  mixed probabilities A constants, V receiving ``v_scale A^T g``.
- ``ClassAttn``: the class token's query over all tokens, timm's own kernel under the rule set
  (the timm adapter's attention).
- ``Cait.forward_features``: the ``pos_embed`` (patch tokens only; the class token is
  concatenated later, in front, so the table's offset is the prefix) is the positional leaf.
"""
from __future__ import annotations

from ..rules import scale_grad

__all__ = ["talking_heads_attention", "class_attention", "cait_features"]


def talking_heads_attention(rules):
    """Forward of ``TalkingHeadAttn`` (timm 1.0, cait.py) under ``rules``."""

    def make(module, original):
        def forward(x):
            batch, tokens, channels = x.shape
            heads = module.num_heads
            qkv = module.qkv(x).reshape(batch, tokens, 3, heads, channels // heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            if rules.attention == "uniform":
                q, k = scale_grad(q, 0.5), scale_grad(k, 0.5)
            scores = (q * module.scale) @ k.transpose(-2, -1)
            scores = module.proj_l(scores.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            probs = module.proj_w(scores.softmax(dim=-1).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            if rules.attention == "uniform":
                out = scale_grad(probs @ v, 0.5)
            else:
                out = probs.detach() @ scale_grad(v, rules.v_scale)
            out = out.transpose(1, 2).reshape(batch, tokens, channels)
            return module.proj_drop(module.proj(out))

        return forward

    return make


def class_attention(rules):
    """Forward of ``ClassAttn``: the class token (row 0) queries every token."""
    from .timm import _attend

    def make(module, original):
        def forward(x):
            batch, tokens, channels = x.shape
            heads = module.num_heads
            q = module.q(x[:, 0]).unsqueeze(1).reshape(batch, 1, heads, channels // heads)
            q = q.permute(0, 2, 1, 3)
            k = module.k(x).reshape(batch, tokens, heads, channels // heads).permute(0, 2, 1, 3)
            v = module.v(x).reshape(batch, tokens, heads, channels // heads).permute(0, 2, 1, 3)
            out = _attend(module, q, k, v, rules, None, False)
            out = out.transpose(1, 2).reshape(batch, 1, channels)
            return module.proj_drop(module.proj(out))

        return forward

    return make


def cait_features(part):
    """``Cait.forward_features`` with ``pos_embed`` as the positional leaf (offset: the class
    token, concatenated in front after the self-attention blocks)."""

    def make(model, original):
        def forward(x):
            x = model.patch_embed(x)
            x = x + part.source.leaf(model.pos_embed, x.shape[0], "pos_embed",
                                     offset=model.num_prefix_tokens)
            x = model.blocks(model.pos_drop(x))
            if model.blocks_token_only is not None:
                x = model.forward_cls(x)
            return model.norm(x)

        return forward

    return make
