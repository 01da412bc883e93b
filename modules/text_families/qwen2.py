"""Qwen2: Llama's map; q/k/v biases are plain (epsilon: the bias absorbs its share)."""
from . import rotary_family

FAMILY = rotary_family("Qwen2", "Qwen2")
