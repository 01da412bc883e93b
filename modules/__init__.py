"""PA-LRP explanation engine: positional-aware LRP for DeiT and Llama (Bakish et al., 2025).

Public API (imported lazily so that vision users never import transformers):

- :func:`load_deit`, :func:`explain_image` -- vision (SPEC section 2);
- :func:`explain_text`, :func:`lrp_llama` -- Llama on the released transformers (SPEC section 3).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "DeiT": ".deit",
    "load_deit": ".deit",
    "explain_image": ".explain",
    "ImageExplanation": ".explain",
    "explain_text": ".text",
    "TextExplanation": ".text",
    "lrp_llama": ".llama",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'modules' has no attribute {name!r}")
