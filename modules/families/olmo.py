"""OLMo (v1): Llama's map with LayerNorms that have no weight and no bias (``OlmoLayerNorm``:
the standard deviation a constant, docs/method.md M6, around the stock module's own value), the
SiLU-gated MLP (``down_proj`` input halved), RoPE at every layer (cos/sin leaves, q/k rotary dims
halved). ``clip_qkv`` clamps q, k and v in place after the projections; such models are refused
(no rule is defined for the clamp)."""
from ._decoders import decoder_family

FAMILY = decoder_family(
    "olmo", "Olmo", "olmo", order=79,
    modules={"OlmoLayerNorm": "layer_norm_no_affine", "OlmoAttention": "attention_no_clip",
             "OlmoAttention.q_proj": "rotary_qk", "OlmoAttention.k_proj": "rotary_qk",
             "OlmoMLP.down_proj": "halve_input"},
    parts=("Model", "DecoderLayer", "MLP", "RotaryEmbedding"))
