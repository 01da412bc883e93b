"""Qwen2-VL (transformers ``Qwen2VLForConditionalGeneration``): a composite of the packed vision
tower (``qwen2_vl_vision``) and the M-RoPE language model (``qwen2_vl_text``), explained in
one patch and one backward. The next token is explained over the image patches
(``pixel_values``: packed patch rows laid back on the image grid, the tower's 2-D RoPE per
section) and the text tokens (``input_ids``: token embeddings, the language model's M-RoPE per
section, which also places the image tokens on the merged grid). Image placeholders carry no
token relevance (their embeddings are replaced by the merged image features)."""
from ._qwen_vl import composite

FAMILY = composite("qwen2_vl", "Qwen2VL", "qwen2_vl", order=61,
                   examples="Qwen2VLForConditionalGeneration")
