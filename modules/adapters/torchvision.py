"""The torchvision adapter: how the engine reaches torchvision's ``VisionTransformer`` and
``SwinTransformer`` (v1 and v2); the only module that knows their internals (torchvision 0.29).

Rules (docs/method.md, sections 4 and 10; tables in docs/vision_families.md), the same as for
timm's models with the uniform (AttnLRP) attention rule:

| place | rule |
|---|---|
| patch-embedding conv | Gamma (``rules.gamma_conv``) |
| MLP linears, classifier head | Gamma (``rules.gamma_linear``) |
| every LayerNorm | std constant |
| GELU, the pre-logits Tanh | identity |
| ``nn.MultiheadAttention`` (ViT) | uniform on ``Q K^T`` and ``A V``, softmax plain: the stock module, its query, key and output gradients halved (:mod:`.multihead_attention`) |
| window attention (Swin) | the same, with each block's relative position bias a positional leaf on the input patch grid (modules/adapters/windows.py); Swin V2's cosine attention: the q and k norms constant |
| in/out projections, qkv, proj, residual adds, the class-token concat and readout, the pool | plain (epsilon) |

Positional relevance: the ViT's ``encoder.pos_embedding`` as ``Encoder.forward`` adds it (one
sink over class token and patches); a Swin block's bias (one sink per block).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..patching import UnsupportedModelError
from ..rules import scale_grad
from .multihead_attention import multihead_attention
from .timm import _gamma_conv, _gamma_linear, _identity, _layer_norm, pair
from .windows import bias_on_patch_grid, normalised

__all__ = ["factories", "check", "install", "geometry", "call_model"]


def _uniform(rules):
    if rules.attention != "uniform":
        raise UnsupportedModelError("torchvision models are explained with the uniform "
                                    "attention rule (rule set 'uniform')")


def _vit_encoder(part):
    """``Encoder.forward`` with ``pos_embedding`` (1, 1 + N, D), added after the class-token
    concat, as the positional leaf."""

    def make(encoder, original):
        def forward(x):
            x = x + part.source.leaf(encoder.pos_embedding, x.shape[0], "pos_embedding")
            return encoder.ln(encoder.layers(encoder.dropout(x)))

        return forward

    return make


def _patch_conv(rules, part):
    """The patch-embedding conv (Gamma); it records the input patch grid of this pass for the
    window attention's positional leaves."""
    gamma = _gamma_conv(rules)

    def make(module, original):
        rule = gamma(module, original)

        def forward(x):
            out = rule(x)
            part.cache["patch_grid"] = tuple(out.shape[-2:])
            return out

        return forward

    return make


def _window_attention(part):
    """``ShiftedWindowAttention`` / ``ShiftedWindowAttentionV2`` forward (torchvision's
    ``shifted_window_attention``) with the bias from :func:`windows.bias_on_patch_grid`."""
    blocks: dict = {}

    def make(module, original):
        _uniform(part.rules)
        index = blocks.setdefault(id(module), len(blocks))
        v2 = hasattr(module, "logit_scale")

        def forward(x):
            batch, height, width, channels = x.shape
            wh, ww = module.window_size
            # torchvision pads to whole windows (bottom and right), then shifts
            padded = F.pad(x, (0, 0, 0, -width % ww, 0, -height % wh))
            pad_h, pad_w = padded.shape[1:3]
            sh, sw = module.shift_size
            sh, sw = (0 if wh >= pad_h else sh), (0 if ww >= pad_w else sw)
            heads, n = module.num_heads, wh * ww
            shifted = torch.roll(padded, shifts=(-sh, -sw), dims=(1, 2)) if (sh or sw) else padded
            rows, cols = pad_h // wh, pad_w // ww
            windows = shifted.view(batch, rows, wh, cols, ww, channels).permute(
                0, 1, 3, 2, 4, 5).reshape(batch * rows * cols, n, channels)
            qkv_bias = module.qkv.bias
            if v2 and qkv_bias is not None:
                qkv_bias = qkv_bias.clone()
                qkv_bias[channels:2 * channels] = 0
            qkv = F.linear(windows, module.qkv.weight, qkv_bias)
            q, k, v = qkv.reshape(windows.shape[0], n, 3, heads, -1).permute(2, 0, 3, 1, 4)
            q, k = scale_grad(q, 0.5), scale_grad(k, 0.5)
            if v2:
                scores = normalised(q) @ normalised(k).transpose(-2, -1)
                scores = scores * torch.clamp(module.logit_scale, max=math.log(100.0)).exp()
            else:
                scores = (q * (channels // heads) ** -0.5).matmul(k.transpose(-2, -1))
            bias = bias_on_patch_grid(part.source, module.get_relative_position_bias(), batch,
                                      (height, width), (wh, ww), (sh, sw),
                                      part.cache["patch_grid"], f"rel_bias_{index}")
            scores = scores + bias
            if sh or sw:
                scores = scores.view(batch, rows * cols, heads, n, n) + _shift_mask(
                    x, pad_h, pad_w, (wh, ww), (sh, sw)).unsqueeze(1).unsqueeze(0)
                scores = scores.view(-1, heads, n, n)
            out = scale_grad(F.softmax(scores, dim=-1).matmul(v), 0.5)
            out = out.transpose(1, 2).reshape(windows.shape[0], n, channels)
            out = F.linear(out, module.proj.weight, module.proj.bias)
            out = out.view(batch, rows, cols, wh, ww, channels).permute(0, 1, 3, 2, 4, 5)
            out = out.reshape(batch, pad_h, pad_w, channels)
            out = torch.roll(out, shifts=(sh, sw), dims=(1, 2)) if (sh or sw) else out
            return out[:, :height, :width]

        return forward

    return make


def _shift_mask(x, height, width, window, shift):
    """The shifted windows' mask (0 within a region, -100 across), as torchvision makes it."""
    (wh, ww), (sh, sw) = window, shift
    mask = x.new_zeros((height, width))
    count = 0
    for h in ((0, -wh), (-wh, -sh), (-sh, None)):
        for w in ((0, -ww), (-ww, -sw), (-sw, None)):
            mask[h[0]:h[1], w[0]:w[1]] = count
            count += 1
    mask = mask.view(height // wh, wh, width // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)
    mask = mask.unsqueeze(1) - mask.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def factories(part) -> dict:
    rules = part.rules
    return {
        "gamma_conv": _gamma_conv(rules),
        "patch_conv": _patch_conv(rules, part),
        "gamma_linear": _gamma_linear(rules),
        "layer_norm": _layer_norm,
        "identity": _identity,
        "multihead_attention": multihead_attention(rules),
        "window_attention": _window_attention(part),
        "vit_encoder": _vit_encoder(part),
    }


def check(module) -> None:
    """Nothing beyond the map's own coverage."""


def install(patcher, part, counts: dict) -> None:
    """Nothing beyond the rule map: the pixels are the stream's leaf."""


def geometry(part, images: torch.Tensor) -> dict:
    """``patch_size``, ``grid`` and ``prefix`` of the image stream (ViT: its fixed
    ``image_size``, the class token; Swin: the patch conv's stride, no prefix)."""
    model = part.module
    height, width = images.shape[-2:]
    if hasattr(model, "class_token"):
        size = pair(model.patch_size)
        if (height, width) != (model.image_size, model.image_size):
            raise ValueError(f"images are {height}x{width} but the model takes "
                             f"{model.image_size}x{model.image_size}")
        return {"patch_size": size, "grid": (height // size[0], width // size[1]), "prefix": 1}
    conv = model.features[0][0]
    size = pair(conv.stride)
    return {"patch_size": size, "grid": (height // size[0], width // size[1]), "prefix": 0}


def call_model(model, inputs: dict):
    """A torchvision classifier takes the images positionally."""
    return model(inputs["pixel_values"])
