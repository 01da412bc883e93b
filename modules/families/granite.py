"""Granite: Llama's map; its embedding, residual and attention multipliers and the logits scaling
are constant scales (plain: the epsilon rule)."""
from ._transformers import rotary_family

FAMILY = rotary_family("granite", "Granite", "granite", order=36,
                       tasks={"GraniteForCausalLM": "causal_lm", "GraniteModel": "part"})
