"""The vision entry point: PA-LRP, AttnLRP and PE-only maps for timm vision transformers.

One forward with the explanation rules (:func:`palrp.modules.vit_lrp.lrp_vit`, docs/method.md) and one
backward per batch give all three maps: the pixel relevance (``image * image.grad`` summed over
the channels) and the positional relevance (each positional leaf times its gradient, summed over
its channels: one sink for an added ``pos_embed``, two per block for EVA-02's rotary cos/sin),
reported per token as (B, K, N) with the prefix tokens, and spread over each patch's pixels for
the maps. Because ``x + pos_embed`` is a plain addition, ``R(E) + R(P) = R(z)`` exactly, and the
AttnLRP baseline (no PE) is the pixel part of the very same pass. The maps are combined by the one
combine step of :mod:`palrp.modules.positional`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .positional import VISION_PAPER, Combination, combine, spread_patch_grid
from .rules import RuleSet
from .targets import resolve_target

__all__ = ["LRP_METHODS", "ImageExplanation", "explain_image", "seed_gradient"]

#: The PA-LRP family of maps; all three come from one backward pass.
LRP_METHODS = ("pa_lrp", "attnlrp", "pe_only")


@dataclass
class ImageExplanation:
    """Result of :func:`explain_image` for a batch of B images of H x W pixels.

    ``map``: (B, H, W) map of the requested method (clamped at 0);
    ``pixel``: (B, H, W) unclamped pixel relevance; ``pe_patch``: (B, gh, gw) positional
    relevance per patch (all sinks summed; prefix tokens are in ``positional``); ``pe``:
    (B, H, W) that relevance spread over the pixels; ``logits``: (B, classes), the stock
    model's; ``target``: (B,) explained classes;
    ``positional``: (B, K, N) relevance of each positional sink (``positional_labels``) at each
    of the N tokens, prefix tokens (class, distillation, registers) first;
    ``num_prefix_tokens``: how many; ``rules``: the :class:`rules.RuleSet` used;
    ``patch_size``: the model's (ph, pw).
    """

    method: str
    pixel: torch.Tensor
    pe_patch: torch.Tensor
    pe: torch.Tensor
    logits: torch.Tensor
    target: torch.Tensor
    positional: torch.Tensor | None = None
    positional_labels: tuple[str, ...] = ()
    num_prefix_tokens: int = 0
    rules: RuleSet | None = None
    patch_size: tuple[int, int] = (1, 1)

    def pe_sinks(self) -> torch.Tensor:
        """(B, K, H, W): each sink's patch relevance spread over the patch pixels."""
        if self.positional is None:
            return self.pe[:, None]
        batch, sinks, _ = self.positional.shape
        gh, gw = self.pe_patch.shape[-2:]
        grid = self.positional[:, :, self.num_prefix_tokens:].reshape(batch * sinks, gh, gw)
        height, width = self.pixel.shape[-2:]
        pixels = spread_patch_grid(grid, self.patch_size, (height, width))
        return pixels.reshape(batch, sinks, height, width)

    def map_for(self, method: str, how: Combination = VISION_PAPER) -> torch.Tensor:
        """The (B, H, W) map of ``pa_lrp`` (pixel + pe), ``attnlrp`` (pixel) or ``pe_only``,
        combined by :func:`positional.combine` (``how``: the paper's vision map by default)."""
        if method not in LRP_METHODS:
            raise ValueError(f"unknown LRP method {method!r}; choose one of {LRP_METHODS}")
        if method == "attnlrp":
            return combine(self.pixel, None, replace(how, pe_only=False))
        # a signed sum over the sinks commutes with spreading them over the pixels
        per_sink = how.absolute or how.normalise == "per_part"
        positional = self.pe_sinks() if per_sink else self.pe[:, None]
        return combine(self.pixel, positional, replace(how, pe_only=method == "pe_only"))

    @property
    def map(self) -> torch.Tensor:
        return self.map_for(self.method)

    @property
    def total_relevance(self) -> torch.Tensor:
        """Per-sample sum of pixel and patch PE relevance (B,)."""
        return self.pixel.flatten(1).sum(1) + self.pe_patch.flatten(1).sum(1)

    def record(self) -> dict:
        """JSON-ready description of how the maps were made (rule set, sinks)."""
        return {"method": self.method,
                "rules": None if self.rules is None else self.rules.to_dict(),
                "positional_sinks": list(self.positional_labels),
                "num_prefix_tokens": int(self.num_prefix_tokens)}


def seed_gradient(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The gradient that seeds relevance 1 at the target logit (docs/method.md, section 1): ``1/logit``
    there and 0 elsewhere. A logit of exactly 0 carries no relevance under the Gamma rule, so
    its seed is 0."""
    picked = logits.detach().gather(1, target[:, None])
    safe = torch.where(picked == 0, torch.ones_like(picked), picked)
    value = torch.where(picked == 0, torch.zeros_like(picked), 1.0 / safe)
    return torch.zeros_like(logits).scatter_(1, target[:, None], value)


def explain_image(model, images: torch.Tensor, method: str = "pa_lrp",
                  target=None, rules=None) -> ImageExplanation:
    """Explain a batch of normalised (B, C, H, W) images with PA-LRP (docs/method.md).

    ``model``: a timm ``VisionTransformer``, ``VisionTransformerDistilled`` or ``Eva``
    (docs/vision_families.md), e.g. ``timm.create_model(...)`` or :func:`palrp.modules.load_deit`.
    ``method``: ``pa_lrp``, ``attnlrp`` or ``pe_only`` (selects ``result.map``; every map is
    available through ``result.map_for``). ``target``: None (predicted class), an int, or (B,)
    classes. ``rules``: a :class:`rules.RuleSet`, a preset name (``"paper"``,
    ``"conservative"``, ``"uniform"``) or None for the family's default. Relevance 1 is seeded
    at each sample's target.
    """
    from palrp.loaders import vision_model
    from .vit_lrp import lrp_vit, resolve_rules

    if method not in LRP_METHODS:
        raise ValueError(f"unknown LRP method {method!r}; choose one of {LRP_METHODS}")
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    rules = resolve_rules(model, rules)
    gh, gw = vision_model.grid_size(model, images)
    prefix = vision_model.num_prefix_tokens(model)
    param = next(model.parameters())
    images = images.detach().to(device=param.device, dtype=param.dtype).requires_grad_(True)
    with torch.enable_grad(), lrp_vit(model, rules, pe=True) as lrp:
        logits = model(images)
        target = resolve_target(target, logits)
        leaves = lrp.source.leaves()
        grads = torch.autograd.grad(logits, [images, *leaves],
                                    grad_outputs=seed_gradient(logits, target),
                                    allow_unused=True)
        positional = lrp.source.relevance(grads[1:], num_positions=prefix + gh * gw)
        labels = tuple(lrp.source.labels)
    grad_images = grads[0] if grads[0] is not None else torch.zeros_like(images)
    pixel = (images.detach() * grad_images).sum(dim=1)
    pe_patch = positional[:, :, prefix:].sum(1).reshape(-1, gh, gw)
    patch = vision_model.patch_size(model)
    pe = spread_patch_grid(pe_patch, patch, tuple(images.shape[-2:]))
    return ImageExplanation(method=method, pixel=pixel, pe_patch=pe_patch, pe=pe,
                            logits=logits.detach(), target=target, positional=positional,
                            positional_labels=labels, num_prefix_tokens=prefix, rules=rules,
                            patch_size=patch)
