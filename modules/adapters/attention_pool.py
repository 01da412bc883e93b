"""timm's attention-pool head (``global_pool='map'``, SigLIP-style ViTs): ``AttentionPoolLatent``,
a learned latent query attending over the tokens (docs/method.md, section 14).

Its attention gets the rule set's attention rule, as every block's attention does (``uniform``:
uniform on ``Q K^T`` and ``A V``, softmax plain; ``constant``: the probabilities constant, V's
share ``v_scale``), on timm's own kernel; the q and kv projections, the output projection, the
residual add and the token readout or mean are plain (epsilon); its MLP and LayerNorm get the
family's MLP and norm rules through the map. The latent is a parameter, not an input: the
relevance reaching it (through the queries, under the uniform rule) is not attributed, as for
any bias.
"""
from __future__ import annotations

from ..patching import UnsupportedModelError

__all__ = ["latent_attention_pool"]


def latent_attention_pool(rules):
    """Forward of ``AttentionPoolLatent`` (timm 1.0, layers/attention_pool.py) under ``rules``."""
    from .timm import _attend

    def make(module, original):
        if module.pos_embed is not None:
            raise UnsupportedModelError("an attention-pool head with its own position table "
                                        "(pos_embed='abs') is not supported")

        def forward(x, attn_mask=None):
            batch, tokens, channels = x.shape
            heads, head_dim = module.num_heads, module.head_dim
            latent = module.latent.expand(batch, -1, -1)
            q = module.q(latent).reshape(batch, module.latent_len, heads, head_dim).transpose(1, 2)
            k, v = module.kv(x).reshape(batch, tokens, 2, heads, head_dim).permute(
                2, 0, 3, 1, 4).unbind(0)
            q, k = module.q_norm(q), module.k_norm(k)
            out = _attend(module, q, k, v, rules, attn_mask, False)
            out = out.transpose(1, 2).reshape(batch, module.latent_len, channels)
            out = module.proj_drop(module.proj(out))
            if module.mlp is not None:
                out = out + module.mlp(module.norm(out))
            if module.pool == "token":
                return out[:, 0]
            return out.mean(1) if module.pool == "avg" else out

        return forward

    return make
