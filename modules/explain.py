"""The vision entry point: PA-LRP, AttnLRP and PE-only maps for DeiT (SPEC section 2).

One forward with the explanation rules and one backward per batch give all three maps: the
pixel relevance (``image * image.grad`` summed over RGB) and the positional relevance
(``pos_embed`` leaf times its gradient, summed over channels, spread over each patch's pixels).
Because ``x + pos_embed`` is a plain addition, ``R(E) + R(P) = R(z)`` exactly, and the AttnLRP
baseline (no PE) is the pixel part of the very same pass.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .positional import (VISION_PAPER, additive_pe_leaf, additive_position_relevance, combine,
                         spread_patch_grid)

__all__ = ["LRP_METHODS", "ImageExplanation", "explain_image", "resolve_target", "seed_gradient"]

#: The PA-LRP family of maps; all three come from one backward pass.
LRP_METHODS = ("pa_lrp", "attnlrp", "pe_only")


@dataclass
class ImageExplanation:
    """Result of :func:`explain_image` for a batch of B images of H x W pixels.

    ``map``: (B, H, W) map of the requested method (SPEC section 2, clamped at 0);
    ``pixel``: (B, H, W) unclamped pixel relevance; ``pe_patch``: (B, gh, gw) PE relevance per
    patch (CLS dropped); ``pe``: (B, H, W) that relevance spread over the pixels;
    ``logits``: (B, classes); ``target``: (B,) explained classes.
    """

    method: str
    pixel: torch.Tensor
    pe_patch: torch.Tensor
    pe: torch.Tensor
    logits: torch.Tensor
    target: torch.Tensor

    def map_for(self, method: str) -> torch.Tensor:
        """The (B, H, W) map of ``pa_lrp`` (pixel + pe), ``attnlrp`` (pixel) or ``pe_only``."""
        if method not in LRP_METHODS:
            raise ValueError(f"unknown LRP method {method!r}; choose one of {LRP_METHODS}")
        positional = None if method == "attnlrp" else self.pe[:, None]
        how = replace(VISION_PAPER, pe_only=method == "pe_only")
        return combine(self.pixel, positional, how)

    @property
    def map(self) -> torch.Tensor:
        return self.map_for(self.method)

    @property
    def total_relevance(self) -> torch.Tensor:
        """Per-sample sum of pixel and PE relevance (B,)."""
        return self.pixel.flatten(1).sum(1) + self.pe_patch.flatten(1).sum(1)


def resolve_target(target, logits: torch.Tensor) -> torch.Tensor:
    """None -> the predicted classes; an int -> that class for every sample; a (B,) tensor or
    sequence -> per-sample classes. Checked against the number of classes."""
    batch, classes = logits.shape
    if target is None:
        return logits.argmax(dim=-1)
    target = torch.as_tensor(target, device=logits.device, dtype=torch.long)
    if target.dim() == 0:
        target = target.expand(batch)
    if target.shape != (batch,):
        raise ValueError(f"target has shape {tuple(target.shape)}; pass None, an int or {batch} classes")
    if bool((target < 0).any()) or bool((target >= classes).any()):
        raise ValueError(f"target {target.tolist()} is outside the model's {classes} classes")
    return target


def seed_gradient(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The gradient that seeds relevance 1 at the target logit (SPEC section 0): ``1/logit``
    there and 0 elsewhere. A logit of exactly 0 carries no relevance under the Gamma rule, so
    its seed is 0."""
    picked = logits.detach().gather(1, target[:, None])
    safe = torch.where(picked == 0, torch.ones_like(picked), picked)
    value = torch.where(picked == 0, torch.zeros_like(picked), 1.0 / safe)
    return torch.zeros_like(logits).scatter_(1, target[:, None], value)


def explain_image(model, images: torch.Tensor, method: str = "pa_lrp",
                  target=None) -> ImageExplanation:
    """Explain a batch of normalised (B, 3, H, W) images with PA-LRP (SPEC section 2).

    ``method``: ``pa_lrp``, ``attnlrp`` or ``pe_only`` (selects ``result.map``; every map is
    available through ``result.map_for``). ``target``: None (predicted class), an int, or (B,)
    classes. Relevance 1 is seeded at each sample's target.
    """
    if method not in LRP_METHODS:
        raise ValueError(f"unknown LRP method {method!r}; choose one of {LRP_METHODS}")
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    param = next(model.parameters())
    images = images.detach().to(device=param.device, dtype=param.dtype).requires_grad_(True)
    pe_leaf = additive_pe_leaf(model.pos_embed, images.shape[0])
    with torch.enable_grad():
        logits = model(images, lrp=True, pos_embed=pe_leaf)
        target = resolve_target(target, logits)
        grad_images, grad_pe = torch.autograd.grad(
            logits, (images, pe_leaf), grad_outputs=seed_gradient(logits, target))
    pixel = (images.detach() * grad_images).sum(dim=1)
    gh, gw = model.grid_size
    pe_patch = additive_position_relevance(pe_leaf, grad_pe)[:, 1:].reshape(-1, gh, gw)
    pe = spread_patch_grid(pe_patch, model.patch_size, tuple(images.shape[-2:]))
    return ImageExplanation(method=method, pixel=pixel, pe_patch=pe_patch, pe=pe,
                            logits=logits.detach(), target=target)
