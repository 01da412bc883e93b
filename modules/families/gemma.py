"""Gemma (v1): Llama's map with the (1 + w) RMSNorm (RMS constant), a GELU-tanh gate (identity)
and embeddings scaled by sqrt(hidden) inside the embedding module (the token leaf is its
output)."""
from ._transformers import rotary_family

FAMILY = rotary_family("gemma", "Gemma", "gemma", order=30,
                       plain_extra=("TextScaledWordEmbedding",))
