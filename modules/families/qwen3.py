"""Qwen3: Llama's map plus q_norm / k_norm (``Qwen3RMSNorm``, RMS constant) between the q/k
projections and RoPE."""
from ._transformers import rotary_family

FAMILY = rotary_family("qwen3", "Qwen3", "qwen3", order=23)
