"""CLIP's text tower (transformers ``CLIPTextModel``), as a part of a dual encoder (``CLIPModel``,
the hf_clip_dual family): token embeddings plus a learned position table (an ``nn.Embedding``:
its output is the positional leaf, the epsilon rule on the sum, K = 1), causal pre-norm layers
(LayerNorm std constant), quick-GELU identity, attention AttnLRP's uniform rule on the stock
kernel, the final LayerNorm, and the readout of the end-of-text token (an index: plain)."""
from ._transformers import text_tower_family

FAMILY = text_tower_family("clip_text", "CLIP", "clip", order=132)
