"""SigLIP image classifier (transformers ``SiglipForImageClassification``): a composite whose one
part is its ``vision_model``, a ``SiglipVisionModel`` explained by the siglip_vision family (no
class token, the ``position_embedding`` output as the positional leaf, AttnLRP rules); the glue is
the mean of the last hidden state and the linear head (epsilon).

The tower's attention-pool head (``vision_use_head``, the default) is computed by the stock
forward, but this classifier reads the mean of the last hidden state, not its output: no
relevance passes through it (checked: removing it changes no number). With
``interpolate_pos_encoding=True`` at another input size the resampled table, as added, is the
positional leaf (siglip_vision)."""
from ..family import Family
from ..patching import RuleMap
from ._transformers import PLAIN, namespaces

_TASKS = {"SiglipForImageClassification": "image_classifier"}

FAMILY = Family(
    name="hf_siglip", library="transformers",
    rules=RuleMap(name="hf_siglip", model_classes=tuple(_TASKS), plain=PLAIN,
                  namespaces=namespaces("siglip")),
    tasks=_TASKS, stream=None, baselines=frozenset(), _order=17,
    examples="transformers SiglipForImageClassification (its SiglipVisionModel as siglip_vision)")
