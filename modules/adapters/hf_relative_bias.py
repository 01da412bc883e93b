"""Relative position biases added to the attention scores (transformers BEiT and Swin) as
positional leaves (docs/method.md, "Relative position bias"). Imported by the transformers
adapter; the only module that knows where these models make their biases.

The score of query i and key j of a head is ``s_ij = q_i . k_j / sqrt(d) + b_ij (+ mask)``: the
bias is an addend of the score, like an added position table is an addend of the embeddings, so
it gets the epsilon rule on the sum (M9 at the score): ``R(b_ij) = b_ij * dR/ds_ij``, plain
gradient x input with the bias as a leaf. The attention kernel keeps its rules (uniform on
``Q K^T`` and ``A V``, the softmax plain): the bias reaches it as the kernel's additive mask, so
its gradient is the kernel's own mask gradient (eager and SDPA alike).

- **BEiT** (``BeitRelativePositionBias``: per layer, or one shared by every layer): the bias as
  returned, (1, heads, T, T) over the class token and the patches, becomes one (B, heads, T, T)
  leaf per module, read per key (``position_dim=3``); the shared bias is one leaf used by every
  layer (its relevance is the sum of each layer's).
- **Swin** (``SwinRelativePositionBias``, one per block, (1, heads, w^2, w^2) shared by the
  windows): the bias as returned becomes the block's leaf on the input patch grid through
  :func:`palrp.modules.adapters.windows.bias_on_patch_grid`, the one mechanism of every Swin
  (read per key, the window partition and the cyclic shift undone, the padding's keys dropped,
  a merged stage's tokens spread over the first-stage patches they cover); the kernel sees it
  as (B * windows, heads, w^2, w^2), which the stock code adds to the shift mask. The block's
  grid before padding is recorded by the ``window_layer`` rule on ``SwinLayer``.
"""
from __future__ import annotations

import math

import torch

from .windows import bias_on_patch_grid

__all__ = ["factories", "geometry"]


def factories(part) -> dict:
    """Rule name -> ``make(module, original)`` of the relative-bias rules."""
    return {"relative_position_bias": _global_bias(part),
            "window_position_bias": _window_bias(part),
            "window_layer": _window_layer(part)}


def bias_label(part, rule: str, module) -> str:
    """``relative_bias_<i>``: the i-th module of ``rule`` (``relative_bias`` if one only)."""
    placed = part.places_of(rule)
    index = next(i for i, m in enumerate(placed) if m is module)
    return f"relative_bias_{index}" if len(placed) > 1 else "relative_bias"


def _batch(part) -> int:
    """The batch size of the part's images (set by the engine from the pixels it is called
    with): the leaves are per sample."""
    if not part.batch_size:
        raise RuntimeError(f"the {part.family.name} part was called without pixel_values; call "
                           "the model with its images so that the bias leaves are per sample")
    return part.batch_size


def _global_bias(part):
    """BEiT: the bias over the whole sequence (prefix tokens first) is the leaf, per key."""
    def make(module, original):
        def forward(window_size, *args, **kwargs):
            out = original(window_size, *args, **kwargs)
            part.cache["relative_prefix"] = out.shape[-1] - int(window_size[0]) * int(window_size[1])
            if not part.source.attribute:
                return out
            return part.source.leaf(out, _batch(part), bias_label(
                part, "relative_position_bias", module), position_dim=3)
        return forward
    return make


def _window_layer(part):
    """Swin block: its input grid, recorded for its bias (the stock forward unchanged); the
    first block's grid is the input patch grid."""
    def make(module, original):
        def forward(hidden_states, input_dimensions, *args, **kwargs):
            dims = (int(input_dimensions[0]), int(input_dimensions[1]))
            part.cache[("window_grid", module)] = dims
            part.cache.setdefault("first_grid", dims)
            return original(hidden_states, input_dimensions, *args, **kwargs)
        return forward
    return make


def _window_bias(part):
    """Swin: the block's bias module output is made the block's leaf (:func:`window_bias`)."""
    def make(module, original):
        def forward(*args, **kwargs):
            out = original(*args, **kwargs)                     # (1, heads, w^2, w^2)
            if not part.source.attribute:
                return out
            layer = part.parents[part.parents[module]]
            return window_bias(part, out, layer, bias_label(part, "window_position_bias", module))
        return forward
    return make


def window_bias(part, bias: torch.Tensor, layer, label: str) -> torch.Tensor:
    """One Swin block's window bias ``bias`` (1, heads, w^2, w^2) with its positional leaf on
    the input patch grid (:func:`palrp.modules.adapters.windows.bias_on_patch_grid`: the
    transformers block pads its grid to whole windows, then shifts it, as that function
    expects), in the stock kernel's layout (B * windows, heads, w^2, w^2)."""
    grid = part.cache[("window_grid", layer)]
    size, shift = int(layer.window_size), int(layer.shift_size)
    return bias_on_patch_grid(part.source, bias, _batch(part), grid, (size, size),
                              (shift, shift), part.cache["first_grid"], label)


def geometry(part, images: torch.Tensor, patch: tuple[int, int]) -> dict | None:
    """The layout of a relative-bias family's image stream, or None to use the position
    table's: Swin has no prefix token and pads the image to whole patches (a grid of ceil
    (H / P)); BEiT's prefix is the bias's key count minus the patch grid (its class token)."""
    ph, pw = patch
    height, width = images.shape[-2:]
    if part.places_of("window_position_bias") or part.places_of("window_layer"):
        return {"patch_size": (ph, pw), "grid": (math.ceil(height / ph), math.ceil(width / pw)),
                "prefix": 0}
    if "relative_prefix" in part.cache:
        return {"patch_size": (ph, pw), "grid": (height // ph, width // pw),
                "prefix": part.cache["relative_prefix"]}
    return None
