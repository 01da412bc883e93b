"""Falcon (transformers ``FalconFor{CausalLM,SequenceClassification}``): LayerNorm (std
constant), GELU (identity), non-gated MLP of ``FalconLinear`` layers (epsilon), attention and MLP
in parallel where the config says so (plain sums). The attention is computed inline, eagerly or
by SDPA: the uniform rule on ``Q K^T`` and ``A V`` (q, k and the output halved where the stock
code multiplies them), the softmax plain. Position enters either by RoPE (``alibi=False``:
each layer's cos/sin leaves; the fused ``query_key_value``, laid out per kv group for the new
decoder architecture, ``[q..., k, v]`` for multi-query, per head otherwise, halved on the rotary
dims of its q and k slices) or by ALiBi (``alibi=True``: one leaf per layer for the bias, which
the stock code adds twice in its eager kernel, to the scores and inside the mask, and once in
SDPA, inside the mask; each kernel keeps its own stock output, so the two kernels give different
models and different explanations; docs/method.md, section 11). Flash attention is refused
(its class has no rule)."""
from ._decoders import decoder_family

FAMILY = decoder_family(
    "falcon", "Falcon", "falcon", order=80,
    modules={"LayerNorm": "layer_norm", "FalconAttention": "falcon_attention",
             "FalconAttention.query_key_value": "falcon_qkv"},
    parts=("Model", "DecoderLayer", "MLP", "RotaryEmbedding", "Linear"),
    kernels_checked=("sdpa",),
    notes="eager and sdpa each equal their own stock output; rotary configs: eager == sdpa "
          "in tests/test_decoder_families.py (ALiBi configs differ in the stock model)")
