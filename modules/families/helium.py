"""Helium: Llama's map (RMSNorm, SiLU-gated MLP, RoPE at every layer)."""
from ._transformers import rotary_family

FAMILY = rotary_family("helium", "Helium", "helium", order=33)
