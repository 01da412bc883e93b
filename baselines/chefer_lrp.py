"""Chefer's LRP rules on timm ViTs, giving the relevance R_A of every block's attention probabilities.

Used by partial LRP (last block) and Transformer Attribution (every block); docs/method.md,
after Chefer, Gur & Wolf, "Transformer Interpretability Beyond Attention Visualization" (CVPR
2021). This is a relevance propagation of its own, independent of the PA-LRP engine: a plain
forward of the stock timm model records each block's input (forward pre-hooks), the final
norm's output tokens and the classifier inputs; the relevance then goes from the target logit
down through the blocks, each block's local forward being recomputed from its recorded input
with the block's own modules.

Families (those whose family file lists the ``"chefer"`` baselines): timm ``VisionTransformer`` and ``VisionTransformerDistilled``
with pre-norm ``Block``, ``Attention`` and ``Mlp`` -- ViT/DeiT (class token or average pool with
``fc_norm``), distilled DeiT, DeiT-3 (LayerScale), DINOv2 with an MLP, CLIP ViTs (``norm_pre``,
quick-GELU), register-token and qk_norm ViTs. Chefer's rules are not defined for gated MLPs
(SwiGLU) or rotary embeddings, so EVA-02 (and any other block type) is refused with one line.
Rules:

- linear layers (head, fc1, fc2, qkv, proj): alpha=1/beta=0 without bias,
  ``R_in = x+ * (W+^T S) + x- * (W-^T S)`` with ``S = R / (W+ x+ + W- x-)``
  (:func:`linear_relevance`);
- residual adds ``a + b``: proportional split, then each branch rescaled to
  ``|sum a_part| / (|sum a_part| + |sum b_part|) * sum R``, sums over the sample's whole tensor
  (:func:`residual_relevance`);
- ``Q K^T`` and ``A V``: each operand gets ``x * dZ/dx * (R/Z)``, then each is halved
  (:func:`product_relevance`); R_A is taken after that halving and flows through the softmax;
- the readout: class-token pooling puts the relevance of the selected vector at position 0
  (epsilon rule); a distilled DeiT's ``(head(cls) + head_dist(dist)) / 2`` is an add (the
  residual rule above), each head's share going to its own token; average pooling
  ``mean_i t_i`` splits proportionally, ``R_i = (t_i / P) * R / mean`` (epsilon rule, as the
  add), over the tokens it averages;
- softmax, the MLP activation (GELU, quick-GELU), every LayerNorm (``norm1``/``norm2``, the
  final ``norm``, ``fc_norm``, ``q_norm``/``k_norm``, an MLP or attention scale norm),
  LayerScale (a constant per-channel factor) and dropout: identity; the residual stream and the
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

from palrp.loaders import vision_model

from .attention import check_readout, record_attention

__all__ = [
    "safe_divide",
    "linear_relevance",
    "residual_relevance",
    "product_relevance",
    "mlp_relevance",
    "attention_relevance",
    "block_relevance",
    "AttentionRelevance",
    "check_chefer_model",
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


# --- the rules wired into timm's blocks -----------------------------------------------------

def _mlp_hidden(mlp, h: torch.Tensor) -> torch.Tensor:
    """The input of ``fc2``: ``norm(act(fc1(h)))`` (dropout is the identity in eval)."""
    return mlp.norm(mlp.act(mlp.fc1(h)))


@torch.no_grad()
def mlp_relevance(mlp, h: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """Relevance at the MLP input ``h`` for ``fc2(norm(act(fc1(h))))``: fc2 and fc1 with the
    alpha1beta0 rule, the activation (GELU, quick-GELU) and the optional norm with the identity
    rule (the relevance at their output is the relevance at their input)."""
    return _mlp_backward(mlp, h, _mlp_hidden(mlp, h), relevance)


def _mlp_backward(mlp, h, hidden, relevance):
    relevance = linear_relevance(hidden, mlp.fc2.weight, relevance)
    return linear_relevance(h, mlp.fc1.weight, relevance)


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    batch, tokens, dim = t.shape
    return t.view(batch, tokens, heads, dim // heads).transpose(1, 2)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    batch, heads, tokens, head_dim = t.shape
    return t.transpose(1, 2).reshape(batch, tokens, heads * head_dim)


def _identity(t):
    return t


def _attention_forward(attn, h: torch.Tensor):
    """q, k (after ``q_norm``/``k_norm``), v (B, heads, N, head_dim), the probabilities and the
    context (B, N, attn_dim) that ``proj`` reads (after the optional scale ``norm``)."""
    q, k, v = (_split_heads(t, attn.num_heads) for t in attn.qkv(h).chunk(3, dim=-1))
    q = getattr(attn, "q_norm", _identity)(q)
    k = getattr(attn, "k_norm", _identity)(k)
    probs = torch.softmax((q * attn.scale) @ k.transpose(-2, -1), dim=-1)
    context = getattr(attn, "norm", _identity)(_merge_heads(probs @ v))
    return q, k, v, probs, context


@torch.no_grad()
def attention_relevance(attn, h: torch.Tensor, relevance: torch.Tensor,
                        need_input: bool = True):
    """Relevance through the attention branch ``proj(norm(softmax(q k^T * scale) v))`` of ``h``.

    Returns ``(R_h, R_A)``: R_A (B, heads, N, N) is the relevance of the attention
    probabilities after the halving at ``A V``. The softmax is the identity rule, so R_A is
    also the relevance of ``Q K^T``, which is split over q and k by the halving product rule
    (the scale is a constant factor of the scores and does not change the ratios); ``q_norm``,
    ``k_norm`` and the scale ``norm`` are identity rules. q, k, v relevances go back through
    qkv with the alpha1beta0 rule. With ``need_input=False`` (the lowest block asked for) R_h
    is None and that part is skipped.
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
    """One pre-norm block ``y = x' + ls2(mlp(norm2(x')))``, ``x' = x + ls1(attn(norm1(x)))``,
    backwards.

    Returns ``(R_x, R_A)``. Each residual add gets :func:`residual_relevance` on the branch
    output as the block adds it (after LayerScale); LayerScale and LayerNorm are identity rules,
    so the relevance at a branch's output is passed on to the module below unchanged; the
    branch and the residual stream re-join by summing. ``need_input=False`` stops at R_A.
    """
    ls1 = getattr(block, "ls1", _identity)
    ls2 = getattr(block, "ls2", _identity)
    h1 = block.norm1(x)
    attention = _attention_forward(block.attn, h1)
    attn_out = ls1(block.attn.proj(attention[-1]))
    mid = x + attn_out
    h2 = block.norm2(mid)
    hidden = _mlp_hidden(block.mlp, h2)
    r_mid, r_mlp = residual_relevance(mid, ls2(block.mlp.fc2(hidden)), relevance)
    r_mid = r_mid + _mlp_backward(block.mlp, h2, hidden, r_mlp)         # ls2, norm2: identity
    r_x, r_attn = residual_relevance(x, attn_out, r_mid)
    r_h1, r_probs = _attention_backward(block.attn, h1, attention, r_attn, need_input)
    if not need_input:
        return None, r_probs
    return r_x + r_h1, r_probs                                           # ls1, norm1: identity


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


def check_chefer_model(model) -> None:
    """Raise :class:`palrp.modules.patching.UnsupportedModelError` (one line naming the
    families) unless Chefer's rules are defined for ``model``: its family's ``baselines``
    include ``"chefer"`` (the family map then admits only the pre-norm ``Block``,
    ``Attention`` and ``Mlp`` modules these rules are written for) and its configuration is
    one the engine explains (no gated attention, no attention-pool head)."""
    from palrp.modules.adapters.timm import check_model
    from palrp.modules.family import baseline_family

    family = baseline_family(model, "chefer", "Chefer's LRP rules (partial LRP, Transformer "
                                              "Attribution)")
    family.rules.places(model)          # every module is one the map covers
    check_model(model)
    check_readout(model)


def _readout_relevance(model, tokens: torch.Tensor, head_inputs: list, logits, target):
    """Relevance at the final tokens (B, N, D) (the final norm's output; the norm itself is an
    identity rule) from relevance 1 at each sample's target logit, through the classifier(s)
    and the pooling (see the module docstring)."""
    seed = torch.zeros_like(logits).scatter_(1, target[:, None], 1.0)
    relevance = torch.zeros_like(tokens)
    if type(model).__name__ == "VisionTransformerDistilled":
        (cls_features,), (dist_features,) = head_inputs
        r_cls, r_dist = residual_relevance(0.5 * model.head(cls_features),
                                           0.5 * model.head_dist(dist_features), seed)
        for position, features, head, r_out in ((0, cls_features, model.head, r_cls),
                                                (1, dist_features, model.head_dist, r_dist)):
            r_in = linear_relevance(features, head.weight, r_out)
            relevance[:, position] = features * safe_divide(r_in, features)
        return relevance
    (features,) = head_inputs[0]
    r_pooled = linear_relevance(features, model.head.weight, seed)   # fc_norm: identity
    if check_readout(model) == "token":
        relevance[:, 0] = features * safe_divide(r_pooled, features)
        return relevance
    first = 0 if getattr(model, "pool_include_prefix", False) else vision_model.num_prefix_tokens(model)
    pooled = tokens[:, first:]
    mean = pooled.mean(dim=1, keepdim=True)
    relevance[:, first:] = pooled / pooled.shape[1] * safe_divide(r_pooled[:, None], mean)
    return relevance


def chefer_attention_relevance(model, images: torch.Tensor, target=None, from_block: int = 0,
                               gradients: bool = False) -> AttentionRelevance:
    """R_A of blocks ``from_block`` .. last (negative counts from the end) for a batch of
    normalised (B, C, H, W) images, relevance 1 seeded at ``target`` (None = predicted class,
    an int, or (B,) classes). With ``gradients=True`` the same plain forward also gives the
    gradient of the target logit at every block's attention probabilities (for Transformer
    Attribution). A model of another family is refused before any work."""
    check_chefer_model(model)
    depth = len(model.blocks)
    lowest = from_block + depth if from_block < 0 else from_block
    if not 0 <= lowest < depth:
        raise ValueError(f"from_block {from_block} is outside the model's {depth} blocks")
    param = next(model.parameters())
    images = images.detach().to(device=param.device, dtype=param.dtype)

    block_inputs: list[torch.Tensor | None] = [None] * depth
    final_tokens: list[torch.Tensor] = []
    heads = [model.head] + ([model.head_dist] if hasattr(model, "head_dist") else [])
    head_inputs: list[list[torch.Tensor]] = [[] for _ in heads]

    def keep_block_input(index):
        def hook(_module, args):
            block_inputs[index] = args[0].detach()
        return hook

    def keep_head_input(index):
        def hook(_module, args):
            head_inputs[index].append(args[0].detach())
        return hook

    handles = [block.register_forward_pre_hook(keep_block_input(i))
               for i, block in enumerate(model.blocks)]
    handles.append(model.norm.register_forward_hook(
        lambda _module, _args, out: final_tokens.append(out.detach())))
    handles += [head.register_forward_pre_hook(keep_head_input(i)) for i, head in enumerate(heads)]
    try:
        logits, target, _, grads = record_attention(model, images, target, gradients)
    finally:
        for handle in handles:
            handle.remove()

    relevance_at = [None] * depth
    with torch.no_grad():
        relevance = _readout_relevance(model, final_tokens[0], head_inputs, logits, target)
        for index in range(depth - 1, lowest - 1, -1):
            relevance, relevance_at[index] = block_relevance(
                model.blocks[index], block_inputs[index], relevance, need_input=index > lowest)
    return AttentionRelevance(relevance=relevance_at, gradients=grads, logits=logits,
                              target=target)
