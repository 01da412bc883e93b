"""OLMo 3: OLMo 2's map with sliding-window layers (in the stock mask); every layer applies
RoPE."""
from ._transformers import rotary_family

FAMILY = rotary_family("olmo3", "Olmo3", "olmo3", order=32)
