"""GLM: Llama's map with partial rotary (``partial_rotary_factor``): only the first rotary dims of
each q/k head are rotated (interleaved pairs) and halved; the pass-through dims keep their
relevance. The fused ``gate_up_proj`` feeds ``down_proj`` (the gated product, halved there)."""
from ._transformers import rotary_family

FAMILY = rotary_family("glm", "Glm", "glm", order=35)
