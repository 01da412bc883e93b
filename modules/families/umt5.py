"""UMT5: mT5's map, but every self-attention layer owns its relative-position bias (none is
shared): each layer's bias is a positional leaf of its own (``relative_bias_0``,
``relative_bias_1``, ... per stream), read per key position (docs/method.md, "Encoders, masked
LMs and encoder-decoders")."""
from ._transformers import t5_like_family

FAMILY = t5_like_family("umt5", "UMT5", "umt5", order=101)
