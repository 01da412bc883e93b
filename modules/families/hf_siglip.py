"""SigLIP image classifier (transformers ``SiglipForImageClassification``): conv patch embedding,
no class token, the learned position table an ``nn.Embedding``
(``vision_model.embeddings.position_embedding``, its output the positional leaf, K = 1, prefix
0), pre-norm layers (LayerNorm std constant), GELU-tanh identity, attention AttnLRP's uniform
rule on the stock kernel, and a head reading the mean of the last hidden state (epsilon).

The vision tower's attention-pool head (``SiglipMultiheadAttentionPoolingHead``, an
``nn.MultiheadAttention`` over a learned probe, present when ``vision_use_head`` is true, the
default) is computed by the stock forward but its output (``pooler_output``) is not read by this
classifier: no relevance passes through it, so its modules keep their stock forward here.
Here ``SiglipVisionModel`` is a plain class of this map (it stays in the classifier's subtree);
as a part of a vision-language model it is the ``siglip_vision`` family, which covers it only
without its pooling head (there the head could carry the relevance, and no rule covers it). With ``interpolate_pos_encoding=True`` at an
input size other than the configured one the table is resampled from its weight outside the
embedding module and no positional leaf is reached (PA-LRP refuses it; AttnLRP runs)."""
from ..family import Family
from ..patching import RuleMap
from ..positional import VISION_PAPER
from ._transformers import ACTIVATIONS, PLAIN, namespaces

_TASKS = {"SiglipForImageClassification": "image_classifier"}
_PLAIN = ("Conv2d", "MultiheadAttention", "NonDynamicallyQuantizableLinear") + tuple(
    "Siglip" + part for part in ("VisionModel", "VisionEmbeddings", "Encoder", "EncoderLayer",
                                 "MLP", "MultiheadAttentionPoolingHead"))

FAMILY = Family(
    name="hf_siglip", library="transformers",
    rules=RuleMap(name="hf_siglip", model_classes=tuple(_TASKS),
                  modules={**ACTIVATIONS, "LayerNorm": "layer_norm",
                           "SiglipAttention": "attention"},
                  plain=PLAIN + _PLAIN,
                  namespaces=(*namespaces("siglip"), "torch.nn.modules.linear")),
    tasks=_TASKS, stream="pixel_values", position="additive",
    position_module="vision_model.embeddings.position_embedding", combination=VISION_PAPER,
    baselines=frozenset(), _order=17, examples="transformers SiglipForImageClassification")
