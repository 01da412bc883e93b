"""Chefer's LRP rules for DeiT, giving the relevance R_A of every block's attention probabilities.

Used by partial LRP (last block) and Transformer Attribution (every block); SPEC section 2,
after Chefer, Gur & Wolf, "Transformer Interpretability Beyond Attention Visualization" (CVPR
2021). This is a relevance propagation of its own, independent of the PA-LRP engine: a plain
forward of our DeiT records each block's input (forward pre-hooks) and the head's input; the
relevance then goes from the target logit down through the blocks, each block's local forward
being recomputed from its recorded input. Rules:

- linear layers (head, fc1, fc2, qkv, proj): alpha=1/beta=0 without bias,
  ``R_in = x+ * (W+^T S) + x- * (W-^T S)`` with ``S = R / (W+ x+ + W- x-)``
  (:func:`linear_relevance`);
- residual adds ``a + b``: proportional split, then each branch rescaled to
  ``|sum a_part| / (|sum a_part| + |sum b_part|) * sum R``, sums over the sample's whole tensor
  (:func:`residual_relevance`);
- ``Q K^T`` and ``A V``: each operand gets ``x * dZ/dx * (R/Z)``, then each is halved
  (:func:`product_relevance`); R_A is taken after that halving and flows through the softmax;
- CLS select: the relevance of the selected CLS vector goes to position 0 (epsilon rule);
- softmax, GELU, LayerNorm (and dropout, absent here): identity; the residual stream and the
  branch re-join by summing (Chefer's ``Clone``).

Relevance is seeded with 1 at each sample's target class. Divisions follow the original's
``safe_divide``: ``a / (b + 1e-9)``, and 0 where ``b == 0``. Every tensor keeps its batch
dimension and every sum is per sample, so a sample's R_A does not depend on its batch
companions (the original ran batch 1 only and summed over the whole batch). The propagation
runs without autograd (``torch.no_grad``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .attention import record_attention

__all__ = [
    "safe_divide",
    "linear_relevance",
    "residual_relevance",
    "product_relevance",
    "mlp_relevance",
    "attention_relevance",
    "block_relevance",
    "AttentionRelevance",
    "chefer_attention_relevance",
]

_STABILISER = 1e-9


# --- the rules, on plain tensors ---------------------------------------------------------

def safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``a / (b + 1e-9)``, 0 where ``b == 0`` (the original code's ``safe_divide``)."""
    shifted = denominator + _STABILISER
    shifted = torch.where(shifted == 0, torch.full_like(shifted, _STABILISER), shifted)
    return torch.where(denominator == 0, torch.zeros_like(shifted), numerator / shifted)


def linear_relevance(x: torch.Tensor, weight: torch.Tensor,
                     relevance: torch.Tensor) -> torch.Tensor:
    """Alpha=1/beta=0 rule without bias for ``z = W x (+ b)``; ``x`` is (..., in).

    ``S = R / (W+ x+ + W- x-)``, ``R_in = x+ * (W+^T S) + x- * (W-^T S)``. The denominator is
    the positive contributions only (both products are >= 0), so ``sum R_in = sum R`` wherever
    some contribution is positive.
    """
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
    scaled = safe_divide(relevance, F.linear(x_pos, w_pos) + F.linear(x_neg, w_neg))
    return x_pos * (scaled @ w_pos) + x_neg * (scaled @ w_neg)


def _per_sample_sum(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1).view(-1, *([1] * (t.dim() - 1)))


def residual_relevance(a: torch.Tensor, b: torch.Tensor, relevance: torch.Tensor):
    """Chefer's rule for the residual add ``a + b``: returns ``(R_a, R_b)``.

    First the proportional (epsilon-0) split ``a R / (a + b)``, ``b R / (a + b)``; then each
    part is rescaled so that its per-sample total is
    ``|sum a_part| / (|sum a_part| + |sum b_part|) * sum R`` (and likewise for b).
    """
    scaled = safe_divide(relevance, a + b)
    a_part, b_part = a * scaled, b * scaled
    a_sum, b_sum = _per_sample_sum(a_part), _per_sample_sum(b_part)
    total = _per_sample_sum(relevance)
    both = a_sum.abs() + b_sum.abs()
    a_share = safe_divide(a_sum.abs(), both) * total
    b_share = safe_divide(b_sum.abs(), both) * total
    return a_part * safe_divide(a_share, a_sum), b_part * safe_divide(b_share, b_sum)


def product_relevance(x: torch.Tensor, y: torch.Tensor, relevance: torch.Tensor):
    """Chefer's rule for a product of two relevance-carrying operands, ``Z = x @ y`` (batched
    matmul): each operand gets ``x * dZ/dx * (R/Z)`` (about the full R each), then each is
    halved. Returns ``(R_x, R_y)``."""
    scaled = safe_divide(relevance, x @ y)
    r_x = x * (scaled @ y.transpose(-2, -1))
    r_y = y * (x.transpose(-2, -1) @ scaled)
    return 0.5 * r_x, 0.5 * r_y


# --- the rules wired into DeiT's blocks ----------------------------------------------------

@torch.no_grad()
def mlp_relevance(mlp, h: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """Relevance at the MLP input ``h`` for ``fc2(gelu(fc1(h)))``: fc2 and fc1 with the
    alpha1beta0 rule, GELU with the identity rule (the relevance at its output is the relevance
    at its input)."""
    return _mlp_backward(mlp, h, F.gelu(mlp.fc1(h)), relevance)


def _mlp_backward(mlp, h, hidden, relevance):
    relevance = linear_relevance(hidden, mlp.fc2.weight, relevance)
    return linear_relevance(h, mlp.fc1.weight, relevance)


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    batch, tokens, dim = t.shape
    return t.view(batch, tokens, heads, dim // heads).transpose(1, 2)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    batch, heads, tokens, head_dim = t.shape
    return t.transpose(1, 2).reshape(batch, tokens, heads * head_dim)


def _attention_forward(attn, h: torch.Tensor):
    """q, k, v (B, heads, N, head_dim), the probabilities and the context (B, N, D) before proj."""
    q, k, v = (_split_heads(t, attn.num_heads) for t in attn.qkv(h).split(h.shape[-1], dim=-1))
    probs = torch.softmax((q * attn.scale) @ k.transpose(-2, -1), dim=-1)
    return q, k, v, probs, _merge_heads(probs @ v)


@torch.no_grad()
def attention_relevance(attn, h: torch.Tensor, relevance: torch.Tensor,
                        need_input: bool = True):
    """Relevance through the attention branch ``proj(softmax(q k^T * scale) v)`` of ``h``.

    Returns ``(R_h, R_A)``: R_A (B, heads, N, N) is the relevance of the attention
    probabilities after the halving at ``A V``. The softmax is the identity rule, so R_A is
    also the relevance of ``Q K^T``, which is split over q and k by the halving product rule
    (the scale is a constant factor of the scores and does not change the ratios). q, k, v
    relevances go back through qkv with the alpha1beta0 rule. With ``need_input=False``
    (the lowest block asked for) R_h is None and that part is skipped.
    """
    return _attention_backward(attn, h, _attention_forward(attn, h), relevance, need_input)


def _attention_backward(attn, h, forward, relevance, need_input):
    q, k, v, probs, context = forward
    relevance = _split_heads(linear_relevance(context, attn.proj.weight, relevance),
                             attn.num_heads)
    r_probs, r_v = product_relevance(probs, v, relevance)
    if not need_input:
        return None, r_probs
    # softmax: identity rule, the scores' relevance is R_A
    r_q, r_kt = product_relevance(q, k.transpose(-2, -1), r_probs)
    r_qkv = torch.cat([_merge_heads(r) for r in (r_q, r_kt.transpose(-2, -1), r_v)], dim=-1)
    return linear_relevance(h, attn.qkv.weight, r_qkv), r_probs


@torch.no_grad()
def block_relevance(block, x: torch.Tensor, relevance: torch.Tensor, need_input: bool = True):
    """One pre-norm block ``y = x' + mlp(ln2(x'))``, ``x' = x + attn(ln1(x))``, backwards.

    Returns ``(R_x, R_A)``. Each residual add gets :func:`residual_relevance`; LayerNorm is
    the identity rule, so the relevance at a branch's LayerNorm output is passed on as the
    relevance of its input; the branch and the residual stream re-join by summing.
    ``need_input=False`` stops at R_A.
    """
    h1 = block.norm1(x)
    attention = _attention_forward(block.attn, h1)
    attn_out = block.attn.proj(attention[-1])
    mid = x + attn_out
    h2 = block.norm2(mid)
    hidden = F.gelu(block.mlp.fc1(h2))
    r_mid, r_mlp = residual_relevance(mid, block.mlp.fc2(hidden), relevance)
    r_mid = r_mid + _mlp_backward(block.mlp, h2, hidden, r_mlp)         # norm2: identity
    r_x, r_attn = residual_relevance(x, attn_out, r_mid)
    r_h1, r_probs = _attention_backward(block.attn, h1, attention, r_attn, need_input)
    if not need_input:
        return None, r_probs
    return r_x + r_h1, r_probs                                           # norm1: identity


# --- the model-level entry point -----------------------------------------------------------

@dataclass
class AttentionRelevance:
    """Result of :func:`chefer_attention_relevance` for B images.

    ``relevance[i]``: R_A of block i, (B, heads, N, N), or None for blocks below
    ``from_block``; ``gradients[i]``: the plain gradient of the target logit at block i's
    attention probabilities (only with ``gradients=True``, else None); ``logits``: (B, classes);
    ``target``: (B,) explained classes.
    """

    relevance: list
    gradients: list | None
    logits: torch.Tensor
    target: torch.Tensor


def chefer_attention_relevance(model, images: torch.Tensor, target=None, from_block: int = 0,
                               gradients: bool = False) -> AttentionRelevance:
    """R_A of blocks ``from_block`` .. last (negative counts from the end) for a batch of
    normalised (B, C, H, W) images, relevance 1 seeded at ``target`` (None = predicted class,
    an int, or (B,) classes). With ``gradients=True`` the same plain forward also gives the
    gradient of the target logit at every block's attention probabilities (for Transformer
    Attribution)."""
    depth = len(model.blocks)
    lowest = from_block + depth if from_block < 0 else from_block
    if not 0 <= lowest < depth:
        raise ValueError(f"from_block {from_block} is outside the model's {depth} blocks")
    param = next(model.parameters())
    images = images.detach().to(device=param.device, dtype=param.dtype)

    block_inputs: list[torch.Tensor | None] = [None] * depth
    head_input: list[torch.Tensor] = []

    def keep_block_input(index):
        def hook(_module, args):
            block_inputs[index] = args[0].detach()
        return hook

    handles = [block.register_forward_pre_hook(keep_block_input(i))
               for i, block in enumerate(model.blocks)]
    handles.append(model.head.register_forward_pre_hook(
        lambda _module, args: head_input.append(args[0].detach())))
    try:
        logits, target, _, grads = record_attention(model, images, target, gradients)
    finally:
        for handle in handles:
            handle.remove()

    relevance_at = [None] * depth
    with torch.no_grad():
        seed = torch.zeros_like(logits).scatter_(1, target[:, None], 1.0)
        cls_features = head_input[0]
        r_cls = linear_relevance(cls_features, model.head.weight, seed)
        # CLS select (epsilon rule: x * R / x at position 0), then the final LayerNorm (identity).
        relevance = torch.zeros_like(block_inputs[-1])
        relevance[:, 0] = cls_features * safe_divide(r_cls, cls_features)
        for index in range(depth - 1, lowest - 1, -1):
            relevance, relevance_at[index] = block_relevance(
                model.blocks[index], block_inputs[index], relevance, need_input=index > lowest)
    return AttentionRelevance(relevance=relevance_at, gradients=grads, logits=logits,
                              target=target)
