"""PA-LRP: positional-aware LRP for transformers (Bakish et al., NeurIPS 2025).

Everything the project installs lives under this one name (``pip install -e .`` puts only
``palrp`` into site-packages). The public API is re-exported here and imported lazily, so that
vision users never import transformers:

- :func:`load_deit`, :func:`load_timm_model`, :func:`explain_image`, :func:`lrp_vit`,
  :class:`RuleSet`, :class:`ImageExplanation` -- vision, on timm's own models
  (docs/vision_families.md);
- :func:`explain_text`, :func:`lrp_text`, :class:`TextExplanation` -- the text families of
  docs/text_families.md on the released transformers (:func:`lrp_llama` is an alias of
  :func:`lrp_text`);
- :mod:`palrp.modules.vision_model` (geometry and preprocessing read from a timm model) as
  ``palrp.vision_model``.

Subpackages: ``modules`` (the engines and the positional rule), ``baselines``, ``data``,
``metrics``, ``perturbation``, ``runtime`` (stores, sharding, CLI pieces), ``config`` (paths).
"""
from __future__ import annotations

import importlib

from .modules import __all__ as _API

#: Submodules offered under the top-level name as well.
_SUBMODULES = {"vision_model": "palrp.modules.vision_model"}

__all__ = sorted([*_API, *_SUBMODULES])


def __getattr__(name: str):
    """The API names of :mod:`palrp.modules` (one export table, there), imported on first use."""
    if name in _API:
        return getattr(importlib.import_module("palrp.modules"), name)
    if name in _SUBMODULES:
        return importlib.import_module(_SUBMODULES[name])
    raise AttributeError(f"module 'palrp' has no attribute {name!r}")
