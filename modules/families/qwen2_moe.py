"""Qwen2-MoE: Qwen2's attention (q/k/v biases plain, RoPE leaves) with a sparse mixture of
experts (docs/method.md, "Mixture of experts": routing weights constant, epsilon on their
weighted sum, each expert's gated product uniform) plus a shared expert, a gated MLP
(``down_proj`` input halved), scaled by ``sigmoid(shared_expert_gate(x))``: that gate is a
constant of the backward like the routing weights (its output detached), so the scaled shared
expert is the epsilon rule. Dense layers (``mlp_only_layers``, ``decoder_sparse_step``) are
Llama's gated MLP."""
from ._transformers import rotary_family

FAMILY = rotary_family("qwen2_moe", "Qwen2Moe", "qwen2_moe", order=71,
                       extra={"Qwen2MoeExperts": "moe_experts",
                              "Qwen2MoeSparseMoeBlock.shared_expert_gate": "constant_output"},
                       plain_extra=("SparseMoeBlock", "TopKRouter"))
