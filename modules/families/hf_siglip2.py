"""SigLIP 2 image classifier (transformers ``Siglip2ForImageClassification``): a composite whose
one part is its ``vision_model``, a ``Siglip2VisionModel`` explained by the siglip2_vision family
(NaFlex patch sequences, the per-image resized table as the positional leaf); the glue is the
mean of the last hidden state over the real patches (``pixel_attention_mask``; a masked sum and
a division by the count: plain) and the linear head (epsilon). The tower's attention-pool head
runs but its output is not read: it carries nothing here. Inputs: what the image processor
returns, ``{"pixel_values", "pixel_attention_mask", "spatial_shapes"}``."""
from ..family import Family
from ..patching import RuleMap
from ._transformers import PLAIN, namespaces

_TASKS = {"Siglip2ForImageClassification": "image_classifier"}

FAMILY = Family(
    name="hf_siglip2", library="transformers",
    rules=RuleMap(name="hf_siglip2", model_classes=tuple(_TASKS), plain=PLAIN,
                  namespaces=namespaces("siglip2")),
    tasks=_TASKS, stream=None, baselines=frozenset(), _order=139,
    examples="transformers Siglip2ForImageClassification (NaFlex patch sequences)")
