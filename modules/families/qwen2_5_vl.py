"""Qwen2.5-VL (transformers ``Qwen2_5_VLForConditionalGeneration``): Qwen2-VL's composite
(docs of ``qwen2_vl``) with the Qwen2.5 vision tower (``qwen2_5_vl_vision``: window attention,
RMSNorm, gated MLP) and the same M-RoPE language model (``qwen2_5_vl_text``)."""
from ._qwen_vl import composite

FAMILY = composite("qwen2_5_vl", "Qwen2_5_VL", "qwen2_5_vl", order=64,
                   examples="Qwen2_5_VLForConditionalGeneration")
