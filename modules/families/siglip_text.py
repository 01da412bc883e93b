"""SigLIP's text tower (transformers ``SiglipTextModel``), as a part of the dual encoder
``SiglipModel`` (hf_siglip_dual): token embeddings plus a learned position table (an
``nn.Embedding``, its output the positional leaf, K = 1), bidirectional pre-norm layers (LayerNorm
std constant), GELU-tanh identity, attention AttnLRP's uniform rule on the stock kernel, the final
LayerNorm, the readout of the last position and the linear head (plain). It reads the last
position, so a padded batch is padded on the left (the engine passes the positions a sample
has alone, and its padding is masked)."""
from ._transformers import text_tower_family

FAMILY = text_tower_family("siglip_text", "Siglip", "siglip", order=135)
