"""The timm adapter: how the engine reaches timm's vision transformers (``VisionTransformer``,
``VisionTransformerDistilled``, ``Eva``); the only module that knows their internals.

It implements the rules the timm family maps name (docs/method.md; tables in
docs/vision_families.md):

| place                                   | rule                                   | how                          |
|-----------------------------------------|----------------------------------------|------------------------------|
| patch-embedding conv                    | Gamma, ``rules.gamma_conv`` (100)      | :func:`rules.gamma_conv2d`   |
| MLP linears, classifier head(s)         | Gamma, ``rules.gamma_linear`` (0.05)   | :func:`rules.gamma_linear`   |
| every LayerNorm                         | std constant                           | :func:`rules.layer_norm_const_std` |
| GELU, quick-GELU, SiLU                  | identity                               | :func:`rules.identity_act`   |
| gate product of SwiGLU / GluMlp         | uniform                                | :func:`rules.scale_grad` 1/2 |
| attention, ``"constant"``               | probabilities constant, V's share ``rules.v_scale`` | gradient to V only, ``v_scale A^T g`` |
| attention, ``"uniform"``                | uniform on Q K^T and A V, softmax plain | :func:`rules.scale_grad` 1/2 |
| rotary products (EVA-02)                | uniform (half to q/k, half to sin/cos) | :func:`rules.scale_grad` 1/2 |
| qkv, proj, residual adds, LayerScale, position add, token concat, pooling | epsilon | plain autograd |

Both attention rules run the model's own kernel in the forward (``F.scaled_dot_product_attention``
on timm's fused path, the explicit softmax otherwise), so the forward is the stock one bit for bit;
the uniform rule scales the gradients around it, the constant rule replaces its backward by V's
gradient alone (no softmax backward, no q/k gradient; on CPU flash attention, ``A^T g`` is one
more flash call on the kept log-sum-exp, see :class:`_ConstantAttention`).

Positional relevance: every place where position enters is a leaf of the part's
:class:`palrp.modules.positional.PositionalSource`: the additive ``pos_embed`` exactly as
``_pos_embed`` adds it (after timm resamples it for a dynamic image size; with
``no_embed_class`` it skips the prefix tokens, recorded as its offset), and, for EVA-02, each
block's rotary cos and sin (patch tokens only). The stream's geometry (patch size, grid,
prefix tokens) is read from the model (:func:`geometry`). What this module mirrors of timm's code
(``_pos_embed``, the two attention forwards, the GLU MLP forwards) sits in the functions below
(timm 1.0).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..patching import UnsupportedModelError
from ..positional import PositionalSource
from .attention_pool import latent_attention_pool
from .cait import cait_features, class_attention, talking_heads_attention
from .relative_bias import beit_attention, beit_features
from .windows import window_block_attention
from ..rules import (RuleSet, gamma_conv2d, gamma_linear, identity_act, layer_norm_const_std,
                     scale_grad)

__all__ = ["factories", "check", "check_model", "install", "geometry", "call_model", "pair",
           "patch_embed_of", "patch_size", "image_size", "dynamic_image_size", "grid_size",
           "has_class_token", "num_prefix_tokens"]

# =========================================================================================
# Adapter: what is mirrored of timm's modelling code (timm 1.0: vision_transformer.py,
# deit.py, eva.py, layers/attention.py, layers/mlp.py, layers/pos_embed_sincos.py).
# =========================================================================================
from timm.layers import resample_abs_pos_embed  # noqa: E402
from timm.layers.pos_embed_sincos import rope_rotate_half, rot  # noqa: E402


def _prefix_tokens(model) -> list[torch.Tensor]:
    """The prefix-token parameters in sequence order: class, distillation, registers."""
    if type(model).__name__ == "VisionTransformerDistilled":
        return [model.cls_token, model.dist_token]
    return [t for t in (getattr(model, "cls_token", None), getattr(model, "reg_token", None))
            if t is not None]


def check_model(model) -> None:
    """Configurations inside a covered class that the rules do not handle: one line each."""
    pool = getattr(model, "attn_pool", None)
    if pool is not None and type(pool).__name__ != "AttentionPoolLatent":
        raise UnsupportedModelError(
            f"{type(model).__name__} pools with a {type(pool).__name__} head, which the rules "
            "do not cover; build it with global_pool='token', 'avg' or 'map'")
    for module in model.modules():
        if getattr(module, "gate", None) is not None and isinstance(module.gate, nn.Linear):
            raise UnsupportedModelError(f"gated attention ({type(module).__name__} with a "
                                        "gate) is not supported; build the model without it")


def _add_position(model, x, source: PositionalSource):
    """``_pos_embed`` of VisionTransformer / VisionTransformerDistilled / Eva, with the
    position embedding added as a per-sample leaf. Returns ``(tokens, rope)``; ``rope`` is the
    Eva rotary table (None elsewhere)."""
    eva = type(model).__name__ == "Eva"
    rope_module = getattr(model, "rope", None) if eva else None
    if model.dynamic_img_size:
        batch, height, width, channels = x.shape
        pos = model.pos_embed
        if pos is not None:
            pos = resample_abs_pos_embed(
                pos, new_size=(height, width), old_size=model.patch_embed.grid_size,
                num_prefix_tokens=0 if model.no_embed_class else model.num_prefix_tokens)
        x = x.view(batch, -1, channels)
        rope = rope_module.get_embed(shape=(height, width)) if rope_module is not None else None
    else:
        pos = model.pos_embed
        rope = None
        if rope_module is not None:
            rope = (rope_module.get_embed() if hasattr(rope_module, "feat_shape")
                    else rope_module.get_embed(shape=model.patch_embed.grid_size))
    batch = x.shape[0]
    prefix = [t.expand(batch, -1, -1) for t in _prefix_tokens(model)]
    if pos is None and not eva:
        return torch.cat(prefix + [x.view(batch, -1, x.shape[-1])], dim=1), None
    if model.no_embed_class:
        if pos is not None:
            offset = sum(t.shape[1] for t in prefix)          # class, dist, register tokens
            x = x + source.leaf(pos, batch, "pos_embed", offset=offset)
        if prefix:
            x = torch.cat(prefix + [x], dim=1)
    else:
        if prefix:
            x = torch.cat(prefix + [x], dim=1)
        if pos is not None:
            x = x + source.leaf(pos, batch, "pos_embed", offset=0)
    x = model.pos_drop(x)
    if eva and getattr(model, "patch_drop", None) is not None:
        x, keep = model.patch_drop(x)
        if keep is not None:
            raise RuntimeError("patch dropout is active; explanations need the eval-mode model")
    return x, rope


def _stock_kernel(module, q, k, v, attn_mask, is_causal):
    """The module's own attention kernel: timm's fused ``F.scaled_dot_product_attention``
    path, or its explicit softmax path when ``fused_attn`` is off."""
    if module.fused_attn:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=0.0,
                                              is_causal=is_causal)
    return _probabilities(module, q, k, attn_mask, is_causal) @ v


def _probabilities(module, q, k, attn_mask, is_causal):
    from timm.layers import maybe_add_mask, resolve_self_attn_mask
    scores = (q * module.scale) @ k.transpose(-2, -1)
    bias = resolve_self_attn_mask(q.shape[-2], scores, attn_mask, is_causal)
    return maybe_add_mask(scores, bias).softmax(dim=-1)


#: Above this many probabilities at once, the explicit constant-attention backward works per
#: sample.
_CHUNK_ELEMENTS = 1 << 26

#: CPU flash attention, returning the log-sum-exp of each query's scores with the output;
#: ``F.scaled_dot_product_attention`` runs exactly this kernel when it picks the flash backend.
#: Private torch API: where a torch build lacks it (or ``_fused_sdp_choice``), the explicit
#: backward runs instead.
_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_SDP_CHOICE = getattr(torch, "_fused_sdp_choice", None)


def _uses_cpu_flash(module, q, k, v, attn_mask, is_causal) -> bool:
    """Whether the stock kernel is CPU flash attention on float32/float64 without a mask: the
    case where :class:`_ConstantAttention` computes V's gradient with the flash kernel too."""
    from torch.nn.attention import SDPBackend
    return (_CPU_FLASH is not None and _SDP_CHOICE is not None
            and module.fused_attn and attn_mask is None and not is_causal
            and q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64)
            and _SDP_CHOICE(q, k, v) == SDPBackend.FLASH_ATTENTION.value)


def _transposed_attention(q, k, lse, grad_out, scale: float = 1.0):
    """``scale * A^T g`` for ``A = softmax(s q k^T)`` (s = head_dim^-1/2) given the log-sum-exp ``lse``
    of each query's scores, as one CPU flash-attention call, without forming A.

    ``log A_ij = s q_i . k_j - lse_i``: with the keys ``[s k_j, 1]`` as queries and the queries
    ``[q_i, -lse_i]`` as keys (scale 1), the flash kernel's scores are exactly ``log A_ij`` and it
    returns ``sum_i A_ij g_i / c_j`` and ``log c_j``, ``c_j = sum_i A_ij``; so
    ``(A^T g)_j = c_j`` times its output. The value ``g`` gets a zero column to match the head
    dimension (the kernel's requirement); that column's output is dropped."""
    head_dim = q.shape[-1]
    ones = k.new_ones(k.shape[:-1] + (1,))
    as_queries = torch.cat([k * head_dim ** -0.5, ones], dim=-1)
    as_keys = torch.cat([q, -lse.to(q.dtype)[..., None]], dim=-1)
    values = torch.cat([grad_out, grad_out.new_zeros(grad_out.shape[:-1] + (1,))], dim=-1)
    out, lse_t = _CPU_FLASH(as_queries, as_keys, values, 0.0, False, scale=1.0)
    return out[..., :head_dim] * (lse_t.exp() * scale).to(out.dtype)[..., None]


class _ConstantAttention(torch.autograd.Function):
    """The stock kernel in the forward; in the backward the probabilities are constants, so
    the only gradient is V's, ``v_scale * A^T g``, and none reaches q or k: the softmax
    backward of the stock kernel is skipped.

    When the stock kernel is CPU flash attention (:func:`_uses_cpu_flash`), the forward calls
    it directly to keep the log-sum-exp of each query's scores (same output bit for bit), and
    ``A^T g`` is one more flash call (:func:`_transposed_attention`); otherwise A is recomputed
    explicitly (per sample above ``_CHUNK_ELEMENTS`` probabilities)."""

    @staticmethod
    def forward(ctx, q, k, v, module, attn_mask, is_causal, v_scale):
        ctx.v_scale = v_scale
        if _uses_cpu_flash(module, q, k, v, attn_mask, is_causal):
            out, lse = _CPU_FLASH(q, k, v, 0.0, False)
            ctx.save_for_backward(q, k, lse)
            ctx.flash = True
            return out
        ctx.save_for_backward(q, k)
        ctx.flash = False
        ctx.module, ctx.attn_mask, ctx.is_causal = module, attn_mask, is_causal
        return _stock_kernel(module, q, k, v, attn_mask, is_causal)

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.flash:
            q, k, lse = ctx.saved_tensors
            grad_v = _transposed_attention(q, k, lse, grad_out, ctx.v_scale)
            return None, None, grad_v, None, None, None, None
        q, k = ctx.saved_tensors
        batch, heads, tokens, _ = q.shape
        step = max(1, _CHUNK_ELEMENTS // max(1, heads * tokens * k.shape[-2]))
        mask = ctx.attn_mask
        parts = []
        for start in range(0, batch, step):
            part = slice(start, start + step)
            part_mask = mask[part] if mask is not None and mask.dim() == 4 and mask.shape[0] == batch else mask
            probs = _probabilities(ctx.module, q[part], k[part], part_mask, ctx.is_causal)
            if ctx.v_scale != 1.0:
                probs.mul_(ctx.v_scale)
            parts.append(probs.transpose(-2, -1) @ grad_out[part])
        grad_v = parts[0] if len(parts) == 1 else torch.cat(parts)
        return None, None, grad_v, None, None, None, None


def _attend(module, q, k, v, rules: RuleSet, attn_mask, is_causal):
    """The attention of (B, heads, N, head_dim) q, k, v under the rule set.

    ``"constant"``: the probabilities are constants (nothing reaches q, k or, after them, the
    rotary sinks) and V receives ``v_scale`` of the relevance (:class:`_ConstantAttention`).
    ``"uniform"``: the stock kernel with the gradients of q and k halved (uniform rule on
    Q K^T) and the output's gradient halved, which for the bilinear ``A V`` halves both A's and
    V's (uniform rule on A V); the softmax in between is plain gradient x input."""
    if rules.attention == "constant":
        return _ConstantAttention.apply(q.detach(), k.detach(), v, module, attn_mask, is_causal,
                                        float(rules.v_scale))
    out = _stock_kernel(module, scale_grad(q, 0.5), scale_grad(k, 0.5), v, attn_mask, is_causal)
    return scale_grad(out, 0.5)


class _ValueRowsQKV(torch.autograd.Function):
    """timm's fused qkv projection and head split, ``(q, k, v)`` as (B, heads, N, head_dim),
    for the constant attention rule: q and k carry no gradient, and V's gradient reaches the
    input through V's rows of the weight only (the backward skips the q and k rows, and the
    zero gradients of q and k are never formed)."""

    @staticmethod
    def forward(ctx, x, weight, bias, heads, head_dim):
        batch, tokens, _ = x.shape
        qkv = F.linear(x, weight, bias)
        q, k, v = qkv.reshape(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        ctx.mark_non_differentiable(q, k)
        ctx.save_for_backward(weight)
        return q, k, v

    @staticmethod
    def backward(ctx, grad_q, grad_k, grad_v):
        (weight,) = ctx.saved_tensors
        batch, heads, tokens, head_dim = grad_v.shape
        width = heads * head_dim
        flat = grad_v.transpose(1, 2).reshape(batch, tokens, width)
        return flat @ weight[2 * width:], None, None, None, None


def _vit_attention(rules: RuleSet):
    """timm ``Attention`` (fused qkv, optional q/k norm and scale norm)."""

    def make(module, original):
        def forward(x, attn_mask=None, is_causal=False):
            batch, tokens, _ = x.shape
            heads, head_dim = module.num_heads, module.head_dim
            width = heads * head_dim
            if rules.attention == "constant":
                q, k, v = _ValueRowsQKV.apply(x, module.qkv.weight, module.qkv.bias, heads,
                                              head_dim)
            else:
                qkv = module.qkv(x).reshape(batch, tokens, 3, heads, head_dim)
                q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            q, k = module.q_norm(q), module.k_norm(k)
            out = _attend(module, q, k, v, rules, attn_mask, is_causal)
            out = module.norm(out.transpose(1, 2).reshape(batch, tokens, width))
            return module.proj_drop(module.proj(out))

        return forward

    return make


def _rotate(x, sin, cos, half: bool):
    """timm's ``apply_rot_embed`` (``x cos + rot(x) sin``) with the uniform rule on its two
    products: halving the sum's gradient halves what reaches x and what reaches cos and sin."""
    turned = rope_rotate_half(x) if half else rot(x)
    return scale_grad(x * cos + turned * sin, 0.5).to(dtype=x.dtype)


def _eva_attention(rules: RuleSet, state):
    """timm ``EvaAttention`` and ``AttentionRope`` (the RoPE ViTs): fused or separate q/k/v
    projections (``AttentionRope``: fewer k/v heads, repeated after the rotation), RoPE on the
    patch tokens with this block's cos and sin as positional leaves: (N, d) for the axial RoPE
    of EVA-02 and the ``rope_type='cat'`` ViTs, (heads, N, d) for the learned per-head
    ``'mixed'`` RoPE (one frequency set per head and block; position on dim 2 of the leaf)."""
    blocks = {}

    def make(module, original):
        index = blocks.setdefault(id(module), len(blocks))

        def forward(x, rope=None, attn_mask=None, is_causal=False):
            batch, tokens, channels = x.shape
            heads = module.num_heads
            if module.qkv is not None:
                if getattr(module, "q_bias", None) is None:
                    qkv = module.qkv(x)
                else:
                    bias = torch.cat((module.q_bias, module.k_bias, module.v_bias))
                    if module.qkv_bias_separate:
                        qkv = module.qkv(x) + bias
                    else:
                        qkv = F.linear(x, weight=module.qkv.weight, bias=bias)
                q, k, v = qkv.reshape(batch, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
            else:
                kv_heads = getattr(module, "num_kv_heads", heads)
                q = module.q_proj(x).reshape(batch, tokens, heads, -1).transpose(1, 2)
                k = module.k_proj(x).reshape(batch, tokens, kv_heads, -1).transpose(1, 2)
                v = module.v_proj(x).reshape(batch, tokens, kv_heads, -1).transpose(1, 2)
            q, k = module.q_norm(q), module.k_norm(k)
            if rope is not None:
                npt = module.num_prefix_tokens
                half = bool(getattr(module, "rotate_half", False))
                sin, cos = rope.chunk(2, -1)
                if sin.dim() == 2:                      # axial: (N, d), shared by the heads
                    def leaf(t, label):
                        return state.source.leaf(t[None], batch, label, offset=npt).unsqueeze(1)
                elif sin.dim() == 3:                    # mixed: (heads, N, d)
                    def leaf(t, label):
                        return state.source.leaf(t[None], batch, label, offset=npt,
                                                 position_dim=2)
                else:
                    raise UnsupportedModelError(f"a rotary table of shape {tuple(rope.shape)} "
                                                "(per sample?) is not supported")
                cos, sin = leaf(cos, f"cos_{index}"), leaf(sin, f"sin_{index}")
                q = torch.cat([q[:, :, :npt], _rotate(q[:, :, npt:], sin, cos, half)], 2).type_as(v)
                k = torch.cat([k[:, :, :npt], _rotate(k[:, :, npt:], sin, cos, half)], 2).type_as(v)
            groups = getattr(module, "num_kv_groups", 1)
            if groups > 1:
                k = k.repeat_interleave(groups, dim=1)
                v = v.repeat_interleave(groups, dim=1)
            out = _attend(module, q, k, v, rules, attn_mask, is_causal)
            out = module.norm(out.transpose(1, 2).reshape(batch, tokens, -1))
            return module.proj_drop(module.proj(out))

        return forward

    return make


def _glu_mlp(module, original):
    """timm ``GluMlp`` (packed gate|x fc1): Gamma linears, the activation's identity rule and
    the uniform rule on the gate product (its output gradient halved)."""

    def forward(x):
        x = module.fc1(x)
        x1, x2 = x.chunk(2, dim=module.chunk_dim)
        x = x1 * module.act(x2) if module.gate_last else module.act(x1) * x2
        x = module.norm(module.drop1(scale_grad(x, 0.5)))
        return module.drop2(module.fc2(x))

    return forward


def _swiglu(module, original):
    """timm ``SwiGLU`` (separate gate and x linears), rules as :func:`_glu_mlp`."""

    def forward(x):
        x = scale_grad(module.act(module.fc1_g(x)) * module.fc1_x(x), 0.5)
        x = module.norm(module.drop1(x))
        return module.drop2(module.fc2(x))

    return forward


# =========================================================================================
# Elementwise and linear rules, as module forwards.
# =========================================================================================

def _gamma_linear(rules: RuleSet):
    def make(module, original):
        if not isinstance(module, nn.Linear):
            raise UnsupportedModelError(
                f"expected a Linear classifier/MLP layer, found {type(module).__name__}; a "
                "model without a classifier head (num_classes=0) cannot be explained")

        def forward(x):
            return gamma_linear(x, module.weight, module.bias, rules.gamma_linear,
                                rules.stabiliser)

        return forward

    return make


def _gamma_conv(rules: RuleSet):
    def make(module, original):
        if (not isinstance(module, nn.Conv2d) or module.padding_mode != "zeros"
                or isinstance(module.padding, str)):
            raise UnsupportedModelError("the patch embedding must be a zero-padded Conv2d")

        def forward(x):
            return gamma_conv2d(x, module.weight, module.bias, rules.gamma_conv,
                                rules.stabiliser, module.stride, module.padding,
                                module.dilation, module.groups)

        return forward

    return make


def _layer_norm(module, original):
    if len(module.normalized_shape) != 1:
        raise UnsupportedModelError("LayerNorm over more than the channel dimension")

    def forward(x):
        return layer_norm_const_std(x, module.weight, module.bias, module.eps)

    return forward


def _identity(module, original):
    def forward(x):
        return identity_act(x, original)

    return forward


# =========================================================================================
# The adapter's interface to the engine.
# =========================================================================================

def _additive_position(part):
    def make(model, original):
        eva = type(model).__name__ == "Eva"

        def forward(x):
            tokens, rope = _add_position(model, x, part.source)
            return (tokens, rope) if eva else tokens

        return forward

    return make


def factories(part) -> dict:
    """Rule name -> ``make(module, original)`` for one part (its rule set and positional
    source)."""
    rules = part.rules
    return {
        "gamma_conv": _gamma_conv(rules),
        "gamma_linear": _gamma_linear(rules),
        "layer_norm": _layer_norm,
        "identity": _identity,
        "attention": _vit_attention(rules),
        "eva_attention": _eva_attention(rules, part),
        "glu_mlp": _glu_mlp,
        "swiglu": _swiglu,
        "additive_position": _additive_position(part),
        "window_attention": window_block_attention(part, lambda model: tuple(
            model.patch_embed.grid_size)),
        "attention_pool": latent_attention_pool(rules),
        "beit_attention": beit_attention(part),
        "beit_features": beit_features(part),
        "talking_heads_attention": talking_heads_attention(rules),
        "class_attention": class_attention(rules),
        "cait_features": cait_features(part),
    }


def check(module) -> None:
    """Before anything is patched: configurations inside a covered class the rules do not
    handle get their own line (:func:`check_model`)."""
    check_model(module)


def install(patcher, part, counts: dict) -> None:
    """Nothing beyond the rule map: the pixels are the stream's leaf (made by the engine)."""


def geometry(part, images: torch.Tensor) -> dict:
    """The image stream's layout (``part``: the engine's part reading the stream):
    ``patch_size`` (ph, pw), ``grid`` (gh, gw) for these images, ``prefix`` (class,
    distillation and register tokens before the patch grid)."""
    model = part.module
    return {"patch_size": patch_size(model), "grid": grid_size(model, images),
            "prefix": num_prefix_tokens(model)}


# =========================================================================================
# Geometry read from the model (never from constants): patch size, grid, prefix tokens.
# =========================================================================================

def pair(value) -> tuple[int, int]:
    """An int or an (H, W) sequence -> (H, W); anything else is a one-line ValueError."""
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"expected an int or an (H, W) pair, got {value}")
    return value


def patch_embed_of(model):
    embed = getattr(model, "patch_embed", None)
    if embed is None or not hasattr(embed, "proj"):
        raise ValueError(f"{type(model).__name__} has no patch_embed.proj; pass a timm "
                         "VisionTransformer or Eva model")
    return embed


def patch_size(model) -> tuple[int, int]:
    """(ph, pw) of the patch-embedding conv."""
    embed = patch_embed_of(model)
    size = getattr(embed, "patch_size", None)
    return pair(size if size is not None else embed.proj.kernel_size)


def image_size(model) -> tuple[int, int]:
    """(H, W) the model was built at (its ``patch_embed.img_size``; the position table's size)."""
    embed = patch_embed_of(model)
    size = getattr(embed, "img_size", None)
    if size is None:
        size = getattr(model, "img_size", None)
    if size is None:
        raise ValueError(f"{type(model).__name__} records no image size; build it with img_size=")
    return pair(size)


def dynamic_image_size(model) -> bool:
    """Whether the model takes other image sizes than it was built at (timm's
    ``dynamic_img_size``: the position table is resampled to the new grid in the forward)."""
    return bool(getattr(model, "dynamic_img_size", False))


def grid_size(model, images_or_size=None) -> tuple[int, int]:
    """(gh, gw) patch grid for a batch of images, an (H, W) size, or (None) the built size.

    A model without ``dynamic_img_size`` accepts only its built size; a dynamic one any size
    its patch embedding accepts (divisible by the patch, or padded with ``dynamic_img_pad``).
    Raises ``ValueError`` with one line otherwise.
    """
    built = image_size(model)
    if images_or_size is None:
        size = built
    elif isinstance(images_or_size, torch.Tensor):
        size = tuple(images_or_size.shape[-2:])
    else:
        size = pair(images_or_size)
    ph, pw = patch_size(model)
    if not dynamic_image_size(model):
        if size != built:
            raise ValueError(f"images are {size[0]}x{size[1]} but the model takes "
                             f"{built[0]}x{built[1]}; resize them (or build the timm model with "
                             "dynamic_img_size=True)")
        return (size[0] // ph, size[1] // pw)
    if getattr(patch_embed_of(model), "dynamic_img_pad", False):
        return (math.ceil(size[0] / ph), math.ceil(size[1] / pw))
    if size[0] % ph or size[1] % pw:
        raise ValueError(f"images are {size[0]}x{size[1]}, not a multiple of the model's "
                         f"{ph}x{pw} patches; resize or crop them to a multiple")
    return (size[0] // ph, size[1] // pw)


def has_class_token(model) -> bool:
    """Whether the sequence starts with a class token (False for average-pool models built
    with ``class_token=False``)."""
    flag = getattr(model, "has_class_token", None)
    if flag is not None:
        return bool(flag)
    return getattr(model, "cls_token", None) is not None


def num_prefix_tokens(model) -> int:
    """Tokens before the patch tokens: class token, distillation token, register tokens
    (0 for a model with neither class nor register tokens)."""
    count = getattr(model, "num_prefix_tokens", None)
    if count is not None:
        return int(count)
    count = int(has_class_token(model))
    count += int(getattr(model, "dist_token", None) is not None)
    reg = getattr(model, "reg_token", None)
    return count + (0 if reg is None else int(reg.shape[1]))



def call_model(model, inputs: dict):
    """A timm model takes the images positionally."""
    return model(inputs["pixel_values"])
