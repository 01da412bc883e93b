"""Qwen3-MoE: Qwen3's attention (``q_norm``/``k_norm`` RMS constant, RoPE leaves) with a sparse
mixture of experts (docs/method.md, "Mixture of experts": routing weights constant, epsilon on
their weighted sum, each expert's gated product uniform); dense layers (``mlp_only_layers``,
``decoder_sparse_step``) are Llama's gated MLP (``down_proj`` input halved)."""
from ._transformers import rotary_family

FAMILY = rotary_family("qwen3_moe", "Qwen3Moe", "qwen3_moe", order=72,
                       extra={"Qwen3MoeExperts": "moe_experts"},
                       plain_extra=("SparseMoeBlock", "TopKRouter"))
