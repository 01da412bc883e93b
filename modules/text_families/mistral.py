"""Mistral: Llama's map (the sliding window lives in the stock mask)."""
from . import rotary_family

FAMILY = rotary_family("Mistral", "Mistral")
