"""The PA-LRP engine (docs/method.md): one patch context, one entry point, one family registry
for every model, vision and text (Bakish et al., NeurIPS 2025).

Public API (imported lazily, so that vision users never import transformers):

- :func:`explain` -- ``explain(model, inputs, target=None, method="pa_lrp") ->``
  :class:`Explanation` for every registered family and their composites;
- :func:`lrp` -- the patch context (for custom scores and backward passes);
- :func:`family_of`, :class:`Family` -- the registry (the family files are the subpackage
  ``families``; the list of them is :func:`palrp.modules.family.families`, ``palrp.families()``);
- :func:`explain_image`, :func:`explain_text`, :func:`method_maps` -- conveniences;
- :class:`RuleSet`, :class:`Combination`, :func:`combine` -- the rule constants and the one
  combine step.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "explain": ".engine",
    "lrp": ".engine",
    "METHODS": ".engine",
    "Explanation": ".explanation",
    "Stream": ".explanation",
    "Family": ".family",
    "family_of": ".family",
    "UnsupportedModelError": ".family",
    "explain_image": ".shortcuts",
    "explain_text": ".shortcuts",
    "method_maps": ".shortcuts",
    "RuleSet": ".rules",
    "Combination": ".positional",
    "combine": ".positional",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'palrp.modules' has no attribute {name!r}")
