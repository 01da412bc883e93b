"""SmolVLM (transformers ``SmolVLMForConditionalGeneration``): Idefics3's composite under its own
classes (a SigLIP-like vision tower over sub-images, ``smolvlm_vision``, a pixel-shuffle
connector, a Llama-like language model); the rules and the streams are idefics3's."""
from ._idefics import composite

FAMILY = composite("smolvlm", "SmolVLM", "smolvlm", order=155)
