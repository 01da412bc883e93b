"""OLMo 2: Llama's map with the norms after attention and MLP (post-norm residual branches,
RMS constant) and q_norm / k_norm over the whole q / k projection (RMS constant: the identity
rule is elementwise, so the halving of the rotary dims at the projections is unchanged)."""
from ._transformers import rotary_family

FAMILY = rotary_family("olmo2", "Olmo2", "olmo2", order=31)
