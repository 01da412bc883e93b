"""Qwen2.5-VL's language model (``Qwen2_5_VLTextModel``), a part of Qwen2.5-VL: the M-RoPE
decoder of ``qwen2_vl_text`` (temporal, height, width sections, each a positional leaf per
layer; docs/method.md, "M-RoPE sections")."""
from ._qwen_vl import mrope_text

FAMILY = mrope_text("qwen2_5_vl_text", "Qwen2_5_VL", "qwen2_5_vl", order=66, mlp="Qwen2MLP")
