"""Mixtral: Llama's attention (RMSNorm RMS constant, RoPE leaves, q/k rotary dims halved) with a
sparse mixture of experts in place of the MLP (docs/method.md, "Mixture of experts"): the
router's softmax and top-k are constants of the backward (routing weights detached), the
weighted sum of the experts' outputs is the epsilon rule, each expert's gated product
``silu(gate) * up`` the uniform rule (the gradient halved at the experts' input), SiLU the
identity rule. The experts run on the implementation the model was loaded with (eager loop,
``batched_mm``, ``grouped_mm``)."""
from ._transformers import rotary_family

FAMILY = rotary_family("mixtral", "Mixtral", "mixtral", order=70, mlp=False,
                       extra={"MixtralExperts": "moe_experts"},
                       plain_extra=("SparseMoeBlock", "TopKRouter"))
