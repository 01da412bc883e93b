"""Qwen2: Llama's map; q/k/v biases are plain (epsilon: the bias absorbs its share)."""
from ._transformers import rotary_family

FAMILY = rotary_family("qwen2", "Qwen2", "qwen2", order=22)
