"""Mistral: Llama's map (the sliding window lives in the stock mask)."""
from ._transformers import rotary_family

FAMILY = rotary_family("mistral", "Mistral", "mistral", order=21)
