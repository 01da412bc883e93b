"""CLIP's vision tower (transformers ``CLIPVisionModel``), as a part of a vision-language model
(LLaVA): conv patch embedding and linears plain (epsilon), pre-norm LayerNorms (std constant),
quick-GELU (identity), attention on the stock kernel with AttnLRP's uniform rule, the class
token first, and the learned position table added after the concat (the epsilon rule on the
sum: the ``position_embedding`` output is the positional leaf, K = 1, prefix = the class
token). With ``interpolate_pos_encoding=True`` at another size the table is resampled from its
weight by the embeddings' ``interpolate_pos_encoding``; the table it returns, as added, is the
leaf instead."""
from ..family import Family
from ..patching import RuleMap
from ..positional import VISION_PAPER
from ._transformers import ACTIVATIONS, PLAIN, namespaces

_TASKS = {"CLIPVisionModel": "part"}

FAMILY = Family(
    name="clip_vision", library="transformers",
    rules=RuleMap(name="clip_vision", model_classes=tuple(_TASKS),
                  modules={**ACTIVATIONS, "LayerNorm": "layer_norm", "CLIPAttention": "attention"},
                  plain=PLAIN + ("Conv2d", "CLIPVisionEmbeddings", "CLIPEncoder",
                                 "CLIPEncoderLayer", "CLIPMLP"),
                  namespaces=namespaces("clip")),
    tasks=_TASKS, stream="pixel_values", position="additive",
    position_module="embeddings.position_embedding", combination=VISION_PAPER,
    baselines=frozenset(), _order=40, examples="CLIPVisionModel (a vision tower)")
