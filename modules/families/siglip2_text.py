"""SigLIP 2's text tower (transformers ``Siglip2TextModel``), as a part of the dual encoder
``Siglip2Model`` (hf_siglip2_dual): as siglip_text (token embeddings plus a learned position
table, an ``nn.Embedding`` whose output is the positional leaf, K = 1; bidirectional pre-norm
layers, LayerNorm std constant, GELU-tanh identity, attention AttnLRP's uniform rule on the stock
kernel; the last position read, its linear head plain; padding on the left)."""
from ._transformers import text_tower_family

FAMILY = text_tower_family("siglip2_text", "Siglip2", "siglip2", order=140)
