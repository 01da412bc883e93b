"""THE positional-encoding relevance rule of PA-LRP (SPEC section 1), for both modalities.

Positional encodings are inputs of their own: the engine makes them leaves of the autograd
graph, and their relevance is ``leaf * leaf.grad`` like any input's.

- Additive PE (DeiT's learned ``pos_embed``): ``z = E + P`` is a plain addition, i.e. the epsilon
  rule ``R(P) = P R(z) / (E + P)``. :func:`additive_pe_leaf` expands the (1, N, D) parameter to a
  per-sample (B, N, D) leaf so samples never mix; :func:`additive_position_relevance` sums it over
  the channels; :func:`spread_patch_grid` spreads a patch-grid map uniformly over each patch's
  pixels.
- Rotary PE (Llama's RoPE): :func:`rotary_pe_leaves` makes one (cos, sin) pair of leaves per
  layer; :func:`apply_rotary` rotates q and k with the uniform rule on each of the four products
  when the leaves are attributed, and with cos/sin as constants otherwise (AttnLRP);
  :func:`rotary_position_relevance` reads ``c_{l,i}`` and ``s_{l,i}``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .rules import uniform_product

__all__ = [
    "additive_pe_leaf",
    "additive_position_relevance",
    "spread_patch_grid",
    "rotate_half",
    "rotary_pe_leaves",
    "apply_rotary",
    "rotary_position_relevance",
]


# --- additive PE ------------------------------------------------------------------------

def additive_pe_leaf(pos_embed: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A (B, N, D) leaf holding ``pos_embed`` for each sample (SPEC section 0: a parameter
    broadcast over the batch must be expanded before it becomes a leaf)."""
    leaf = pos_embed.detach().expand(batch_size, *pos_embed.shape[1:]).clone()
    return leaf.requires_grad_(True)


def additive_position_relevance(leaf: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``p_i = sum_d R(P_i)[d]`` with ``R(P) = P * grad``: (B, N)."""
    return (leaf.detach() * grad).sum(dim=-1)


def spread_patch_grid(grid_map: torch.Tensor, patch_size: tuple[int, int],
                      image_size: tuple[int, int]) -> torch.Tensor:
    """Spread a (B, gh, gw) per-patch relevance uniformly over each patch's pixels.

    Each patch's value is divided by its pixel count and repeated over its ``ph x pw`` pixels,
    so the pixel map sums to the grid map. Pixels the patch grid does not cover (an image size
    not divisible by the patch size, cropped by the conv) get 0. Returns (B, H, W).
    """
    ph, pw = patch_size
    per_pixel = grid_map / float(ph * pw)
    pixels = per_pixel.repeat_interleave(ph, dim=-2).repeat_interleave(pw, dim=-1)
    height, width = image_size
    pad_h, pad_w = height - pixels.shape[-2], width - pixels.shape[-1]
    if pad_h or pad_w:
        pixels = F.pad(pixels, (0, pad_w, 0, pad_h))
    return pixels


# --- rotary PE ---------------------------------------------------------------------------

def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``rot(x) = cat(-x2, x1)`` over the two halves of the last dimension."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotary_pe_leaves(cos: torch.Tensor, sin: torch.Tensor, num_layers: int,
                     batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One (cos, sin) pair of (B, S, head_dim) leaves per layer, all with the same values
    (SPEC section 1: separate leaves so each layer's positional relevance can be read)."""
    shape = (batch_size, *cos.shape[-2:])
    leaves = []
    for _ in range(num_layers):
        c = cos.detach().expand(shape).clone().requires_grad_(True)
        s = sin.detach().expand(shape).clone().requires_grad_(True)
        leaves.append((c, s))
    return leaves


def apply_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 attribute_pe: bool, unsqueeze_dim: int = 1):
    """``q' = q cos + rot(q) sin`` (and k) under the PA-LRP rules.

    With ``attribute_pe`` each of the four products gives half of its relevance to q (or k) and
    half to cos (or sin), the uniform rule; without it cos and sin are constants and q, k keep
    all (the AttnLRP baseline). The sum is a plain addition (epsilon rule).
    ``cos``/``sin`` are (B, S, head_dim); q/k are (B, heads, S, head_dim) for ``unsqueeze_dim=1``.
    """
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    if not attribute_pe:
        cos, sin = cos.detach(), sin.detach()
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    q_out = uniform_product(q, cos) + uniform_product(rotate_half(q), sin)
    k_out = uniform_product(k, cos) + uniform_product(rotate_half(k), sin)
    return q_out, k_out


def rotary_position_relevance(leaves, grads) -> torch.Tensor:
    """``c_{l,i} = sum_j R(cos_l)[i,j]`` and ``s_{l,i}`` likewise: (B, L, 2, S)."""
    per_layer = []
    for (c, s), (gc, gs) in zip(leaves, grads):
        gc = torch.zeros_like(c) if gc is None else gc
        gs = torch.zeros_like(s) if gs is None else gs
        per_layer.append(torch.stack(((c.detach() * gc).sum(-1), (s.detach() * gs).sum(-1)), 1))
    return torch.stack(per_layer, dim=1)
