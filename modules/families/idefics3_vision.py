"""Idefics3's vision tower (``Idefics3VisionTransformer``), a part of Idefics3: SigLIP's encoder over every real
sub-image, its learned position table (an ``nn.Embedding`` looked up at bucketed fractional
patch coordinates) the positional leaf, as added (docs of ``_idefics.vision_tower``)."""
from ._idefics import vision_tower

FAMILY = vision_tower("idefics3_vision", "Idefics3", "idefics3", order=154)
