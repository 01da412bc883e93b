"""PA-LRP: positional-aware LRP for transformers (Bakish et al., NeurIPS 2025).

Everything the project installs lives under this one name. The public API (imported lazily, so
that vision users never import transformers):

- :func:`explain` -- the one entry point: ``palrp.explain(model, inputs, target=None,
  method="pa_lrp") -> Explanation`` for every supported model (docs/method.md);
- :func:`families` -- every model family the engine explains, vision and text, one registry;
- :func:`explain_image`, :func:`explain_text` -- conveniences over :func:`explain`;
- :func:`lrp` -- the patch context itself, for custom backward passes; :class:`RuleSet`;
- loaders: :func:`load_deit`, :func:`load_timm_model` (vision checkpoints into timm models),
  :func:`load_text_model` (a transformers folder); ``palrp.vision_model`` (geometry and
  preprocessing read from a vision model).

Layout: ``palrp.modules`` (the engine, the checkout's modules/), ``palrp.baselines`` (the other
methods, baselines/), ``palrp.config`` (paths and defaults, config.py), and the evaluation library
here: ``data``, ``loaders``, ``metrics``, ``nlp``, ``perturbation``, ``render``, ``runtime``.
"""
from __future__ import annotations

import importlib

from .modules import __all__ as _ENGINE_API

#: Public names not in the engine's export table (``families``: the engine's subpackage of
#: family files has that name there): name -> module.
_LIBRARY_API = {
    "families": "palrp.modules.family",
    "load_deit": "palrp.loaders.checkpoints",
    "load_timm_model": "palrp.loaders.checkpoints",
    "load_text_model": "palrp.loaders.text_models",
    "load_model": "palrp.loaders.hub",
    "PALRP": "palrp.interop",
    "quantus_explain_func": "palrp.interop",
}
#: Submodules offered under the top-level name as well.
_SUBMODULES = {"vision_model": "palrp.loaders.vision_model"}

__all__ = sorted([*_ENGINE_API, *_LIBRARY_API, *_SUBMODULES])


def __getattr__(name: str):
    """The API names (the engine's export table in :mod:`palrp.modules`, and the loaders),
    imported on first use."""
    if name in _ENGINE_API:
        return getattr(importlib.import_module("palrp.modules"), name)
    if name in _LIBRARY_API:
        return getattr(importlib.import_module(_LIBRARY_API[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(_SUBMODULES[name])
    raise AttributeError(f"module 'palrp' has no attribute {name!r}")
