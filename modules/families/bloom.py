"""BLOOM: LayerNorm (std constant; also the one after the word embeddings), BLOOM's GELU
(identity), non-gated MLP (linears epsilon), fused ``query_key_value`` (epsilon). The attention
is computed inline, ``softmax(bias.baddbmm(q, k^T) + mask) V``: the uniform rule on ``Q K^T``
and on ``A V``, the softmax plain, and position enters only as the ALiBi bias added to the
scores: each layer's bias (B*heads, 1, keys) is a positional leaf, its relevance the epsilon
rule on ``scores + bias`` (``bias * grad``), reported per key position (docs/method.md,
section 11). Under AttnLRP the bias is a constant. Position ids are BLOOM's own (from the
attention mask); transformers runs BLOOM's attention eager only."""
from ._decoders import decoder_family

FAMILY = decoder_family(
    "bloom", "Bloom", "bloom", order=75, position="alibi", position_ids="stock",
    modules={"LayerNorm": "layer_norm", "BloomGelu": "identity",
             "BloomAttention": "alibi_attention"},
    parts=("Model", "Block", "MLP"), kernels_checked=("eager",))
