"""DeiT (transformers ``DeiTForImageClassification`` and
``DeiTForImageClassificationWithTeacher``): as ViT, with a class and a distillation token in
front of the patches (prefix 2: the (1, 2 + N, D) table ``embeddings.position_embeddings``
covers both, and as added, resampled or not, it is the positional leaf, K = 1). The classifier
reads the class token; the one with teacher averages the class-token and distillation-token
heads (a linear sum: epsilon)."""
from ._hf_vision import vit_like_family

FAMILY = vit_like_family(
    "hf_deit", "DeiT", "deit", order=13,
    tasks={"DeiTForImageClassification": "image_classifier",
           "DeiTForImageClassificationWithTeacher": "image_classifier", "DeiTModel": "part"},
    plain_extra=("Pooler",),
    examples="transformers DeiTForImageClassification, DeiTForImageClassificationWithTeacher")
