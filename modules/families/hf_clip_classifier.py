"""CLIP image classifier (transformers ``CLIPForImageClassification``): a composite whose one
part is its ``vision_model``, a ``CLIPVisionModel`` explained by the clip_vision family (class
token, the ``position_embedding`` output as the positional leaf, AttnLRP rules); the glue is the
mean over the patch tokens of the last hidden state and the linear head (epsilon)."""
from ..family import Family
from ..patching import RuleMap
from ._transformers import PLAIN, namespaces

_TASKS = {"CLIPForImageClassification": "image_classifier"}

FAMILY = Family(
    name="hf_clip_classifier", library="transformers",
    rules=RuleMap(name="hf_clip_classifier", model_classes=tuple(_TASKS), plain=PLAIN,
                  namespaces=namespaces("clip")),
    tasks=_TASKS, stream=None, baselines=frozenset(), _order=16,
    examples="transformers CLIPForImageClassification (its CLIPVisionModel as clip_vision)")
