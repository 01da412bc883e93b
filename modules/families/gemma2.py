"""Gemma 2: (1 + w) RMSNorm (RMS constant) before and after attention and MLP, GELU-tanh gate
(identity), embeddings scaled by sqrt(hidden) (a constant: plain), alternating sliding-window
layers (stock mask). The attention and final-logit soft-capping ``cap * tanh(x / cap)`` get the
identity rule (``identity_functions``). The soft-capped attention runs on the stock eager
kernel (transformers has no SDPA path for it; on flash kernels the capping would be out of
reach)."""
from ._transformers import rotary_family

FAMILY = rotary_family("gemma2", "Gemma2", "gemma2", order=24, identity_functions=("tanh",),
                       plain_extra=("TextScaledWordEmbedding",),
                       kernels_checked=("eager",))
