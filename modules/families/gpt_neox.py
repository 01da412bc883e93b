"""GPT-NeoX / Pythia: LayerNorm (std constant), GELU (identity), non-gated MLP
``dense_h_to_4h -> act -> dense_4h_to_h`` (linears epsilon: no product to halve), parallel
residual ``x + attn(ln1(x)) + mlp(ln2(x))`` (plain sums: epsilon), attention on the stock kernel
(AttnLRP's uniform rule). RoPE on the first ``rotary_pct`` of each head's dims (partial rotary):
each layer's cos/sin are positional leaves; the fused ``query_key_value`` is laid out per head
``[q_h, k_h, v_h]``, its gradient halved on the rotary dims of each q and k slice only
(docs/method.md, sections 3 and 5)."""
from ._decoders import decoder_family

FAMILY = decoder_family(
    "gpt_neox", "GPTNeoX", "gpt_neox", order=74,
    modules={"LayerNorm": "layer_norm", "GPTNeoXAttention": "attention",
             "GPTNeoXAttention.query_key_value": "rotary_qkv_per_head"},
    parts=("Model", "Layer", "MLP", "RotaryEmbedding"))
