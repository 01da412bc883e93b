"""Class-specific baselines: partial LRP, Transformer Attribution, gradient x input, integrated
gradients (docs/method.md), on timm's own vision transformers.

All take normalised (B, C, H, W) images and ``target`` (None = predicted class, an int, or (B,)
classes) and return (B, H, W) maps at the input resolution:

- :func:`partial_lrp` (Voita et al. 2019, as evaluated by Chefer et al. 2021): R_A of the last
  block (Chefer's rules, :mod:`palrp.baselines.chefer_lrp`), positive part, mean over heads, readout
  row without the prefix columns; the patch grid upsampled bilinearly.
- :func:`transformer_attribution` (Chefer, Gur & Wolf, CVPR 2021): per block
  ``mean_heads((grad_A * R_A)+) + I``, multiplied from the first block up **without** row
  normalisation, readout row without the prefix columns; the patch grid upsampled bilinearly.

  The readout row is the class token's, or for average-pool models the mean over the patch
  rows (:func:`palrp.baselines.attention.readout_weights`); both methods need Chefer's rules and
  refuse models of families without the ``"chefer"`` baselines (e.g. EVA-02) with one
  line.
- :func:`gradient_x_input`: ``sum over channels of x * d logit_target / dx`` on the normalised
  pixels, from a plain forward (signed).
- :func:`integrated_gradients` (Sundararajan et al. 2017): ``sum over channels of
  (x - x0) * mean_k grad(x0 + a_k (x - x0))`` with the **black image** as baseline ``x0`` (0 in
  [0, 1] pixel space, normalised with the model's own mean/std,
  ``palrp.loaders.vision_model.normalize(model, 0)``: the value the perturbation benchmark gives
  removed pixels) and the midpoint Riemann rule ``a_k = (k - 1/2) / steps`` with **20 steps** by
  default, so that ``sum IG ~= f(x) - f(x0)`` (completeness). Signed.

Gradients are seeded with 1 at each sample's target logit (plain gradients, no LRP rule).
"""
from __future__ import annotations

import torch

from palrp.loaders import vision_model
from palrp.modules.targets import resolve_target

from .attention import cls_row_to_grid, readout_row, readout_weights, upsample_grid
from .chefer_lrp import chefer_attention_relevance

__all__ = [
    "partial_lrp_grid",
    "transformer_attribution_grid",
    "partial_lrp",
    "transformer_attribution",
    "gradient_x_input",
    "integrated_gradients",
    "IG_STEPS",
]

#: Default number of integration steps of :func:`integrated_gradients`.
IG_STEPS = 20


def _grid(model, matrix: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The readout row of a (B, N, N) matrix, prefix columns dropped, as (B, gh, gw)."""
    weights = readout_weights(model, matrix.shape[-1], matrix.device, matrix.dtype)
    row = readout_row(weights, matrix, vision_model.num_prefix_tokens(model))
    return cls_row_to_grid(row, vision_model.grid_size(model, images))


def partial_lrp_grid(model, images: torch.Tensor, target=None) -> torch.Tensor:
    """Partial LRP on the patch grid: (B, gh, gw)."""
    result = chefer_attention_relevance(model, images, target, from_block=-1)
    return _grid(model, result.relevance[-1].clamp(min=0).mean(dim=1), images)


def transformer_attribution_grid(model, images: torch.Tensor, target=None) -> torch.Tensor:
    """Transformer Attribution on the patch grid: (B, gh, gw)."""
    result = chefer_attention_relevance(model, images, target, from_block=0, gradients=True)
    joint = None
    for relevance, grad in zip(result.relevance, result.gradients):
        cam = (grad * relevance).clamp(min=0).mean(dim=1)
        cam = cam + torch.eye(cam.shape[-1], dtype=cam.dtype, device=cam.device)
        joint = cam if joint is None else cam @ joint
    return _grid(model, joint, images)


def partial_lrp(model, images: torch.Tensor, target=None) -> torch.Tensor:
    """Partial LRP at the input resolution (bilinear upsampling of the grid)."""
    grid = partial_lrp_grid(model, images, target)
    return upsample_grid(grid, vision_model.patch_size(model), tuple(images.shape[-2:]))


def transformer_attribution(model, images: torch.Tensor, target=None) -> torch.Tensor:
    """Transformer Attribution at the input resolution (bilinear upsampling of the grid)."""
    grid = transformer_attribution_grid(model, images, target)
    return upsample_grid(grid, vision_model.patch_size(model), tuple(images.shape[-2:]))


def _prepare(model, images: torch.Tensor) -> torch.Tensor:
    param = next(model.parameters())
    return images.detach().to(device=param.device, dtype=param.dtype)


def _target_gradient(model, images: torch.Tensor, target):
    """Plain gradient of each sample's target logit at the (normalised) images, and the
    resolved (B,) target (None = the class predicted for these images)."""
    images = images.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(images)
        target = resolve_target(target, logits)
        (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), images)
    return grad, target


def gradient_x_input(model, images: torch.Tensor, target=None) -> torch.Tensor:
    """Gradient x input on the normalised pixels, summed over channels: (B, H, W)."""
    images = _prepare(model, images)
    grad, _ = _target_gradient(model, images, target)
    return (images * grad).sum(dim=1)


def integrated_gradients(model, images: torch.Tensor, target=None,
                         steps: int = IG_STEPS) -> torch.Tensor:
    """Integrated gradients from the black image, ``steps`` midpoint steps: (B, H, W).

    The target (None = predicted class at ``images``) is fixed once for the whole path. Each
    step is one batched forward and backward of the B interpolated images.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    images = _prepare(model, images)
    with torch.no_grad():
        target = resolve_target(target, model(images))
    baseline = vision_model.normalize(model, torch.zeros_like(images))
    delta = images - baseline
    total = torch.zeros_like(images)
    for k in range(steps):
        alpha = (k + 0.5) / steps
        total += _target_gradient(model, baseline + alpha * delta, target)[0]
    return (delta * total / steps).sum(dim=1)
