"""Qwen3: Llama's map plus q_norm / k_norm (``Qwen3RMSNorm``, RMS constant) between the q/k
projections and RoPE."""
from . import rotary_family

FAMILY = rotary_family("Qwen3", "Qwen3")
