"""SigLIP as a dual encoder (transformers ``SiglipModel``): the image-text score
``logits_per_image[i, j] = scale * cos(u_i, v_j) + bias`` explained over the image's patches
and the text's tokens together, as hf_clip_dual does for CLIP (docs/method.md, "Image-text
scores"). Parts: ``vision_model`` (``SiglipVisionModel``, siglip_vision: the attention-pool head's
output is ``u``) and ``text_model`` (``SiglipTextModel``, siglip_text). Glue
(:mod:`palrp.modules.adapters.dual_encoder`): norms constant, the product of the normalised
embeddings uniform, the scale and the bias plain (the bias keeps its share of the score, as a
linear layer's bias does). Target: a text index (default: the best-matching text)."""
from ..family import Family
from ..patching import RuleMap
from ._transformers import PLAIN, namespaces

_TASKS = {"SiglipModel": "image_text"}

FAMILY = Family(
    name="hf_siglip_dual", library="transformers",
    rules=RuleMap(name="hf_siglip_dual", model_classes=tuple(_TASKS), plain=PLAIN,
                  namespaces=namespaces("siglip")),
    tasks=_TASKS, stream=None, baselines=frozenset(), _order=136,
    examples="transformers SiglipModel (image-text score over patches and tokens)")
