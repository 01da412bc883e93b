"""PA-LRP explanation engine: positional-aware LRP for DeiT and Llama (Bakish et al., 2025).

Public API (imported lazily so that vision users never import transformers):

- :func:`load_deit` (a DeiT/ViT checkpoint -> timm's ``VisionTransformer``),
  :func:`load_timm_model` (any timm family and its weights), :func:`explain_image`,
  :func:`lrp_vit`, :class:`RuleSet` -- vision, on timm's own models (docs/vision_families.md);
- :func:`explain_text`, :func:`lrp_text` -- the text families of docs/text_families.md
  (Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3, GPT-2, BERT, RoBERTa) on the released
  transformers; :func:`lrp_llama` is an alias of :func:`lrp_text`.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "explain_image": ".explain",
    "ImageExplanation": ".explain",
    "lrp_vit": ".vit_lrp",
    "RuleSet": ".rules",
    "explain_text": ".text",
    "TextExplanation": ".text",
    "lrp_text": ".text_engine",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'palrp.modules' has no attribute {name!r}")
