"""GPT-J: LayerNorm (std constant), GELU-new (identity), non-gated MLP ``fc_in -> act ->
fc_out`` (epsilon), attention and MLP in parallel on one LayerNorm output (plain sums), attention
on the stock kernel (AttnLRP's uniform rule). RoPE on the first ``rotary_dim`` dims of each head
in interleaved pairs (``rotate_every_two``): the attention module receives ``(sin, cos)``, one
entry per pair, repeated over the pair inside it; each layer's cos and sin are positional leaves
(gradients halved), and the gradient of ``q_proj``/``k_proj`` is halved on the rotary dims only
(docs/method.md, sections 3 and 5)."""
from ._decoders import decoder_family

FAMILY = decoder_family(
    "gptj", "GPTJ", "gptj", order=76,
    modules={"LayerNorm": "layer_norm", "GPTJAttention": "attention_sin_cos",
             "GPTJAttention.q_proj": "rotary_qk", "GPTJAttention.k_proj": "rotary_qk"},
    parts=("Model", "Block", "MLP", "RotaryEmbedding"))
