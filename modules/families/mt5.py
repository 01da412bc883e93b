"""mT5: T5 v1.1's map on its own classes (``MT5*``; docs/method.md, "Encoders, masked LMs and
encoder-decoders"): RMS constant, gated GELU halved at ``wo``, attention on the stock kernel
wrapper, each stack's first-layer relative-position bias the positional leaf of its stream
(``input_ids``, ``decoder_input_ids``), read per key position."""
from ._transformers import t5_like_family

FAMILY = t5_like_family("mt5", "MT5", "mt5", order=94)
