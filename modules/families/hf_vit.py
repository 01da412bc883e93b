"""ViT (transformers ``ViTForImageClassification``): conv patch embedding, the class token, the
learned (1, 1 + N, D) table ``embeddings.position_embeddings`` added after the concat (resampled
to the input's grid by ``interpolate_pos_encoding`` when the model is called with
``interpolate_pos_encoding=True``): the table as added is the positional leaf (K = 1, prefix =
the class token). Pre-norm layers (LayerNorm std constant), GELU identity, attention AttnLRP's
uniform rule on the stock kernel, the class-token readout and the linear head plain."""
from ._hf_vision import vit_like_family

FAMILY = vit_like_family(
    "hf_vit", "ViT", "vit", order=12,
    tasks={"ViTForImageClassification": "image_classifier", "ViTModel": "part"},
    plain_extra=("Pooler",),
    examples="transformers ViTForImageClassification")
