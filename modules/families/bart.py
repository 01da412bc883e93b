"""BART: an encoder-decoder explained as two parts of one family (docs/method.md, "Encoders,
masked LMs and encoder-decoders"): the next decoder token over the encoder's ``input_ids`` and
the decoder prefix ``decoder_input_ids``. Post-LayerNorms (and ``layernorm_embedding``) std
constant, GELU identity, attention (self, causal self, cross) on the stock kernel wrapper
(uniform on ``QK^T`` and ``AV``). Each stack adds its own learned position table
(``BartLearnedPositionalEmbedding``, looked up at ``position + 2``, the offset BART keeps) to
its scaled token embeddings: the epsilon rule on ``E + P``, the table's output the positional
leaf of the stack's stream (K = 1 per stream). Positions are the stock ``0..S-1``, so batches
are padded on the right."""
from ._transformers import encoder_decoder_family

FAMILY = encoder_decoder_family(
    "bart", "Bart", "bart", order=96,
    plain_extra=("LearnedPositionalEmbedding", "ScaledWordEmbedding"))
