"""StarCoder2: LayerNorm with bias (std constant), GELU-tanh (identity), non-gated MLP
``c_fc -> act -> c_proj`` with biases (epsilon: no product to halve), q/k/v/o with biases
(plain), attention on the stock kernel (AttnLRP's uniform rule), sliding window in the stock
mask, RoPE at every layer: cos/sin leaves, q/k rotary dims halved (docs/method.md, sections 3
and 5)."""
from ._decoders import decoder_family

FAMILY = decoder_family(
    "starcoder2", "Starcoder2", "starcoder2", order=78,
    modules={"LayerNorm": "layer_norm", "Starcoder2Attention": "attention",
             "Starcoder2Attention.q_proj": "rotary_qk", "Starcoder2Attention.k_proj": "rotary_qk"},
    parts=("Model", "DecoderLayer", "MLP", "RotaryEmbedding"))
