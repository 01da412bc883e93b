"""OLMoE: OLMo's attention (``q_norm``/``k_norm`` over the whole projection, RMS constant and
elementwise, so the rotary halving at ``q_proj``/``k_proj`` is unchanged; RoPE leaves) with a
sparse mixture of experts (docs/method.md, "Mixture of experts": routing weights constant,
epsilon on their weighted sum, each expert's gated product uniform). transformers has no
sequence-classification head for OLMoE."""
from ._transformers import rotary_family

FAMILY = rotary_family("olmoe", "Olmoe", "olmoe", order=73,
                       tasks={"OlmoeForCausalLM": "causal_lm", "OlmoeModel": "part"},
                       examples="OlmoeForCausalLM (transformers has no classification head)",
                       extra={"OlmoeExperts": "moe_experts"},
                       plain_extra=("SparseMoeBlock", "TopKRouter"))
