"""Llama 2/3 (and anything loaded as ``LlamaFor*``): RMSNorm (RMS constant), SiLU (identity),
``silu(gate) * up`` (uniform, halved at ``down_proj``'s input), attention on the stock kernel,
RoPE at every layer (llama3 / linear / dynamic / yarn scaling are the stock cos/sin)."""
from ._transformers import rotary_family

FAMILY = rotary_family("llama", "Llama", "llama", order=20)
