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
  windows): one leaf per block holding a copy of the bias for every window of every sample,
  (B, heads, w^2, windows * w^2); the kernel sees it as (B * windows, heads, w^2, w^2), the
  stock layout. Its relevance is read per key of each window and mapped back to the block's
  grid (window partition undone, the cyclic shift of a shifted block undone, the window padding
  dropped: a padded key is no image position). A block of a later stage works on a grid
  merged 2^s x 2^s times (patch merging): its per-token relevance is spread uniformly over the
  first-stage patches the token covers (the sum kept), as a patch's relevance is spread over
  its pixels; every sink is then on the first stage's patch grid, one per block.
"""
from __future__ import annotations

import math

import torch

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


def _stage_of(part, layer) -> int:
    """The stage index of a Swin block (``encoder.layers[s].blocks[i]``)."""
    stage = part.parents[part.parents[layer]]
    stages = part.parents[stage]
    return next(i for i, s in enumerate(stages) if s is stage)


def _window_layer(part):
    """Swin block: its input grid, recorded for its bias (the stock forward unchanged)."""
    def make(module, original):
        stage = _stage_of(part, module)

        def forward(hidden_states, input_dimensions, *args, **kwargs):
            dims = (int(input_dimensions[0]), int(input_dimensions[1]))
            part.cache[("window_grid", module)] = (dims, stage)
            if stage == 0:
                part.cache["first_grid"] = dims
            return original(hidden_states, input_dimensions, *args, **kwargs)
        return forward
    return make


def _window_bias(part):
    """Swin: the block's bias module output is made the block's per-window leaf."""
    def make(module, original):
        def forward(*args, **kwargs):
            out = original(*args, **kwargs)                     # (1, heads, w^2, w^2)
            if not part.source.attribute:
                return out
            layer = part.parents[part.parents[module]]
            return window_bias_leaf(part, out, layer, bias_label(part, "window_position_bias", module))
        return forward
    return make


def window_bias_leaf(part, bias: torch.Tensor, layer, label: str) -> torch.Tensor:
    """The leaf of one Swin block's window bias ``bias`` (1, heads, w^2, w^2): a copy per sample
    and window, (B, heads, w^2, windows * w^2) read per key (``position_dim=3``) and put on the
    first stage's grid (:class:`_WindowKeysToGrid`); returned in the stock kernel's layout
    (B * windows, heads, w^2, w^2)."""
    (height, width), stage = part.cache[("window_grid", layer)]
    size, shift = int(layer.window_size), int(layer.shift_size)
    if bias.shape[-1] != size * size:
        raise RuntimeError(f"a Swin bias over {bias.shape[-1]} keys for windows of "
                           f"{size} x {size}; this transformers release is not supported")
    rows, cols = math.ceil(height / size), math.ceil(width / size)
    windows = rows * cols
    batch = _batch(part)
    heads, queries, keys = bias.shape[1:]
    tiled = bias.unsqueeze(3).expand(1, heads, queries, windows, keys)
    spread = _WindowKeysToGrid(batch, (rows, cols), size, shift, (height, width), stage,
                               part.cache["first_grid"])
    leaf = part.source.leaf(tiled.reshape(1, heads, queries, windows * keys), batch, label,
                            position_dim=3, spread=spread)
    return (leaf.view(batch, heads, queries, windows, keys).permute(0, 3, 1, 2, 4)
            .reshape(batch * windows, heads, queries, keys))


class _WindowKeysToGrid:
    """(B, windows * w^2) relevance per key of each window -> (B, H0 * W0) on the first stage's
    patch grid (see the module docstring)."""

    def __init__(self, batch, windows, size, shift, grid, stage, first_grid):
        self.batch, self.windows, self.size, self.shift = batch, windows, size, shift
        self.grid, self.stage, self.first_grid = grid, stage, first_grid

    def __call__(self, per_key: torch.Tensor) -> torch.Tensor:
        (rows, cols), size = self.windows, self.size
        grid = (per_key.reshape(self.batch, rows, cols, size, size).permute(0, 1, 3, 2, 4)
                .reshape(self.batch, rows * size, cols * size))
        if self.shift:
            grid = torch.roll(grid, shifts=(self.shift, self.shift), dims=(1, 2))
        height, width = self.grid
        grid = grid[:, :height, :width]
        return spread_merged(grid, self.stage, self.first_grid).reshape(self.batch, -1)


def spread_merged(grid: torch.Tensor, stage: int, first_grid) -> torch.Tensor:
    """(B, h, w) relevance on the grid of stage ``stage`` (merged 2^stage x 2^stage times) ->
    (B, H0, W0) on the first stage's grid: each token's value divided evenly among the
    first-stage patches it covers (those inside the grid), so the sum is kept."""
    if stage == 0:
        return grid
    height, width = first_grid
    rows = torch.arange(height, device=grid.device) >> stage
    cols = torch.arange(width, device=grid.device) >> stage
    count = (torch.bincount(rows)[:, None] * torch.bincount(cols)[None, :]).to(grid.dtype)
    return (grid / count)[:, rows][:, :, cols]


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
