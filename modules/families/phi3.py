"""Phi-3: fused ``qkv_proj`` (only its q and k rotary dims are halved for RoPE) and fused
``gate_up_proj`` (the gated product ``up * act(gate)`` feeds ``down_proj``, halved there);
partial rotary (``partial_rotary_factor``) leaves the pass-through dims alone."""
from ._transformers import rotary_family

FAMILY = rotary_family("phi3", "Phi3", "phi3", order=26, fused=True)
