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
- ``falcon_attention``, ``falcon_qkv``: Falcon's inline attention (eager or SDPA): the uniform
  rule on its two products, rotary leaves or one ALiBi leaf per layer (added to the eager
  scores and, as ``alibi / sqrt(head_dim)``, inside the mask, where the stock model puts it),
  and the fused projection's three head layouts;
- ``mpt_attention``: MPT's inline attention: the same products, its (heads, 1, keys) ALiBi
  slice made a per-sample leaf where it is added to the scores;
- ``attention_no_clip``: the kernel-wrapper attention rule, refusing OLMo's ``clip_qkv``;
  ``unsupported``: a module at a place no rule covers (Phi's ``qk_layernorm``), refused by name.
"""
from __future__ import annotations

import math

import torch
from torch.overrides import TorchFunctionMode

from ..patching import UnsupportedModelError
from ..rules import scale_grad

__all__ = ["decoder_factories", "INLINE_ATTENTION_RULES"]

#: Rules of attention modules that compute their attention inline (no AttentionInterface
#: kernel, hence no config view): the adapter counts them as the family's attention.
INLINE_ATTENTION_RULES = ("alibi_attention", "falcon_attention", "mpt_attention")


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
        return _alibi_leaf(self.part, self.module, bias, self.module.num_heads).reshape(
            bias.shape)

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


def _alibi_leaf(part, module, alibi, heads: int):
    """This layer's ALiBi leaf (B, heads, 1, keys) from the bias as the module receives it
    ((B*heads, 1, keys) or (B, heads, 1, keys)); made once per pass (a checkpoint recompute
    reuses it)."""
    leaf = part.cache.get(module)
    if leaf is None:
        batch = alibi.numel() // (heads * alibi.shape[-1])
        index = getattr(module, "layer_idx", len(part.cache))
        leaf = part.source.leaf(alibi.reshape(batch, heads, 1, alibi.shape[-1]), batch,
                                f"alibi_{index}", position_dim=3)
        part.cache[module] = leaf
    return leaf


def _falcon_layout(owner) -> tuple:
    """The head layout of Falcon's fused ``query_key_value``: per kv group ``[q x (heads/kv),
    k, v]`` (new decoder architecture), ``[q all heads, k, v]`` (multi-query) or per head
    ``[q_h, k_h, v_h]``."""
    heads, kv = owner.num_heads, owner.num_kv_heads
    if owner.new_decoder_architecture:
        return (("qk", heads // kv), ("qk", 1), ("v", 1)) * kv
    if owner.multi_query:
        return (("qk", heads), ("qk", 1), ("v", 1))
    return (("qk", 1), ("qk", 1), ("v", 1)) * heads


def _falcon_projection(part):
    """Falcon's fused projection: rotary dims of every q and k slice halved (rotary configs;
    an ALiBi config rotates nothing, its q and k are halved at ``Q K^T`` only)."""
    from .transformers import _rotary_scale

    def make(module, original):
        owner = part.parents[module]

        def forward(x, *args, **kwargs):
            out = original(x, *args, **kwargs)
            if not part.source.attribute or owner.config.alibi:
                return out
            head_dim = owner.head_dim
            scale = _rotary_scale(out.shape[-1], head_dim,
                                  part.rotary_width.get(owner, head_dim), _falcon_layout(owner),
                                  out.device, out.dtype)
            return scale_grad(out, scale)
        return forward
    return make


class _InlineProducts(TorchFunctionMode):
    """Active while Falcon's attention runs its stock forward: the uniform rule on ``Q K^T``
    (the first product of two 4-D tensors, or SDPA's q and k) and on ``A V`` (the second, or
    SDPA's output); SDPA's mask with its empty rows opened."""

    _MATMUL = frozenset({torch.matmul, torch.Tensor.__matmul__})

    def __init__(self):
        super().__init__()
        self.products = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.nn.functional.scaled_dot_product_attention:
            q, k, *rest = args
            if "attn_mask" in kwargs:
                kwargs["attn_mask"] = _open(kwargs["attn_mask"])
            return scale_grad(func(scale_grad(q, 0.5), scale_grad(k, 0.5), *rest, **kwargs), 0.5)
        if func in self._MATMUL and len(args) == 2 and all(
                torch.is_tensor(a) and a.dim() == 4 for a in args):
            self.products += 1
            if self.products == 1:
                return func(scale_grad(args[0], 0.5), scale_grad(args[1], 0.5), **kwargs)
            return scale_grad(func(*args, **kwargs), 0.5)
        return func(*args, **kwargs)


class _ScoreBiasProducts(_InlineProducts):
    """:class:`_InlineProducts` for MPT's attention, whose ALiBi bias, a (heads, 1, keys) slice
    shared by the batch, is added to the 4-D scores: that addend becomes this layer's per-sample
    leaf (B, heads, 1, keys)."""

    _ADD = frozenset({torch.add, torch.Tensor.add, torch.Tensor.__add__})

    def __init__(self, part, module):
        super().__init__()
        self.part, self.module = part, module

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self._ADD and len(args) == 2 and all(torch.is_tensor(a) for a in args) \
                and args[0].dim() == 4 and args[1].dim() == 3:
            scores, bias = args
            leaf = self.part.cache.get(self.module)
            if leaf is None:
                index = getattr(self.module, "layer_idx", len(self.part.cache))
                leaf = self.part.source.leaf(bias[None], scores.shape[0], f"alibi_{index}",
                                             position_dim=3)
                self.part.cache[self.module] = leaf
            return func(scores, leaf, **(kwargs or {}))
        return super().__torch_function__(func, types, args, kwargs)


def _mpt_attention(part):
    """MPT's attention (inline, eager): the uniform rule on its two products, the ALiBi bias
    added to the scores a positional leaf; its boolean mask (True = blocked) with the empty rows
    of padding queries opened on their own key. ``clip_qkv`` (a clamp of the projection, no
    rule) is refused."""
    from .transformers import open_empty_rows

    def make(module, original):
        if module.clip_qkv:
            raise UnsupportedModelError(
                f"{type(module).__name__} with clip_qkv={module.clip_qkv}: the clamp of q, k and "
                "v has no LRP rule; this configuration is not supported")

        def forward(*args, **kwargs):
            mask = kwargs.get("attention_mask")
            if torch.is_tensor(mask) and mask.dtype == torch.bool:
                kwargs["attention_mask"] = ~open_empty_rows(~mask)
            with _ScoreBiasProducts(part, module):
                return original(*args, **kwargs)
        return forward
    return make


def _open(mask):
    from .transformers import open_empty_rows
    return open_empty_rows(mask)


def _falcon_attention(part):
    """Falcon's attention (inline eager or SDPA): rotary configs get their cos/sin leaves as
    every rotary family does; ALiBi configs get one leaf per layer for the bias, used where the
    stock code adds it: to the eager scores and inside the 4-D mask that the model built as
    ``alibi / sqrt(head_dim)`` (rebuilt from the leaf with the same values), so each kernel
    keeps its own stock output."""
    from .transformers import _attention_rule
    make_rotary = _attention_rule(part)

    def make(module, original):
        rotary = make_rotary(module, original)

        def forward(*args, **kwargs):
            alibi = kwargs.get("alibi")
            mask = kwargs.get("attention_mask")
            if alibi is not None:
                if not torch.is_tensor(mask) or mask.dim() != 4:
                    raise UnsupportedModelError(
                        "Falcon with ALiBi: the engine needs the 4-D additive mask the model "
                        "builds for the eager and sdpa kernels")
                leaf = _alibi_leaf(part, module, alibi, module.num_heads)
                kwargs["alibi"] = leaf.reshape(alibi.shape)
                inside = leaf / math.sqrt(module.config.hidden_size // module.num_heads)
                mask = torch.where(mask < -1, mask, inside.to(mask.dtype))
            kwargs["attention_mask"] = _open(mask)
            with _InlineProducts():
                return (original if alibi is not None else rotary)(*args, **kwargs)
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
            "falcon_attention": _falcon_attention(part),
            "falcon_qkv": _falcon_projection(part),
            "mpt_attention": _mpt_attention(part),
            "unsupported": _unsupported}
