"""MBART: BART's map (docs/method.md, "Encoders, masked LMs and encoder-decoders") with pre-
LayerNorm layers and a final LayerNorm per stack (std constant): learned position tables with
BART's offset of 2 in each stack, their outputs the positional leaves of the encoder's and the
decoder's streams."""
from ._transformers import encoder_decoder_family

FAMILY = encoder_decoder_family(
    "mbart", "MBart", "mbart", order=97,
    plain_extra=("LearnedPositionalEmbedding", "ScaledWordEmbedding"))
