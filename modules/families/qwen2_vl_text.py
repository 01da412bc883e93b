"""Qwen2-VL's language model (``Qwen2VLTextModel``), a part of Qwen2-VL: Qwen2's rotary
decoder map with M-RoPE: each layer's cos/sin is split into its temporal, height and width
sections (``mrope_section``), each section a positional leaf of its own (docs/method.md,
"M-RoPE sections"); the position ids are the model's own (``get_rope_index``)."""
from ._qwen_vl import mrope_text

FAMILY = mrope_text("qwen2_vl_text", "Qwen2VL", "qwen2_vl", order=63, mlp="Qwen2MLP")
