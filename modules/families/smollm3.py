"""SmolLM3: Llama's map with NoPE layers: every ``no_rope_layer_interval``-th layer applies no
RoPE (``use_rope`` false). Those layers have no positional leaves and their q/k keep all their
relevance (``rope_gate``); the positional relevance comes from the RoPE layers only."""
from ._transformers import rotary_family

FAMILY = rotary_family("smollm3", "SmolLM3", "smollm3", order=37, rope_gate="use_rope")
