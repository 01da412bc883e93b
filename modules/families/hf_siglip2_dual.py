"""SigLIP 2 as a dual encoder (transformers ``Siglip2Model``): the image-text score explained
over the image's patches (NaFlex patch sequences, the siglip2_vision part: its attention-pool
head's output is the image feature) and the text's tokens (the siglip2_text part) together,
with the dual-encoder glue of hf_clip_dual / hf_siglip_dual (norms constant, the product of the
normalised embeddings uniform, scale and bias plain; docs/method.md, "Image-text scores").
Inputs: the processor's ``pixel_values``, ``pixel_attention_mask``, ``spatial_shapes`` and
``input_ids``; target: a text index."""
from ..family import Family
from ..patching import RuleMap
from ._transformers import PLAIN, namespaces

_TASKS = {"Siglip2Model": "image_text"}

FAMILY = Family(
    name="hf_siglip2_dual", library="transformers",
    rules=RuleMap(name="hf_siglip2_dual", model_classes=tuple(_TASKS), plain=PLAIN,
                  namespaces=namespaces("siglip2")),
    tasks=_TASKS, stream=None, baselines=frozenset(), _order=141,
    examples="transformers Siglip2Model (image-text score over patches and tokens)")
