"""CLIP as a dual encoder (transformers ``CLIPModel``): the image-text score
``logits_per_image[i, j] = scale * cos(u_i, v_j)`` explained over the image's patches and the
text's tokens together. A composite: its ``vision_model`` (``CLIPVisionModel``) is the
clip_vision part (stream ``pixel_values``: pixels and the vision position table), its
``text_model`` (``CLIPTextModel``) the clip_text part (stream ``input_ids``: token embeddings and
the text position table). The glue (:mod:`palrp.modules.adapters.dual_encoder`): both
projections and the scale plain, each embedding's norm a constant, the product of the two
normalised embeddings uniform (half of the score to the image, half to the text).

Target: the outputs of image i are its scores against the batch's texts, so ``target`` is a text
index (default: the best-matching text, zero-shot classification). The text stream's row j
holds text j's relevance for the images that explain it, summed: give each image its own text
(``target=range(B)`` with one text per image) or one image per call to keep them apart."""
from ..family import Family
from ..patching import RuleMap
from ._transformers import PLAIN, namespaces

_TASKS = {"CLIPModel": "image_text"}

FAMILY = Family(
    name="hf_clip_dual", library="transformers",
    rules=RuleMap(name="hf_clip_dual", model_classes=tuple(_TASKS), plain=PLAIN,
                  namespaces=namespaces("clip")),
    tasks=_TASKS, stream=None, baselines=frozenset(), _order=133,
    examples="transformers CLIPModel (image-text score over patches and tokens)")
