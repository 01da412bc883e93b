"""Attention-map baselines on timm's own vision transformers: rollout, raw attention, attention
GradCAM (docs/method.md, the baselines; docs/vision_families.md for the families).

Attention is recorded from the model's stock attention: :func:`record_attention` patches each
block's attention *instance* for one forward (modules/patching.py: the unfused softmax path, and
the probabilities kept where the stock code hands them to ``attn_drop``), so that every family's
own attention (qk_norm, EVA-02's rotary q/k, register tokens) is what is recorded; the model is
restored on exit.

Each method reduces the (B, heads, N, N) probabilities to one score per patch through the
model's **readout** (:func:`readout_weights`): the class token's row for class-token pooling
(``global_pool="token"``; for a distilled DeiT also the class token's row, the distillation
token's is not used), or, for average-pool models (no class-token row), the **mean over the
patch-token rows**, which is what average pooling reads. All prefix columns (class,
distillation, register tokens) are dropped; the rest is the patch grid in row-major order, its
size taken from the model and the images (palrp/loaders/vision_model.py), upsampled bilinearly to the
input resolution as the original Chefer et al. evaluation does (``F.interpolate(...,
mode="bilinear")``). Other pools (attention pooling ``"map"``, max pooling) are refused with
one line. Everything is batched; each sample's map depends on that sample only.

The reductions on given attention matrices (:func:`rollout_from_attention`,
:func:`raw_attention_from`, :func:`attention_gradcam_from`) are separate from the model code so
that they can be checked on hand-made matrices; their defaults (class token at 0, one prefix
token) are the original DeiT layout. The model-level functions share the signature
``fn(model, images, target=None) -> (B, H, W)`` of the method registry.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from palrp.loaders import vision_model
from palrp.modules.family import baseline_family
from palrp.modules.patching import patching
from palrp.modules.targets import resolve_target

__all__ = [
    "cls_row_to_grid",
    "upsample_grid",
    "check_readout",
    "readout_weights",
    "readout_row",
    "record_attention",
    "rollout_from_attention",
    "raw_attention_from",
    "attention_gradcam_from",
    "rollout",
    "raw_attention",
    "attention_gradcam",
]

#: The rules of the family map whose modules are attention (their probabilities are recorded).
ATTENTION_RULES = ("attention", "eva_attention")


# --- geometry helpers shared by every grid-level baseline -------------------------------

def cls_row_to_grid(cls_row: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """(B, P) scores of the patch tokens (prefix columns already dropped) -> (B, gh, gw)."""
    gh, gw = grid_size
    if cls_row.shape[-1] != gh * gw:
        raise ValueError(f"{cls_row.shape[-1]} patch scores do not fill a {gh}x{gw} grid")
    return cls_row.reshape(cls_row.shape[0], gh, gw)


def upsample_grid(grid_map: torch.Tensor, patch_size: tuple[int, int],
                  image_size: tuple[int, int]) -> torch.Tensor:
    """A (B, gh, gw) patch-grid map at pixel resolution: (B, H, W).

    Bilinear interpolation by the patch size (``align_corners=False``), as in the original
    ImageNet-segmentation evaluation of Chefer et al. Pixels that the patch grid does not
    cover (an image side not divisible by the patch side, which the patch conv never sees)
    are 0, as in :func:`palrp.modules.positional.spread_patch_grid`.
    """
    gh, gw = grid_map.shape[-2:]
    ph, pw = patch_size
    pixels = F.interpolate(grid_map[:, None], size=(gh * ph, gw * pw), mode="bilinear",
                           align_corners=False)[:, 0]
    height, width = image_size
    pad_h, pad_w = height - pixels.shape[-2], width - pixels.shape[-1]
    if pad_h or pad_w:
        pixels = F.pad(pixels, (0, pad_w, 0, pad_h))
    return pixels


def _to_pixels(model, patch_scores: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    grid = cls_row_to_grid(patch_scores, vision_model.grid_size(model, images))
    return upsample_grid(grid, vision_model.patch_size(model), tuple(images.shape[-2:])).detach()


# --- the readout: which query row stands for the model's output ---------------------------

def check_readout(model) -> str:
    """The model's pool (``"token"`` or ``"avg"``); any other raises ``ValueError`` with one
    line."""
    pool = getattr(model, "global_pool", "token")
    if getattr(model, "attn_pool", None) is not None or pool not in ("token", "avg"):
        raise ValueError(f"{type(model).__name__} pools with {pool!r}; the attention baselines "
                         "read the class-token row (global_pool='token') or the mean over patch "
                         "rows (global_pool='avg'); rebuild the model with one of them")
    if pool == "token" and not vision_model.has_class_token(model):
        raise ValueError("global_pool='token' without a class token; pass a model with "
                         "class_token=True or global_pool='avg'")
    return pool


def readout_weights(model, tokens: int, device=None, dtype=None) -> torch.Tensor:
    """(N,) weights over the N tokens of the sequence that the model's pooling reads.

    ``global_pool="token"``: one-hot at the class token (position 0). ``"avg"``: uniform over
    the patch tokens (over all tokens with timm's ``pool_include_prefix``). Other pools (and a
    class-token pool without a class token) raise ``ValueError`` with one line.
    """
    pool = check_readout(model)
    weights = torch.zeros(tokens, device=device, dtype=dtype)
    if pool == "token":
        weights[0] = 1.0
        return weights
    first = 0 if getattr(model, "pool_include_prefix", False) else vision_model.num_prefix_tokens(model)
    weights[first:] = 1.0 / (tokens - first)
    return weights


def readout_row(weights: torch.Tensor, matrix: torch.Tensor, prefix: int) -> torch.Tensor:
    """``weights @ matrix`` over the query axis, prefix columns dropped.

    ``matrix``: (B, N, N) or (B, heads, N, N); returns (B, P) or (B, heads, P)."""
    return torch.einsum("n,...nm->...m", weights.to(matrix.dtype), matrix)[..., prefix:]


# --- recording attention from the model ------------------------------------------------

def _attention_modules(model) -> list:
    """The attention modules of the model, first block first, as its family map names them
    (families whose ``baselines`` include ``"attention"``; others are refused with one
    line)."""
    family = baseline_family(model, "attention", "the attention baselines")
    modules = [module for module, _, rule in family.rules.places(model)
               if rule in ATTENTION_RULES]
    if not modules or not all(hasattr(m, "attn_drop") and hasattr(m, "fused_attn")
                              for m in modules):
        raise RuntimeError(f"the {family.name} family map names attention modules that do not "
                           "keep their probabilities at attn_drop; the attention baselines "
                           "cannot record them")
    return modules


def record_attention(model, images: torch.Tensor, target=None, gradients: bool = False):
    """One forward of the stock model keeping every block's attention probabilities.

    Returns ``(logits, target, probs, grads)``: ``target`` resolved by
    :func:`palrp.modules.targets.resolve_target` (None = predicted class), ``probs`` a list over
    blocks of (B, heads, N, N) tensors; with ``gradients=True`` ``grads`` holds the plain
    gradient of each sample's target logit at each block's probabilities, otherwise None.
    The attention modules are patched for this one forward (the unfused path, which computes
    the probabilities, and a keeper at ``attn_drop``) and restored afterwards.
    """
    modules = _attention_modules(model)
    param = next(model.parameters())
    images = images.detach().to(device=param.device, dtype=param.dtype)
    kept: list = [None] * len(modules)

    def keeper(index):
        def make(original):
            def forward(probs):
                kept[index] = probs
                return original(probs)
            return forward
        return make

    with patching(model) as patcher:
        for index, attn in enumerate(modules):
            patcher.set_attr(attn, "fused_attn", False)
            patcher.wrap_forward(attn.attn_drop, keeper(index))
        if not gradients:
            with torch.no_grad():
                logits = model(images)
            return logits, resolve_target(target, logits), list(kept), None
        # The images require a gradient so that the probabilities do even if the model's
        # parameters are frozen; only the gradient at the probabilities is computed.
        images.requires_grad_(True)
        with torch.enable_grad():
            logits = model(images)
            target = resolve_target(target, logits)
            score = logits.gather(1, target[:, None]).sum()
            grads = torch.autograd.grad(score, kept)
        return (logits.detach(), target, [p.detach() for p in kept],
                [g.detach() for g in grads])


# --- reductions on given attention matrices --------------------------------------------

def _cls_weights(tokens: int, dtype, device) -> torch.Tensor:
    weights = torch.zeros(tokens, dtype=dtype, device=device)
    weights[0] = 1.0
    return weights


def rollout_from_attention(attentions, weights: torch.Tensor | None = None,
                           prefix: int = 1) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020) as docs/method.md defines it.

    ``attentions``: per block, from the first up, (B, heads, N, N) probabilities. Per block
    ``A_hat = rownorm(mean_heads(A) + I)``; ``joint = A_hat_L ... A_hat_2 A_hat_1`` (the first
    block multiplied first); returns the readout row (``weights``, default the class token at
    0) of ``joint`` without the ``prefix`` columns, (B, N - prefix).
    """
    joint = None
    for probs in attentions:
        mixed = probs.mean(dim=1)
        eye = torch.eye(mixed.shape[-1], dtype=mixed.dtype, device=mixed.device)
        mixed = mixed + eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        joint = mixed if joint is None else mixed @ joint
    if weights is None:
        weights = _cls_weights(joint.shape[-1], joint.dtype, joint.device)
    return readout_row(weights, joint, prefix)


def raw_attention_from(probs: torch.Tensor, weights: torch.Tensor | None = None,
                       prefix: int = 1) -> torch.Tensor:
    """Raw attention: one block's (B, heads, N, N) probabilities, mean over heads, readout row
    (default the class token's) without the ``prefix`` columns: (B, N - prefix)."""
    mixed = probs.mean(dim=1)
    if weights is None:
        weights = _cls_weights(mixed.shape[-1], mixed.dtype, mixed.device)
    return readout_row(weights, mixed, prefix)


def attention_gradcam_from(probs: torch.Tensor, grads: torch.Tensor,
                           weights: torch.Tensor | None = None, prefix: int = 1) -> torch.Tensor:
    """GradCAM on attention (Chefer et al. 2021's baseline) for one block: (B, N - prefix).

    Per head, the weight is the gradient averaged over the patch columns of the readout row
    (for the class token, the original ``grad[:, :, 0, 1:].mean``); the readout row of the
    attention (patch columns) times that weight, mean over heads, positive part.
    """
    if weights is None:
        weights = _cls_weights(probs.shape[-1], probs.dtype, probs.device)
    row = readout_row(weights, probs, prefix)
    head_weights = readout_row(weights, grads, prefix).mean(dim=-1, keepdim=True)
    return (row * head_weights).mean(dim=1).clamp(min=0)


# --- the registry's functions: (model, images, target) -> (B, H, W) --------------------

def _readout(model, probs) -> tuple[torch.Tensor, int]:
    tokens = probs[0].shape[-1]
    weights = readout_weights(model, tokens, probs[0].device, probs[0].dtype)
    return weights, vision_model.num_prefix_tokens(model)


def rollout(model, images: torch.Tensor, target=None) -> torch.Tensor:
    """Attention rollout at the input resolution (grid upsampled bilinearly), read at the
    model's readout (class-token row, or the mean over patch rows for average pooling).
    Class-agnostic: ``target`` is part of the registry signature and not used."""
    check_readout(model)   # refuse an unsupported pool before the forward
    _, _, probs, _ = record_attention(model, images)
    return _to_pixels(model, rollout_from_attention(probs, *_readout(model, probs)), images)


def raw_attention(model, images: torch.Tensor, target=None) -> torch.Tensor:
    """The last block's head-averaged attention at the readout (class-token row, or the mean
    over patch rows for average pooling), at the input resolution (bilinear).
    Class-agnostic: ``target`` is part of the registry signature and not used."""
    check_readout(model)
    _, _, probs, _ = record_attention(model, images)
    return _to_pixels(model, raw_attention_from(probs[-1], *_readout(model, probs)), images)


def attention_gradcam(model, images: torch.Tensor, target=None) -> torch.Tensor:
    """Attention GradCAM of the last block for ``target`` (None = predicted class, an int or
    (B,) classes), at the readout, at the input resolution (bilinear)."""
    check_readout(model)
    _, _, probs, grads = record_attention(model, images, target, gradients=True)
    return _to_pixels(model, attention_gradcam_from(probs[-1], grads[-1],
                                                    *_readout(model, probs)), images)
