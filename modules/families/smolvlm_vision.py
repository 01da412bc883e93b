"""SmolVLM's vision tower (``SmolVLMVisionTransformer``), a part of SmolVLM: SigLIP's encoder over every real
sub-image, its learned position table (an ``nn.Embedding`` looked up at bucketed fractional
patch coordinates) the positional leaf, as added (docs of ``_idefics.vision_tower``)."""
from ._idefics import vision_tower

FAMILY = vision_tower("smolvlm_vision", "SmolVLM", "smolvlm", order=156)
