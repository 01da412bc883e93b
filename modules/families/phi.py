"""Phi (Phi-1, Phi-1.5, Phi-2): LayerNorm (std constant), GELU-new (identity), non-gated MLP
``fc1 -> act -> fc2`` (epsilon), attention and MLP in parallel on one LayerNorm output (plain
sums), attention on the stock kernel (AttnLRP's uniform rule). RoPE on the first
``partial_rotary_factor`` of each head's dims: each layer's cos/sin are positional leaves, the
q/k projections' gradients halved on the rotary dims only (docs/method.md, sections 3 and 5).
With ``qk_layernorm`` a LayerNorm over each head sits between the projection and the rotation,
where the halving would have to follow the norm: such models are refused."""
from ._decoders import decoder_family

FAMILY = decoder_family(
    "phi", "Phi", "phi", order=77,
    modules={"LayerNorm": "layer_norm", "PhiAttention": "attention",
             "PhiAttention.q_proj": "rotary_qk", "PhiAttention.k_proj": "rotary_qk",
             "PhiAttention.q_layernorm": "unsupported", "PhiAttention.k_layernorm": "unsupported"},
    parts=("Model", "DecoderLayer", "MLP", "RotaryEmbedding"))
