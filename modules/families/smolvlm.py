"""SmolVLM (transformers ``SmolVLMForConditionalGeneration``): a composite of its SigLIP-like vision
tower over sub-images (``smolvlm_vision``) and its language model (Llama for SmolLM, or any
registered family), in one patch and one backward. The processor splits an image into a grid of
crops plus a downscaled whole image: ``pixel_values`` (B, N, C, H, W), padded with all-zero
sub-images (``Family.pixel_layout = "tiles"``); the tower encodes the real ones, the connector
pixel-shuffles each sub-image's patches into fewer tokens (a reshape, plain) and projects them
(a linear, plain). The next token is explained over the sub-images' pixels (reported side by
side, with the tower's learned table per patch) and the tokens (embeddings, the LM's RoPE placing
the image tokens); image placeholders carry no token relevance."""
from ._idefics import composite

FAMILY = composite("smolvlm", "SmolVLM", "smolvlm", order=155)
