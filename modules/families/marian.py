"""Marian (MarianMT): BART's map (docs/method.md, "Encoders, masked LMs and encoder-decoders")
with a fixed sinusoidal position table per stack (``MarianSinusoidalPositionalEmbedding``, not
trained): the table's output is the positional leaf of its stream like a learned table's (the
epsilon rule on ``s E + P``, the constant embedding scale ``s`` included in the token path), so
a fixed encoding gets relevance as much as a learned one."""
from ._transformers import encoder_decoder_family

FAMILY = encoder_decoder_family(
    "marian", "Marian", "marian", order=98, head="MTModel",
    plain_extra=("SinusoidalPositionalEmbedding",))
