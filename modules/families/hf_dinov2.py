"""DINOv2 (transformers ``Dinov2ForImageClassification``): the class token, the learned
(1, 1 + N, D) table ``embeddings.position_embeddings`` which the embeddings always pass through
``interpolate_pos_encoding`` (the table itself at the configured square size, bicubically
resampled to the input's grid otherwise): what it returns, as added, is the positional leaf
(K = 1, prefix = the class token). LayerScale plain; the MLP is GELU (identity) or SwiGLU (the
gate product uniform: ``down_proj``'s input gradient halved, SiLU identity). The head reads
``[class token, mean of the patch tokens]`` (concat and mean: epsilon)."""
from ._hf_vision import vit_like_family

FAMILY = vit_like_family(
    "hf_dinov2", "Dinov2", "dinov2", order=14,
    tasks={"Dinov2ForImageClassification": "image_classifier", "Dinov2Model": "part"},
    extra={"Dinov2SwiGLUFFN.down_proj": "halve_input"},
    plain_extra=("Encoder", "LayerScale", "DropPath", "SwiGLUFFN"),
    examples="transformers Dinov2ForImageClassification (any input size)")
