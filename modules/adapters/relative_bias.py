"""Relative position biases over the whole token sequence (timm's BEiT): a positional leaf
read per key token (docs/method.md, section 14).

A BEiT attention adds to its scores a bias ``b[h, i, j]`` looked up from a table by the
relative place of query ``i`` and key ``j`` (the class token has its own entries): per block
(``use_rel_pos_bias``) or one table shared by every block (``use_shared_rel_pos_bias``). The
score addition is a plain sum, so the bias's relevance is ``b * g`` (the epsilon rule, M9, as
for an added table); it is read per key token: the leaf is the (B, heads, N, N) bias made per
sample, position on dim 3, heads and queries summed. The optional absolute ``pos_embed`` is a
leaf as in the ViT family (added after the class-token concat).
"""
from __future__ import annotations

import torch

__all__ = ["beit_attention", "beit_features"]


def _attend():
    from .timm import _attend as attend      # the timm adapter's attention rules
    return attend


def beit_attention(part):
    """timm ``beit.Attention``: qkv (with the separate q/v biases), the block's bias (a leaf)
    plus the shared one, attention under the rule set on the model's own kernel."""
    blocks: dict = {}

    def make(module, original):
        index = blocks.setdefault(id(module), len(blocks))

        def forward(x, shared_rel_pos_bias=None):
            batch, tokens, channels = x.shape
            if module.q_bias is None:
                qkv = module.qkv(x)
            else:
                qkv_bias = torch.cat((module.q_bias, module.k_bias, module.v_bias))
                if module.qkv_bias_separate:
                    qkv = module.qkv(x) + qkv_bias
                else:
                    qkv = torch.nn.functional.linear(x, module.qkv.weight, qkv_bias)
            q, k, v = qkv.reshape(batch, tokens, 3, module.num_heads, -1).permute(
                2, 0, 3, 1, 4).unbind(0)
            bias = None
            if module.relative_position_bias_table is not None:
                bias = part.source.leaf(module._get_rel_pos_bias(), batch,
                                        f"rel_bias_{index}", position_dim=3)
            if shared_rel_pos_bias is not None:
                bias = shared_rel_pos_bias if bias is None else bias + shared_rel_pos_bias
            out = _attend()(module, q, k, v, part.rules, bias, False)
            out = out.transpose(1, 2).reshape(batch, tokens, -1)
            return module.proj_drop(module.proj(out))

        return forward

    return make


def beit_features(part):
    """``Beit.forward_features`` with the absolute ``pos_embed`` (if any) and the shared
    relative bias (if any) as leaves."""

    def make(model, original):
        def forward(x):
            x = model.patch_embed(x)
            batch = x.shape[0]
            x = torch.cat((model.cls_token.expand(batch, -1, -1), x), dim=1)
            if model.pos_embed is not None:
                x = x + part.source.leaf(model.pos_embed, batch, "pos_embed")
            x = model.pos_drop(x)
            shared = None
            if model.rel_pos_bias is not None:
                shared = part.source.leaf(model.rel_pos_bias()[None], batch, "shared_rel_bias",
                                          position_dim=3)
            for block in model.blocks:
                x = block(x, shared_rel_pos_bias=shared)
            return model.norm(x)

        return forward

    return make
