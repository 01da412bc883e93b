"""THE registry of vision explanation methods, shared by every driver (segmentation,
perturbation, visualisation): names are data, never parsed from strings.

Every method is a function ``fn(model, images, target=None) -> (B, H, W)`` on normalised
(B, C, H, W) images, returning a map at the input resolution. Maps computed on the patch grid
(rollout, raw attention, attention GradCAM, partial LRP, Transformer Attribution) are upsampled
bilinearly, like the original Chefer et al. evaluation; the LRP family and the gradient methods
are pixel maps already. ``target``: None (the predicted class), an int, or (B,) classes.

The three PA-LRP-family maps come from :func:`palrp.modules.engine.explain`: ``pa_lrp`` and
``pe_only`` from one backward with the positional encodings attributed (:func:`explain_batch`
makes one such call for both), ``attnlrp`` from a backward with them constant (the engine's
``attn_lrp``; for an added position table its pixel relevance equals that of the PA-LRP pass).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from palrp.modules.engine import explain
from palrp.modules.shortcuts import MAP_NAMES
from palrp.modules.targets import resolve_target

from .attention import attention_gradcam, raw_attention, rollout
from .attribution import (gradient_x_input, integrated_gradients, partial_lrp,
                          transformer_attribution)

__all__ = ["MethodSpec", "METHODS", "LRP_METHODS", "available_methods", "display_name",
           "explain_batch"]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its name, the name shown in tables, and its map function."""

    name: str
    display_name: str
    fn: Callable[..., torch.Tensor]


#: Registry name of a PA-LRP-family map -> the engine's method (docs/method.md, "Maps").
LRP_METHODS = {"pa_lrp": "pa_lrp", "attnlrp": "attn_lrp", "pe_only": "pe_only"}


def _lrp_family(name: str) -> Callable[..., torch.Tensor]:
    def fn(model, images, target=None):
        return explain(model, images, target, LRP_METHODS[name]).combined()
    fn.__name__ = name
    fn.__doc__ = (f"The paper's {LRP_METHODS[name]} image map of palrp.explain "
                  "(docs/method.md, 'Maps').")
    return fn


#: Ordered: the paper's method and its two ablations first, then the baselines.
METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    *(MethodSpec(name, MAP_NAMES[method], _lrp_family(name))
      for name, method in LRP_METHODS.items()),
    MethodSpec("rollout", "Rollout", rollout),
    MethodSpec("raw_attn", "Raw attention", raw_attention),
    MethodSpec("attn_gradcam", "Attention GradCAM", attention_gradcam),
    MethodSpec("partial_lrp", "Partial LRP", partial_lrp),
    MethodSpec("transformer_attribution", "Transformer Attribution", transformer_attribution),
    MethodSpec("grad_x_input", "Gradient x Input", gradient_x_input),
    MethodSpec("integrated_gradients", "Integrated Gradients", integrated_gradients),
)}


def available_methods() -> list[str]:
    """Every registered method name, in table order."""
    return list(METHODS)


def _check_names(methods) -> list[str]:
    names = [methods] if isinstance(methods, str) else list(methods)
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(map(repr, unknown))}; "
                         f"choose from: {', '.join(METHODS)}")
    if not names:
        raise ValueError(f"no method given; choose from: {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def display_name(name: str) -> str:
    """The table name of a registered method (ValueError listing the valid names otherwise)."""
    return METHODS[_check_names([name])[0]].display_name


def explain_batch(model, images: torch.Tensor, methods: str | Iterable[str],
                  target=None) -> dict[str, torch.Tensor]:
    """Maps of the requested methods for normalised (B, C, H, W) images.

    Returns ``{name: (B, H, W) map}`` in the order asked (duplicates once), detached, at the
    input resolution (grid maps upsampled bilinearly). ``target``: None = the predicted class,
    resolved once from a plain forward when several methods are asked for, so that every
    method explains the same class; an int; or (B,) classes. Unknown names raise ValueError
    listing the valid ones.
    """
    names = _check_names(methods)
    param = next(model.parameters())
    images = images.detach().to(device=param.device, dtype=param.dtype)
    if target is None and len(names) > 1:
        with torch.no_grad():
            target = resolve_target(None, model(images))
    maps: dict[str, torch.Tensor] = {}
    positional = [name for name in names if name in ("pa_lrp", "pe_only")]
    if positional:                      # one backward gives both maps
        result = explain(model, images, target, "pa_lrp")
        for name in positional:
            maps[name] = result.combined(pe_only=name == "pe_only").detach()
    for name in names:
        if name not in maps:
            maps[name] = METHODS[name].fn(model, images, target).detach()
    return {name: maps[name] for name in names}
