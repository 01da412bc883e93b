"""Rules of the decoders whose modelling code differs from Llama's (docs/method.md, sections 5
and 11), for the transformers adapter:

- ``rotary_qkv_per_head``: a fused q/k/v projection laid out per head, ``[q_h, k_h, v_h]`` for
  each head h (GPT-NeoX's and Falcon's classic ``query_key_value``): the gradient of its output
  is halved on the rotary dims of each q and k slice (the uniform rule's share of q, k in the
  rotary products), v and partial-rotary pass-through dims untouched;
- ``layer_norm_no_affine``: a LayerNorm without weight or bias, computed by the stock module
  (OLMo's ``OlmoLayerNorm``): the standard deviation a constant (M6), so the backward is
  ``g_x = (g - mean(g)) / std``; the forward value is the stock module's own;
- ``alibi_attention``: an attention module that computes ``softmax(a Q K^T + bias + mask) V``
  inline (BLOOM): the uniform rule on ``Q K^T`` (q and k gradients halved) and on ``A V``
  (its output gradient halved), the softmax plain, and the ALiBi bias a positional leaf: the
  epsilon rule on ``scores + bias`` gives it ``bias * grad`` (section 11), reported per key;
- ``attention_no_clip``: the kernel-wrapper attention rule, refusing OLMo's ``clip_qkv``;
  ``unsupported``: a module at a place no rule covers (Phi's ``qk_layernorm``), refused by name.
"""
from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

from ..patching import UnsupportedModelError
from ..rules import scale_grad

__all__ = ["decoder_factories", "INLINE_ATTENTION_RULES"]

#: Rules of attention modules that compute their attention inline (no AttentionInterface
#: kernel, hence no config view): the adapter counts them as the family's attention.
INLINE_ATTENTION_RULES = ("alibi_attention",)


def _head_dim(owner) -> int:
    return getattr(owner, "head_dim", None) or owner.head_size


def _per_head_projection(part):
    """The gradient scale of a per-head fused ``[q_h, k_h, v_h]`` projection."""
    from .transformers import _rotary_scale

    def make(module, original):
        owner = part.parents[module]

        def forward(x, *args, **kwargs):
            out = original(x, *args, **kwargs)
            if not part.source.attribute:
                return out
            head_dim = _head_dim(owner)
            heads = out.shape[-1] // (3 * head_dim)
            rotary_dim = part.rotary_width.get(owner, head_dim)
            scale = _rotary_scale(out.shape[-1], head_dim, rotary_dim,
                                  (("qk", 1), ("qk", 1), ("v", 1)) * heads, out.device,
                                  out.dtype)
            return scale_grad(out, scale)
        return forward
    return make


def _layer_norm_no_affine(module, original):
    def forward(x, *args, **kwargs):
        out = original(x, *args, **kwargs)
        if not torch.is_grad_enabled() or not x.requires_grad:
            return out
        eps = getattr(module, "eps", 1e-5)
        # at least float32, as the stock norms compute (float64 stays float64)
        wide = x.to(torch.promote_types(x.dtype, torch.float32))
        rstd = torch.rsqrt(wide.detach().var(-1, unbiased=False, keepdim=True) + eps)
        linear = ((wide - wide.mean(-1, keepdim=True)) * rstd).to(out.dtype)
        # the stock value, with the gradient of the std-constant linear map
        return out.detach() + (linear - linear.detach())
    return forward


class _BaddbmmAttention(TorchFunctionMode):
    """Active while an ALiBi attention module's stock forward runs (BLOOM): in
    ``bias.baddbmm(q, k^T)`` the bias becomes this layer's positional leaf and q, k get half
    of the gradient; the output of ``bmm(A, V)`` gets half of it."""

    def __init__(self, part, module):
        super().__init__()
        self.part, self.module = part, module

    def _bias(self, bias):
        part, module = self.part, self.module
        leaf = part.cache.get(module)
        if leaf is None:           # first call this pass (not a checkpoint recompute)
            heads = module.num_heads
            batch = bias.shape[0] // heads
            index = getattr(module, "layer_idx", len(part.cache))
            leaf = part.source.leaf(bias.reshape(batch, heads, *bias.shape[1:]), batch,
                                    f"alibi_{index}", position_dim=3)
            part.cache[module] = leaf
        return leaf.reshape(bias.shape)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.baddbmm:
            bias, *rest = args
            if "batch1" in kwargs:
                kwargs["batch1"] = scale_grad(kwargs["batch1"], 0.5)
                kwargs["batch2"] = scale_grad(kwargs["batch2"], 0.5)
            else:
                rest = [scale_grad(rest[0], 0.5), scale_grad(rest[1], 0.5), *rest[2:]]
            return func(self._bias(bias), *rest, **kwargs)
        if func is torch.bmm:
            return scale_grad(func(*args, **kwargs), 0.5)
        return func(*args, **kwargs)


def _alibi_attention(part):
    from .transformers import open_empty_rows

    def make(module, original):
        def forward(*args, **kwargs):
            if "attention_mask" in kwargs:
                kwargs["attention_mask"] = open_empty_rows(kwargs["attention_mask"])
            with _BaddbmmAttention(part, module):
                return original(*args, **kwargs)
        return forward
    return make


def _unsupported(module, original):
    raise UnsupportedModelError(
        f"a {type(module).__name__} at this place of the model has no LRP rule (e.g. Phi's "
        "qk_layernorm between the q/k projections and the rotation); this configuration is "
        "not supported")


def _attention_without_clip(part):
    """The kernel-wrapper attention rule, refusing OLMo's ``clip_qkv`` (an in-place clamp of
    q, k and v that no rule covers)."""
    from .transformers import _attention_rule
    make_attention = _attention_rule(part)

    def make(module, original):
        if getattr(module.config, "clip_qkv", None) is not None:
            raise UnsupportedModelError(
                f"{type(module).__name__} with clip_qkv={module.config.clip_qkv}: the in-place "
                "clamp of q, k and v has no LRP rule; this configuration is not supported")
        return make_attention(module, original)
    return make


def decoder_factories(part) -> dict:
    """Rule name -> ``make(module, original)`` for one part: the rules above."""
    return {"rotary_qkv_per_head": _per_head_projection(part),
            "layer_norm_no_affine": _layer_norm_no_affine,
            "alibi_attention": _alibi_attention(part),
            "attention_no_clip": _attention_without_clip(part),
            "unsupported": _unsupported}
