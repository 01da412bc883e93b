"""Llama names kept for existing callers: the engine is :mod:`palrp.modules.text_engine`, which
explains every family of docs/text_families.md (Llama included) on any attention kernel.

- :func:`lrp_llama` is :func:`palrp.modules.text_engine.lrp_text`;
- :func:`llama_head_kind` is :func:`palrp.modules.text_engine.head_kind`;
- :func:`logits_to_keep_kwargs` is re-exported.
"""
from __future__ import annotations

from .text_engine import head_kind as llama_head_kind
from .text_engine import logits_to_keep_kwargs
from .text_engine import lrp_text as lrp_llama

__all__ = ["lrp_llama", "llama_head_kind", "logits_to_keep_kwargs"]
