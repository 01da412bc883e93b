"""MPT: LayerNorm without bias (std constant), GELU (identity), non-gated MLP ``up_proj -> act ->
down_proj`` (epsilon), fused ``Wqkv`` (epsilon). The attention is computed inline (eager):
the uniform rule on ``Q K^T`` and ``A V``, the softmax plain; position enters only as the ALiBi
bias added to the scores, ``m_h (j - (S - 1))`` for key j, the same values for a left-padded
sample as alone: each layer's bias is a positional leaf, its relevance the epsilon rule on
``scores + bias``, reported per key (docs/method.md, section 11). ``clip_qkv`` is refused. Position
ids are not an input of MPT (``position_ids="stock"``)."""
from ._decoders import decoder_family

FAMILY = decoder_family(
    "mpt", "Mpt", "mpt", order=81, position="alibi", position_ids="stock",
    modules={"LayerNorm": "layer_norm", "MptAttention": "mpt_attention"},
    parts=("Model", "Block", "MLP"), kernels_checked=("eager",))
