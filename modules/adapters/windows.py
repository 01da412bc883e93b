"""Shifted-window attention (Swin and Swin V2 of timm, torchvision and transformers): each
block's relative position bias as a positional leaf read on the input patch grid
(docs/method.md, section 14, "Windows"). The one mechanism for every Swin: timm's blocks
(:func:`window_block_attention`), torchvision's (modules/adapters/torchvision.py) and
transformers' (modules/adapters/hf_relative_bias.py, cosine_window_attention.py) all call
:func:`bias_on_patch_grid`.

A Swin block pads its (B, H, W, C) token grid at the bottom and right to whole windows of
``wh x ww`` tokens, shifts it cyclically by ``shift`` in shifted blocks (timm shifts first, then
pads; torchvision and transformers pad, then shift), and runs attention inside each window,
adding to the scores a bias ``b[h, i, j]`` that depends on the query's and the key's places in
the window only (a relative position bias). The bias is where position enters: the score
addition ``s + b`` is a plain sum (the epsilon rule), so its relevance is ``b * g`` with ``g``
the gradient at the scores, the same rule as for an added position table (M15).

Relevance of the bias is read **per key token**: the entries ``b[h, i, j]`` of every head ``h``
and query ``i`` of a window are summed onto the key ``j``'s place on the token grid (the window
mapped back, the cyclic shift undone); a key slot of the padding is no image position and gets
nothing. A stage after ``s`` patch mergings (2 x 2 tokens into one, an odd side padded first)
has ``ceil(H0 / 2^s) x ceil(W0 / 2^s)`` tokens; each covers up to ``2^s x 2^s`` input patches
(fewer at an odd edge), and its relevance is spread uniformly over the ``c`` patches it covers
(each gets ``1 / c``), so every block's positional relevance lives on the input patch grid and
sums to the relevance of its bias at the image's keys.

This is done with a leaf, not by post-processing: the leaf is a (B, P, 1) tensor on the P input
patches holding a share ``1 / c`` at each patch; a token's shares sum to 1, and the bias enters
the scores as ``b[h, i, j] * gate_j`` with ``gate_j`` the sum of key j's shares (a constant 1
for a padding slot). The product is linear in the shares, so ``leaf * grad`` of a share is
``1 / c`` of ``sum_{h, i} b[h, i, j] g[h, i, j]`` summed over the slots of its token: exactly
the bias's relevance at its key token, split evenly over the patches it covers, without a
per-sample or per-window copy of the bias (the leaf is one number per patch and block). The
forward value is the stock bias itself (times exactly 1), so the logits are the stock ones bit
for bit.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..patching import UnsupportedModelError
from ..rules import scale_grad

__all__ = ["bias_on_patch_grid", "window_block_attention", "normalised"]


def bias_on_patch_grid(source, bias: torch.Tensor, batch: int, grid: tuple[int, int],
                       window: tuple[int, int], shift: tuple[int, int],
                       patch_grid: tuple[int, int], label: str,
                       shift_first: bool = False) -> torch.Tensor:
    """The score bias of every window of a block, ``(B * windows, heads, N, N)``, carrying a
    positional leaf on the input patch grid (module docstring).

    ``bias``: the block's ``(1, heads, N, N)`` bias (N = ``wh * ww``); ``grid``: the block's
    token grid (H, W) before any padding to whole windows; ``shift``: its cyclic shift;
    ``patch_grid``: the input patch grid (H0, W0), of which ``grid`` is ``2^s`` times merged.
    The grid is padded at the bottom and right to whole windows, then shifted (transformers,
    torchvision), or with ``shift_first`` shifted, then padded (timm). Without attribution the
    stock bias is returned."""
    if not source.attribute:
        return bias.detach()
    (height, width), n = grid, bias.shape[-1]
    if window[0] * window[1] != n:
        raise UnsupportedModelError(f"a bias over {n} keys for windows of {window[0]} x "
                                    f"{window[1]}; this model release is not supported")
    covering = _covering_token(grid, patch_grid, bias.device)
    count = torch.bincount(covering, minlength=height * width).to(bias.dtype)
    shares = (1.0 / count)[covering].view(1, -1, 1)
    leaf = source.leaf(shares, batch, label)
    # each key token's shares summed (1); a padded key slot holds a constant 1 (no share)
    gate = leaf.new_zeros(batch, height * width).index_add(1, covering, leaf[..., 0])
    gate = torch.cat((gate, gate.new_ones(batch, 1)), 1)[:, _window_keys(
        grid, window, shift, shift_first, bias.device)]
    # the value is the stock bias (times 1, exactly); the shares carry the gradient
    gate = 1.0 + (gate - gate.detach())
    return bias.detach() * gate.view(-1, 1, 1, n)


def _covering_token(grid, patch_grid, device) -> torch.Tensor:
    """(H0 * W0,): the token of the ``grid`` that covers each input patch, the grid being the
    patch grid merged ``2^s`` times (2 x 2 tokens into one, an odd side padded first, so a side
    has ``ceil(H0 / 2^s)`` tokens and an edge token may cover fewer patches)."""
    (height, width), (h0, w0) = grid, patch_grid
    merges = next((s for s in range(max(h0, w0).bit_length() + 1)
                   if (-(-h0 >> s), -(-w0 >> s)) == (height, width)), None)
    if merges is None:
        raise UnsupportedModelError(
            f"a {height}x{width} stage grid is not the {h0}x{w0} patch grid merged 2 x 2 "
            "(s times); use an image size whose patch grid halves evenly at every stage")
    rows = torch.arange(h0, device=device) >> merges
    cols = torch.arange(w0, device=device) >> merges
    return (rows[:, None] * width + cols[None, :]).reshape(-1)


def _window_keys(grid, window, shift, shift_first, device) -> torch.Tensor:
    """(windows * N,): for each key slot of each window (the stock partition order), its token
    on the unpadded ``grid`` (row-major), or ``H * W`` for a slot of the padding (see
    :func:`bias_on_patch_grid` for the two orders of padding and shift)."""
    (height, width), (wh, ww), (sh, sw) = grid, window, shift
    rows, cols = -(-height // wh), -(-width // ww)
    tokens = torch.arange(height * width, device=device).view(height, width)
    if shift_first and (sh or sw):
        tokens = torch.roll(tokens, shifts=(-sh, -sw), dims=(0, 1))
    index = torch.full((rows * wh, cols * ww), height * width, dtype=torch.long, device=device)
    index[:height, :width] = tokens
    if not shift_first and (sh or sw):
        index = torch.roll(index, shifts=(-sh, -sw), dims=(0, 1))
    return index.view(rows, wh, cols, ww).permute(0, 2, 1, 3).reshape(-1)


def normalised(t):
    """``F.normalize(t, dim=-1)`` with the norm a constant (the statistic held fixed, as for
    LayerNorm's std): the value bit for bit, the gradient ``g / |t|`` (Swin V2's cosine
    attention)."""
    return t / t.norm(2, -1, keepdim=True).clamp_min(1e-12).expand_as(t).detach()


def _qkv(attn, windows):
    """(q, k, v), each (B_, heads, N, d), of timm's ``WindowAttention`` (V2: the separate q/v
    biases, k's zero)."""
    if getattr(attn, "q_bias", None) is None:
        qkv = attn.qkv(windows)
    else:
        bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
        if attn.qkv_bias_separate:
            qkv = attn.qkv(windows) + bias
        else:
            qkv = F.linear(windows, weight=attn.qkv.weight, bias=bias)
    return qkv.reshape(windows.shape[0], windows.shape[1], 3, attn.num_heads, -1).permute(
        2, 0, 3, 1, 4).unbind(0)


def _v2_bias(attn):
    """Swin V2's continuous position bias, ``16 sigmoid(cpb_mlp(coordinates))`` gathered per
    (query, key) pair: (1, heads, N, N)."""
    n = attn.window_size[0] * attn.window_size[1]
    table = attn.cpb_mlp(attn.relative_coords_table).view(-1, attn.num_heads)
    bias = table[attn.relative_position_index.view(-1)].view(n, n, -1)
    return (16 * torch.sigmoid(bias.permute(2, 0, 1).contiguous())).unsqueeze(0)


def _uniform_window_attention(attn, q, k, v, bias, mask):
    """Attention of (B_, heads, N, d) q, k, v with the score bias ``bias`` and the shifted
    windows' mask (0 / -100, constant), as timm's ``WindowAttention`` computes it (V1: fused or
    explicit; V2: cosine attention times the clamped logit scale), under the uniform rule: q's
    and k's gradients halved (``Q K^T``), the output's halved (``A V``); the bias add and the
    softmax plain."""
    batch_windows, heads, n, _ = q.shape
    q, k = scale_grad(q, 0.5), scale_grad(k, 0.5)
    v2 = hasattr(attn, "logit_scale")
    if not v2 and attn.fused_attn:
        attn_mask = bias
        if mask is not None:
            num = mask.shape[0]
            mask = mask.view(1, num, 1, n, n).expand(batch_windows // num, -1, heads, -1, -1)
            attn_mask = attn_mask + mask.reshape(-1, heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=0.0)
    else:
        if v2:
            scores = normalised(q) @ normalised(k).transpose(-2, -1)
            scores = scores * torch.clamp(attn.logit_scale, max=math.log(1. / 0.01)).exp()
        else:
            scores = (q * attn.scale) @ k.transpose(-2, -1)
        scores = scores + bias
        if mask is not None:
            num = mask.shape[0]
            scores = scores.view(-1, num, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            scores = scores.view(-1, heads, n, n)
        out = scores.softmax(dim=-1) @ v
    return scale_grad(out, 0.5)


def window_block_attention(part, patch_grid_of):
    """``_attn`` of timm's ``SwinTransformerBlock`` and ``SwinTransformerV2Block`` (timm 1.0):
    shift, partition, window attention with the bias from :func:`bias_on_patch_grid`, merge,
    shift back. ``patch_grid_of(model)``: the input patch grid (H0, W0)."""
    blocks: dict = {}

    def make(block, original):
        index = blocks.setdefault(id(block), len(blocks))
        if part.rules.attention != "uniform":
            raise UnsupportedModelError(
                "window attention is explained with the uniform attention rule only (under "
                "'constant' no relevance reaches its relative position bias): use the "
                "'uniform' rule set")

        def forward(x):
            batch, height, width, channels = x.shape
            (wh, ww), (sh, sw) = tuple(block.window_size), tuple(block.shift_size)
            shifted = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2)) if (sh or sw) else x
            # timm pads to whole windows (bottom and right) after the shift
            shifted = F.pad(shifted, (0, 0, 0, -width % ww, 0, -height % wh))
            rows, cols = shifted.shape[1] // wh, shifted.shape[2] // ww
            windows = shifted.view(batch, rows, wh, cols, ww, channels).permute(
                0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, channels)
            if getattr(block, "dynamic_mask", False):
                mask = block.get_attn_mask(shifted)
            else:
                mask = block.attn_mask
            attn = block.attn
            stock = _v2_bias(attn) if hasattr(attn, "logit_scale") else attn._get_rel_pos_bias()
            bias = bias_on_patch_grid(part.source, stock, batch, (height, width), (wh, ww),
                                      (sh, sw), patch_grid_of(part.module), f"rel_bias_{index}",
                                      shift_first=True)
            q, k, v = _qkv(attn, windows)
            out = _uniform_window_attention(attn, q, k, v, bias, mask)
            out = attn.proj_drop(attn.proj(out.transpose(1, 2).reshape(windows.shape[0],
                                                                     wh * ww, -1)))
            out = out.view(batch, rows, cols, wh, ww, -1).permute(0, 1, 3, 2, 4, 5).reshape(
                batch, rows * wh, cols * ww, -1)[:, :height, :width]
            return torch.roll(out, shifts=(sh, sw), dims=(1, 2)) if (sh or sw) else out

        return forward

    return make
