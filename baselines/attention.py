"""Attention-map baselines for DeiT: rollout, raw attention, attention GradCAM (SPEC section 2).

Each method reads the (B, heads, N, N) attention probabilities of a plain forward
(``model(images, record_attention=True)``), reduces them to the CLS row without the CLS column,
i.e. one score per patch (token 0 is CLS, tokens 1..N-1 the patches in row-major grid order),
reshapes that to the model's patch grid and upsamples it bilinearly to the input resolution,
as the original Chefer et al. evaluation does (``F.interpolate(..., scale_factor=patch,
mode="bilinear")``). Everything is batched; each sample's map depends on that sample only.

The reductions on given attention matrices (:func:`rollout_from_attention`,
:func:`raw_attention_from`, :func:`attention_gradcam_from`) are separate from the model code so
that they can be checked on hand-made matrices. The model-level functions share the signature
``fn(model, images, target=None) -> (B, H, W)`` of the method registry.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from modules.explain import resolve_target

__all__ = [
    "cls_row_to_grid",
    "upsample_grid",
    "record_attention",
    "rollout_from_attention",
    "raw_attention_from",
    "attention_gradcam_from",
    "rollout",
    "raw_attention",
    "attention_gradcam",
]


# --- geometry helpers shared by every grid-level baseline -------------------------------

def cls_row_to_grid(cls_row: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """(B, N-1) scores of the patch tokens (CLS column already dropped) -> (B, gh, gw)."""
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
    are 0, as in :func:`modules.positional.spread_patch_grid`.
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


def _to_pixels(model, cls_row: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    grid = cls_row_to_grid(cls_row, model.grid_size)
    return upsample_grid(grid, model.patch_size, tuple(images.shape[-2:])).detach()


# --- recording attention from the model ------------------------------------------------

def record_attention(model, images: torch.Tensor, target=None, gradients: bool = False):
    """One plain forward keeping every block's attention probabilities.

    Returns ``(logits, target, probs, grads)``: ``target`` resolved by
    :func:`modules.explain.resolve_target` (None = predicted class), ``probs`` a list over
    blocks of (B, heads, N, N) tensors; with ``gradients=True`` ``grads`` holds the plain
    gradient of each sample's target logit at each block's probabilities, otherwise None.
    The probabilities kept on the model's attention modules are cleared again afterwards.
    """
    param = next(model.parameters())
    images = images.detach().to(device=param.device, dtype=param.dtype)
    try:
        if not gradients:
            with torch.no_grad():
                logits = model(images, record_attention=True)
            return (logits, resolve_target(target, logits),
                    [block.attn.probs for block in model.blocks], None)
        # The images require a gradient so that the probabilities do even if the model's
        # parameters are frozen; only the gradient at the probabilities is computed.
        images.requires_grad_(True)
        with torch.enable_grad():
            logits = model(images, record_attention=True)
            probs = [block.attn.probs for block in model.blocks]
            target = resolve_target(target, logits)
            score = logits.gather(1, target[:, None]).sum()
            grads = torch.autograd.grad(score, probs)
        return (logits.detach(), target, [p.detach() for p in probs],
                [g.detach() for g in grads])
    finally:
        for block in model.blocks:
            block.attn.probs = None


# --- reductions on given attention matrices --------------------------------------------

def rollout_from_attention(attentions) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020) as SPEC section 2 defines it.

    ``attentions``: per block, from the first up, (B, heads, N, N) probabilities. Per block
    ``A_hat = rownorm(mean_heads(A) + I)``; ``joint = A_hat_L ... A_hat_2 A_hat_1`` (the first
    block multiplied first); returns the CLS row without the CLS column, (B, N-1).
    """
    joint = None
    for probs in attentions:
        mixed = probs.mean(dim=1)
        eye = torch.eye(mixed.shape[-1], dtype=mixed.dtype, device=mixed.device)
        mixed = mixed + eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        joint = mixed if joint is None else mixed @ joint
    return joint[:, 0, 1:]


def raw_attention_from(probs: torch.Tensor) -> torch.Tensor:
    """Raw attention: one block's (B, heads, N, N) probabilities, mean over heads, CLS row
    without the CLS column: (B, N-1)."""
    return probs.mean(dim=1)[:, 0, 1:]


def attention_gradcam_from(probs: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """GradCAM on attention (Chefer et al. 2021's baseline) for one block: (B, N-1).

    Per head, the weight is the gradient averaged over the tokens of the CLS row (its patch
    columns, as in the original ``grad[:, :, 0, 1:].mean``); the CLS row of the attention
    (patch columns) times that weight, mean over heads, positive part.
    """
    cls_attention = probs[:, :, 0, 1:]
    weights = grads[:, :, 0, 1:].mean(dim=-1, keepdim=True)
    return (cls_attention * weights).mean(dim=1).clamp(min=0)


# --- the registry's functions: (model, images, target) -> (B, H, W) --------------------

def rollout(model, images: torch.Tensor, target=None) -> torch.Tensor:
    """Attention rollout at the input resolution (grid upsampled bilinearly).
    Class-agnostic: ``target`` is part of the registry signature and not used."""
    _, _, probs, _ = record_attention(model, images)
    return _to_pixels(model, rollout_from_attention(probs), images)


def raw_attention(model, images: torch.Tensor, target=None) -> torch.Tensor:
    """The last block's head-averaged CLS attention at the input resolution (bilinear).
    Class-agnostic: ``target`` is part of the registry signature and not used."""
    _, _, probs, _ = record_attention(model, images)
    return _to_pixels(model, raw_attention_from(probs[-1]), images)


def attention_gradcam(model, images: torch.Tensor, target=None) -> torch.Tensor:
    """Attention GradCAM of the last block for ``target`` (None = predicted class, an int or
    (B,) classes), at the input resolution (bilinear)."""
    _, _, probs, grads = record_attention(model, images, target, gradients=True)
    return _to_pixels(model, attention_gradcam_from(probs[-1], grads[-1]), images)
